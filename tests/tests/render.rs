//! Rendering real instrument audio by prompt: `djinn render` with no daemon and
//! `render.file` over ZeroMQ, on fluidsynth recordings of a small band.

use std::path::Path;
use std::process::Command;

use djinn_engine::analysis::loudness;
use djinn_engine::chain::Balance;
use djinn_tests::{Djinnd, Options, band_midi, bin, fluidsynth, kit_bar, write_midi};
use serde_json::{Value, json};

fn band(dir: &Path) -> std::path::PathBuf {
    let (mid, wav) = (dir.join("band.mid"), dir.join("band.wav"));
    band_midi(&mid, 100.0, 9, false, 8, 0);
    fluidsynth(&mid, &wav);
    wav
}

fn djinn_render(input: &Path, output: &Path, prompt: &str) -> Value {
    let out = Command::new(bin("djinn"))
        .arg("--json")
        .arg("render")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--prompt", prompt])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "djinn render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A kit alone, eight bars: sparse hits with quiet between them, far peakier than the band.
fn drums(dir: &Path) -> std::path::PathBuf {
    let (mid, wav) = (dir.join("drums.mid"), dir.join("drums.wav"));
    let mut notes = Vec::new();
    for bar in 0..8 {
        kit_bar(&mut notes, f64::from(bar) * 4.0);
    }
    write_midi(&mid, 120.0, &notes);
    fluidsynth(&mid, &wav);
    wav
}

#[test]
fn loud_clean_modern_mix_meets_its_loudness_target_under_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let (band, drums) = (band(dir.path()), drums(dir.path()));
    for (input, out) in [
        (&band, "loud.wav"),
        (&band, "loud.flac"),
        (&drums, "drums-loud.wav"),
    ] {
        let output = dir.path().join(out);
        let report = djinn_render(input, &output, "loud clean modern mix");
        let target = report["chain"]["target_lufs"].as_f64().unwrap();
        let ceiling = report["chain"]["ceiling_dbtp"].as_f64().unwrap();
        assert_eq!(report["chain"]["drive"], json!(0.0), "clean means no drive");
        let original = djinn_engine::decode::read(input).unwrap();
        let rendered = djinn_engine::decode::read(&output).unwrap();
        assert_eq!(rendered.sample_rate, original.sample_rate);
        assert_eq!(rendered.frames.len(), original.frames.len());
        let measured = loudness::measure(&rendered.frames, rendered.sample_rate).unwrap();
        assert!(
            (measured.integrated_lufs - target).abs() <= 1.0,
            "{out}: {} LUFS against {target}",
            measured.integrated_lufs
        );
        assert!(
            measured.true_peak_dbtp <= ceiling,
            "{out}: true peak {} over {ceiling}",
            measured.true_peak_dbtp
        );
        let before = loudness::measure(&original.frames, original.sample_rate).unwrap();
        assert!(
            measured.integrated_lufs > before.integrated_lufs + 3.0,
            "{out}: {} LUFS from {}",
            measured.integrated_lufs,
            before.integrated_lufs
        );
    }
}

#[test]
fn tight_low_end_brighter_top_end_moves_the_balance_by_4_db() {
    let dir = tempfile::tempdir().unwrap();
    let input = band(dir.path());
    let output = dir.path().join("bright.wav");
    let report = djinn_render(&input, &output, "tight low end, brighter top end");
    assert_eq!(report["words"], json!(["tight", "brighter"]));
    let before = djinn_engine::decode::read(&input).unwrap();
    let after = djinn_engine::decode::read(&output).unwrap();
    let b = Balance::of(&before.frames, before.sample_rate);
    let a = Balance::of(&after.frames, after.sample_rate);
    // The stated amount: energy above 2 kHz against energy below 250 Hz rises by 4 dB or more,
    // the low bands lose share and the high ones gain it.
    assert!(
        a.high_low_db - b.high_low_db >= 4.0,
        "high/low moved {:.2} dB",
        a.high_low_db - b.high_low_db
    );
    assert!(a.bands.sub + a.bands.low < b.bands.sub + b.bands.low);
    assert!(a.bands.high + a.bands.air > b.bands.high + b.bands.air);
    let reported = report["change"]["high_low_db"].as_f64().unwrap();
    assert!((reported - (a.high_low_db - b.high_low_db)).abs() < 0.5);
    // With no loudness word the input's loudness is kept.
    assert!(report["change"]["loudness_lu"].as_f64().unwrap().abs() < 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_file_over_zeromq_writes_flac_to_the_files_area() {
    let dir = tempfile::tempdir().unwrap();
    let input = band(dir.path());
    let djinnd = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        ..Options::default()
    });
    let mut client = djinnd.client();
    let report = client
        .call(
            "render.file",
            json!({ "path": input, "prompt": "warm glued master, -14 lufs", "name": "band.flac" }),
        )
        .await
        .unwrap();
    let file = report["file"].as_str().unwrap();
    assert!(file.ends_with("files/band.flac"), "{file}");
    let rendered = djinn_engine::decode::read(Path::new(file)).unwrap();
    let measured = loudness::measure(&rendered.frames, rendered.sample_rate).unwrap();
    assert!(
        (measured.integrated_lufs + 14.0).abs() <= 1.0,
        "{measured:?}"
    );
    assert!(report["chain"]["compress"].as_f64().unwrap() >= 0.5);
    let err = client
        .call(
            "render.file",
            json!({ "path": input, "prompt": "x", "backend": "kazoo" }),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("backend"), "{err}");
    let err = client
        .call(
            "render.file",
            json!({ "path": input, "prompt": "x", "hints": { "drive": 7 } }),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("drive"), "{err}");
}

#[test]
fn render_reads_every_format_and_writes_at_the_input_rate() {
    let dir = tempfile::tempdir().unwrap();
    let input = band(dir.path());
    for (name, args) in [
        ("in16.wav", &["-ar", "44100", "-c:a", "pcm_s16le"][..]),
        ("in24.wav", &["-c:a", "pcm_s24le"][..]),
        ("in.flac", &["-ar", "96000"][..]),
        ("in.ogg", &["-ar", "44100", "-c:a", "libvorbis"][..]),
        ("in.mp3", &["-ar", "32000", "-c:a", "libmp3lame"][..]),
    ] {
        let converted = dir.path().join(name);
        djinn_tests::ffmpeg_convert(&input, &converted, args);
        let output = dir.path().join(format!("{name}.out.flac"));
        let report = djinn_render(&converted, &output, "streaming");
        let original = djinn_engine::decode::read(&converted).unwrap();
        let rendered = djinn_engine::decode::read(&output).unwrap();
        assert_eq!(rendered.sample_rate, original.sample_rate, "{name}");
        assert_eq!(report["sample_rate"], original.sample_rate, "{name}");
        assert_eq!(rendered.frames.len(), original.frames.len(), "{name}");
        let measured = loudness::measure(&rendered.frames, rendered.sample_rate).unwrap();
        assert!(
            (measured.integrated_lufs + 14.0).abs() <= 1.0,
            "{name}: {measured:?}"
        );
    }
}
