//! Fitting real instrument audio to a tempo and key: `djinn stretch` against rubberband-cli
//! on the same fluidsynth recording, and `layer.add` fitting a loop to the session.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use djinn_engine::music::Meter;
use djinn_engine::wav::LoopInfo;
use djinn_tests::{Djinnd, Note, Options, bin, fluidsynth, write_midi};
use serde_json::{Value, json};

/// `beats` notes of `key` on `channel` (9: drums) with `program`, one a beat, each held
/// for `hold` of a beat.
fn pulse(path: &Path, bpm: f64, beats: u32, channel: u8, program: u8, key: u8, hold: f64) {
    let notes: Vec<Note> = (0..beats)
        .map(|beat| Note {
            channel,
            program,
            key,
            beat: f64::from(beat),
            beats: hold,
        })
        .collect();
    write_midi(path, bpm, &notes);
}

fn read(path: &Path) -> Vec<[f32; 2]> {
    djinn_engine::decode::read(path).unwrap().frames
}

/// Frames where the level jumps: the first 5 ms window after a quiet stretch whose energy
/// is over a tenth of the loudest.
fn onsets(audio: &[[f32; 2]]) -> Vec<usize> {
    let window = 240;
    let energy: Vec<f32> = audio
        .chunks(window)
        .map(|c| c.iter().map(|f| f[0] * f[0] + f[1] * f[1]).sum::<f32>())
        .collect();
    let loudest = energy.iter().cloned().fold(0.0, f32::max);
    let mut found = Vec::new();
    let mut quiet = true;
    for (i, &e) in energy.iter().enumerate() {
        if quiet && e > loudest * 0.1 {
            found.push(i * window);
            quiet = false;
        } else if e < loudest * 0.01 {
            quiet = true;
        }
    }
    found
}

fn djinn_stretch(input: &Path, output: &Path, extra: &[&str]) -> Value {
    let out = Command::new(bin("djinn"))
        .arg("--json")
        .arg("stretch")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "djinn stretch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn djinn_stretch_fits_a_drum_take_to_a_tempo_as_rubberband_does() {
    let dir = tempfile::tempdir().unwrap();
    let (mid, take) = (dir.path().join("kick.mid"), dir.path().join("kick.wav"));
    // A kick and a stick on every beat at 120 BPM, from FluidR3_GM's drum kit.
    pulse(&mid, 120.0, 16, 9, 0, 36, 0.25);
    fluidsynth(&mid, &take);
    let input = read(&take);

    let ours = dir.path().join("djinn.wav");
    let report = djinn_stretch(&take, &ours, &["--bpm", "128", "--from-bpm", "120"]);
    let stretched = read(&ours);
    let want = (input.len() as f64 * 120.0 / 128.0).round() as usize;
    assert_eq!(stretched.len(), want, "exact length");
    assert_eq!(report["frames"], want);

    let theirs = dir.path().join("rubberband.wav");
    let out = Command::new("rubberband")
        .args(["-3", "-q", "-T", "120:128"])
        .arg(&take)
        .arg(&theirs)
        .output()
        .expect("rubberband (make test installs rubberband-cli)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = read(&theirs);
    assert!(
        (reference.len() as i64 - want as i64).abs() <= 2,
        "rubberband made {} frames, djinn {want}",
        reference.len()
    );

    // The hits come 60/128 s apart, where rubberband-cli puts them.
    let (ours_at, theirs_at) = (onsets(&stretched), onsets(&reference));
    assert!(ours_at.len() >= 15, "{ours_at:?}");
    assert_eq!(
        ours_at.len(),
        theirs_at.len(),
        "{ours_at:?} vs {theirs_at:?}"
    );
    for (i, (a, b)) in ours_at.iter().zip(&theirs_at).enumerate() {
        assert!(
            (*a as i64 - *b as i64).abs() <= 480,
            "hit {i}: djinn at {a}, rubberband at {b}"
        );
        let grid = (i as f64 * 22_500.0) as i64;
        assert!(
            (*a as i64 - ours_at[0] as i64 - grid).abs() <= 240,
            "hit {i} at {a}, off the 128 BPM grid"
        );
    }

    // R2 runs mid and side on two threads where there are two cores, and lands on the same
    // grid.
    let faster = dir.path().join("faster.wav");
    let report = djinn_stretch(
        &take,
        &faster,
        &["--bpm", "128", "--from-bpm", "120", "--engine", "faster"],
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(report["threads"], if cores > 1 { 2 } else { 1 });
    let stretched = read(&faster);
    assert_eq!(stretched.len(), want, "exact length");
    let at = onsets(&stretched);
    assert_eq!(at.len(), ours_at.len(), "{at:?}");
    for (i, a) in at.iter().enumerate() {
        let grid = (i as f64 * 22_500.0) as i64;
        assert!(
            (*a as i64 - at[0] as i64 - grid).abs() <= 240,
            "R2: hit {i} at {a}, off the 128 BPM grid"
        );
    }

    // Without --from-bpm the tempo is found from the onsets.
    let detected = djinn_stretch(&take, &dir.path().join("detected.wav"), &["--bpm", "128"]);
    assert_eq!(detected["from_bpm_detected"], true);
    assert_eq!(detected["from_bpm_source"], "audio");
    let found = detected["from_bpm"].as_f64().unwrap();
    assert!((found - 120.0).abs() < 1.0, "detected {found} BPM");

    // The stretched file says it is at 128 BPM, as many beats of 4/4 as the take lasts at
    // 120 (the take, as fluidsynth wrote it, says nothing); stretched back, that tempo is
    // taken, not heard.
    let beats = (input.len() as f64 / 48_000.0 * 120.0 / 60.0).round() as u32;
    let info = LoopInfo::read(&ours)
        .unwrap()
        .expect("the output's loop information");
    assert_eq!((info.bpm, info.beats, info.root), (128.0, beats, None));
    assert_eq!(info.meter.to_string(), "4/4");
    assert_eq!(LoopInfo::read(&take).unwrap(), None);
    let back = djinn_stretch(&ours, &dir.path().join("back.wav"), &["--bpm", "120"]);
    assert_eq!(
        (
            back["from_bpm"].clone(),
            back["from_bpm_source"].clone(),
            back["from_bpm_detected"].clone()
        ),
        (json!(128.0), json!("file"), json!(false))
    );
    assert_eq!(
        LoopInfo::read(&dir.path().join("back.wav")).unwrap(),
        Some(LoopInfo { bpm: 120.0, ..info })
    );
}

#[test]
fn djinn_stretch_transposes_a_flute_like_rubberband_does() {
    let dir = tempfile::tempdir().unwrap();
    let (mid, take) = (dir.path().join("flute.mid"), dir.path().join("flute.wav"));
    // A4 on the flute (GM program 73), held most of each beat.
    pulse(&mid, 100.0, 8, 0, 73, 69, 0.9);
    fluidsynth(&mid, &take);
    let ours = dir.path().join("djinn.wav");
    djinn_stretch(
        &take,
        &ours,
        &["--bpm", "100", "--from-bpm", "100", "--semitones", "7"],
    );
    let theirs = dir.path().join("rubberband.wav");
    let out = Command::new("rubberband")
        .args(["-3", "-q", "-p", "7"])
        .arg(&take)
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(out.status.success());
    let strongest = |audio: &[[f32; 2]]| {
        let chroma = djinn_engine::analysis::chroma::chroma(audio, 48_000);
        (0..12)
            .max_by(|&a, &b| chroma[a].total_cmp(&chroma[b]))
            .unwrap()
    };
    // A (9) up a fifth is E (4), in djinn's output and in rubberband-cli's.
    assert_eq!(strongest(&read(&take)), 9);
    assert_eq!(strongest(&read(&ours)), 4);
    assert_eq!(strongest(&read(&theirs)), 4);
    assert_eq!(read(&ours).len(), read(&take).len(), "the length is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_add_and_replace_fit_a_loop_to_the_session_tempo_and_key() {
    let daemon = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        args: vec!["--fast".into()],
        ..Options::default()
    });
    let mut client = daemon.client();
    client
        .call("transport.set", json!({ "tempo": 128, "key": "C minor" }))
        .await
        .unwrap();
    // One bar at 120 BPM: 96,000 frames of a 220 Hz tone (A).
    let mut bytes = Vec::new();
    for i in 0..96_000 {
        let v = 0.2 * (2.0 * std::f32::consts::PI * 220.0 * i as f32 / 48_000.0).sin();
        bytes.extend_from_slice(&v.to_le_bytes());
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let (layer, _) = client
        .call_with_payload(
            "layer.add",
            json!({ "bpm": 120, "key": "A minor", "quantize": "now" }),
            vec![Bytes::from(bytes.clone())],
        )
        .await
        .unwrap();
    assert_eq!(layer["frames"], 90_000, "one bar at 128 BPM: {layer}");
    assert_eq!(layer["fit"]["from_bpm"], 120.0);
    assert_eq!(layer["fit"]["bpm"], 128.0);
    assert_eq!(layer["fit"]["semitones"], 3, "A to C: up a minor third");
    // A minor has C major's notes: in a C major session it stays where it is.
    client
        .call("transport.set", json!({ "key": "C major" }))
        .await
        .unwrap();
    let (layer, _) = client
        .call_with_payload(
            "layer.add",
            json!({ "bpm": 120, "key": "A minor", "quantize": "now" }),
            vec![Bytes::from(bytes.clone())],
        )
        .await
        .unwrap();
    assert_eq!(layer["fit"]["semitones"], 0, "{layer}");

    // A file that says it is one bar at 120 BPM is fitted at its word, with `fit_tempo`:
    // a steady tone has no onsets to hear a tempo in.
    let dir = tempfile::tempdir().unwrap();
    let tagged = dir.path().join("tone.wav");
    let frames: Vec<[f32; 2]> = bytes
        .chunks_exact(8)
        .map(|f| {
            let v = f32::from_le_bytes([f[0], f[1], f[2], f[3]]);
            [v, v]
        })
        .collect();
    let info = LoopInfo::lasting(120.0, Meter::FOUR_FOUR, None, 2.0);
    djinn_engine::wav::write_with(&tagged, &frames, 48_000, Some(&info)).unwrap();
    let layer = client
        .call(
            "layer.add",
            json!({ "path": tagged, "fit_tempo": true, "quantize": "now" }),
        )
        .await
        .unwrap();
    assert_eq!(layer["frames"], 90_000, "{layer}");
    assert_eq!(
        (
            &layer["fit"]["from_bpm"],
            &layer["fit"]["bpm_from"],
            &layer["fit"]["bpm_detected"]
        ),
        (&json!(120.0), &json!("file"), &json!(false)),
        "{layer}"
    );
    // A replace fits its audio the same way; without fit params it takes it as it is.
    let id = layer["id"].clone();
    let replaced = client
        .call(
            "layer.replace",
            json!({ "id": id, "path": tagged, "bpm": 120, "key": "A minor", "quantize": "now" }),
        )
        .await
        .unwrap();
    assert_eq!(replaced["frames"], 90_000, "{replaced}");
    assert_eq!(replaced["fit"]["from_bpm"], 120.0, "{replaced}");
    assert_eq!(replaced["fit"]["semitones"], 0, "{replaced}");
    let replaced = client
        .call(
            "layer.replace",
            json!({ "id": id, "path": tagged, "quantize": "now" }),
        )
        .await
        .unwrap();
    assert_eq!(replaced["frames"], 96_000, "{replaced}");
    assert!(replaced.get("fit").is_none(), "{replaced}");
    let untagged = dir.path().join("untagged.wav");
    djinn_engine::wav::write(&untagged, &frames, 48_000).unwrap();
    let error = client
        .call(
            "layer.add",
            json!({ "path": untagged, "fit_tempo": true, "quantize": "now" }),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no steady tempo"), "{error}");

    let error = client
        .call_with_payload(
            "layer.add",
            json!({ "bpm": 500 }),
            vec![Bytes::from(vec![0u8; 8 * 100])],
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("bpm"), "{error}");
}
