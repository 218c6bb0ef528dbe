//! The generator over ZeroMQ and from the `djinn` command: loops that join the mix, songs
//! written to the files area, preset renders, quality assessment, and loudness figures
//! cross-checked against ffmpeg's ebur128 filter.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use djinn_tests::{Djinnd, Options, bin};
use serde_json::{Value, json};

fn offline() -> Djinnd {
    Djinnd::start_with(Options {
        audio: Some("offline".into()),
        args: vec!["--fast".into()],
        ..Options::default()
    })
}

/// ffmpeg's integrated loudness (LUFS) and true peak (dBTP) of `path`.
fn ffmpeg_loudness(path: &Path) -> (f64, f64) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(path)
        .args(["-af", "ebur128=peak=true", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let text = String::from_utf8_lossy(&out.stderr);
    let summary = text.rsplit("Summary:").next().unwrap_or_default();
    let value = |label: &str| -> f64 {
        summary
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {label} in ffmpeg output:\n{text}"))
    };
    (value("I:"), value("Peak:"))
}

fn error_field(e: &djinn_daemon::client::ClientError) -> (i64, String) {
    match e {
        djinn_daemon::client::ClientError::Rpc { code, data, .. } => (
            *code,
            data.as_ref()
                .and_then(|d| d["field"].as_str())
                .unwrap_or_default()
                .to_owned(),
        ),
        other => panic!("expected an RPC error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_loop_joins_the_mix_on_its_role_group() {
    let daemon = offline();
    let mut client = daemon.client();
    client
        .call("transport.set", json!({ "tempo": 128, "key": "A minor" }))
        .await
        .unwrap();
    let drums = client
        .call(
            "generate.loop",
            json!({ "prompt": "hard techno kicks", "role": "drum", "bars": 4, "seed": 9 }),
        )
        .await
        .unwrap();
    // Exactly four bars at the transport's tempo, whatever the prompt's style.
    assert_eq!(
        drums["frames"],
        json!((16.0 * 60.0 / 128.0 * 48_000.0_f64).round() as u64)
    );
    assert_eq!(drums["recipe"]["tempo"], json!(128.0));
    assert_eq!(drums["role"], "drum");
    assert_eq!(drums["style"], "techno_minimal");
    let lufs = drums["loudness"]["integrated_lufs"].as_f64().unwrap();
    assert!((lufs - -9.0).abs() <= 1.0, "{drums}");

    let again = client
        .call(
            "generate.loop",
            json!({ "prompt": "hard techno kicks", "role": "drum", "bars": 4, "seed": 9 }),
        )
        .await
        .unwrap();
    assert_ne!(again["buffer"], drums["buffer"]);
    assert_eq!(
        again["loudness"], drums["loudness"],
        "same seed, same audio"
    );

    let layer = client
        .call(
            "layer.add",
            json!({ "buffer": drums["buffer"], "quantize": "now" }),
        )
        .await
        .unwrap();
    assert_eq!(layer["group"], "drums", "{layer}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = client.call("layer.list", Value::Null).await.unwrap();
    assert_eq!(list["layers"][0]["state"], "playing", "{list}");

    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(status["generator"]["buffers"], 2, "{}", status["generator"]);
    assert_eq!(status["generator"]["presets"], 12);
    assert!(
        status["generator"]["mood_script"]
            .as_str()
            .unwrap()
            .contains("built-in")
    );
    assert_eq!(status["actors"]["generator"]["state"], "running");

    let err = client
        .call("layer.add", json!({ "buffer": "loop-999" }))
        .await
        .unwrap_err();
    assert_eq!(error_field(&err), (-32002, "buffer".to_owned()));
    let err = client
        .call("generate.loop", json!({ "bars": 0 }))
        .await
        .unwrap_err();
    assert_eq!(error_field(&err), (-32602, "bars".to_owned()));
    let err = client
        .call("generate.loop", json!({ "role": "kazoo" }))
        .await
        .unwrap_err();
    assert_eq!(error_field(&err), (-32602, "role".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_report_what_they_did_not_understand() {
    let daemon = offline();
    let mut client = daemon.client();
    let result = client
        .call(
            "generate.loop",
            json!({ "prompt": "UK drill beat, dark 808 slides, sparse piano, wobbly kazoo", "bars": 1, "seed": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(result["style"], "uk_drill");
    assert_eq!(result["unknown"], json!(["wobbly", "kazoo"]));
    let parts = result["recipe"]["parts"].as_array().unwrap();
    assert!(
        parts.contains(&json!("808")) && parts.contains(&json!("piano")),
        "{parts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn songs_are_exact_and_ffmpeg_agrees_on_their_loudness() {
    let daemon = offline();
    let mut client = daemon.client();
    let mut events = daemon.events(&["generate.progress", "files"]).await;
    let song = client
        .call(
            "generate.song",
            json!({ "prompt": "deep house, warm pads", "seconds": 24.5, "seed": 4, "name": "warm" }),
        )
        .await
        .unwrap();
    let path = Path::new(song["file"].as_str().unwrap()).to_owned();
    assert!(path.ends_with("files/warm.wav"), "{path:?}");
    let reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.duration(), 24 * 48_000 + 24_000);
    let (ffmpeg_i, ffmpeg_tp) = ffmpeg_loudness(&path);
    let ours = song["loudness"]["integrated_lufs"].as_f64().unwrap();
    assert!(
        (ours - ffmpeg_i).abs() <= 0.5,
        "djinn {ours} LUFS, ffmpeg {ffmpeg_i}"
    );
    assert!((ours - -9.0).abs() <= 1.0, "{song}");
    assert!(ffmpeg_tp <= -1.0 + 0.05, "ffmpeg true peak {ffmpeg_tp}");
    // What the master did is reported: a limiter pass at one of its releases, under the
    // ceiling.
    let master = &song["mastering"];
    assert!(master["passes"].as_u64().unwrap() >= 1, "{master}");
    assert!(
        [80.0, 40.0, 20.0, 10.0, 5.0].contains(&master["limiter_release_ms"].as_f64().unwrap()),
        "{master}"
    );
    assert!(
        master["limiter_ceiling_dbtp"].as_f64().unwrap() < -1.0,
        "{master}"
    );
    assert!(master["gain_db"].as_f64().unwrap().is_finite(), "{master}");

    // Progress went out while it rendered, and the new file was announced.
    let mut fractions = Vec::new();
    let mut announced = false;
    while !announced || fractions.last() != Some(&1.0) {
        let (topic, body) = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("events arrive")
            .unwrap();
        match topic.as_str() {
            "generate.progress" => fractions.push(body["data"]["fraction"].as_f64().unwrap()),
            "files" => announced = body["data"]["path"] == song["file"],
            _ => {}
        }
    }
    assert!(fractions.len() >= 3, "{fractions:?}");

    let err = client
        .call("generate.song", json!({ "seconds": 5 }))
        .await
        .unwrap_err();
    assert_eq!(error_field(&err), (-32602, "seconds".to_owned()));
    let err = client
        .call(
            "generate.song",
            json!({ "seconds": 20, "name": "../escape" }),
        )
        .await
        .unwrap_err();
    assert_eq!(error_field(&err), (-32602, "name".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_audio_returns_frames_and_names_bad_fields() {
    let daemon = offline();
    let mut client = daemon.client();
    let presets = client.call("render.presets", Value::Null).await.unwrap();
    let names: Vec<&str> = presets["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"warm_pad") && names.contains(&"drill_808"),
        "{names:?}"
    );

    let preset = json!({
        "name": "test pad",
        "role": "pad",
        "description": "a pad for the test",
        "parameters": { "frequency": 220.0, "attack": 0.2, "decay": 0.5, "sustain": 0.7, "release": 0.4 },
        "constraints": { "lufs_target": -16.0, "true_peak_limit": -2.0 }
    });
    let (meta, payload) = client
        .call_with_payload(
            "render.audio",
            json!({
                "preset": preset,
                "context": { "tempo": 100, "key": 9, "scale": "minor", "time_signature": "4/4" },
                "duration": 2.5
            }),
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(meta["frames"], json!(120_000));
    assert_eq!(payload.len(), 1);
    assert_eq!(payload[0].len(), 120_000 * 8);
    let lufs = meta["loudness"]["integrated_lufs"].as_f64().unwrap();
    assert!((lufs - -16.0).abs() <= 1.0, "{meta}");
    assert!(
        meta["loudness"]["true_peak_dbtp"].as_f64().unwrap() <= -2.0,
        "{meta}"
    );
    assert!(meta["mastering"]["passes"].as_u64().unwrap() >= 1, "{meta}");

    for (bad, field) in [
        (json!({ "attack": -1.0 }), "preset.parameters.attack"),
        (json!({ "attak": 0.1 }), "preset.parameters"),
        (
            json!({ "instrument": "acid" }),
            "preset.parameters.instrument",
        ),
        (
            json!({ "frequency": "high" }),
            "preset.parameters.frequency",
        ),
    ] {
        let mut p = preset.clone();
        p["parameters"] = bad;
        let err = client
            .call("render.audio", json!({ "preset": p, "duration": 1.0 }))
            .await
            .unwrap_err();
        let (code, got) = error_field(&err);
        assert_eq!(code, -32602);
        assert!(got.starts_with(field), "{got} for {field}: {err}");
    }
    let err = client
        .call(
            "render.audio",
            json!({ "preset": "warm_pad", "duration": 1.0, "context": { "key": 12 } }),
        )
        .await
        .unwrap_err();
    assert_eq!(error_field(&err), (-32602, "context.key".to_owned()));
    let err = client
        .call("render.audio", json!({ "preset": "nope", "duration": 1.0 }))
        .await
        .unwrap_err();
    assert_eq!(error_field(&err), (-32002, "preset".to_owned()));
}

fn interleaved(frames: &[[f32; 2]]) -> Bytes {
    let mut bytes = Vec::with_capacity(frames.len() * 8);
    for f in frames {
        bytes.extend_from_slice(&f[0].to_le_bytes());
        bytes.extend_from_slice(&f[1].to_le_bytes());
    }
    Bytes::from(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_assess_flags_planted_faults_and_passes_generated_audio() {
    let daemon = offline();
    let mut client = daemon.client();
    let made = client
        .call(
            "generate.loop",
            json!({ "bars": 8, "seed": 2, "save": true }),
        )
        .await
        .unwrap();
    let clean = client
        .call("quality.assess", json!({ "path": made["file"] }))
        .await
        .unwrap();
    assert_eq!(clean["violations"], json!([]), "{clean}");
    assert!(clean["overall_score"].as_f64().unwrap() > 0.75, "{clean}");

    let reader = hound::WavReader::open(made["file"].as_str().unwrap()).unwrap();
    let samples: Vec<f32> = reader.into_samples::<f32>().map(Result::unwrap).collect();
    let frames: Vec<[f32; 2]> = samples.chunks_exact(2).map(|f| [f[0], f[1]]).collect();
    let planted: [(&str, Vec<[f32; 2]>); 4] = [
        (
            "clipping",
            frames
                .iter()
                .map(|f| [(f[0] * 6.0).clamp(-1.0, 1.0), (f[1] * 6.0).clamp(-1.0, 1.0)])
                .collect(),
        ),
        (
            "dc_offset",
            frames
                .iter()
                .map(|f| [f[0] * 0.5 + 0.1, f[1] * 0.5 + 0.1])
                .collect(),
        ),
        ("silence", vec![[0.0; 2]; frames.len()]),
        ("phase", frames.iter().map(|f| [f[0], -f[0]]).collect()),
    ];
    for (fault, audio) in planted {
        let (report, _) = client
            .call_with_payload(
                "quality.assess",
                json!({ "rate": 48_000, "role": "drum" }),
                vec![interleaved(&audio)],
            )
            .await
            .unwrap();
        let kinds: Vec<&str> = report["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&fault), "{fault}: {report}");
        assert!(
            report["overall_score"].as_f64().unwrap() < clean["overall_score"].as_f64().unwrap()
        );
    }
}

#[test]
fn djinn_generate_and_analyze_work_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("song.wav");
    let run = Command::new(bin("djinn"))
        .args([
            "generate",
            "--prompt",
            "dub, 72 bpm",
            "--seconds",
            "12",
            "--seed",
            "5",
            "--json",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["style"], "dub");
    assert_eq!(report["recipe"]["tempo"], json!(72.0));
    assert_eq!(
        hound::WavReader::open(&out).unwrap().duration(),
        12 * 48_000
    );
    // The song carries its tempo, length in beats, meter and tonic as an ACIDized file
    // does: libsndfile (what many hosts read WAV files with) reads them back.
    let key = report["recipe"]["key"].as_str().unwrap();
    let tonic = key.split(' ').next().unwrap();
    let root = 60
        + [
            "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
        ]
        .iter()
        .position(|n| *n == tonic)
        .unwrap();
    let script = format!(
        r#"
import ctypes
sf = ctypes.CDLL("libsndfile.so.1")
class Info(ctypes.Structure):
    _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int),
                ("channels", ctypes.c_int), ("format", ctypes.c_int),
                ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]
class LoopInfo(ctypes.Structure):
    _fields_ = [("time_sig_num", ctypes.c_short), ("time_sig_den", ctypes.c_short),
                ("loop_mode", ctypes.c_int), ("num_beats", ctypes.c_int),
                ("bpm", ctypes.c_float), ("root_key", ctypes.c_int),
                ("future", ctypes.c_int * 6)]
sf.sf_open.restype = ctypes.c_void_p
info = Info()
handle = ctypes.c_void_p(sf.sf_open({path:?}.encode(), 0x10, ctypes.byref(info)))
assert handle.value, "libsndfile cannot open the file"
loop = LoopInfo()
SFC_GET_LOOP_INFO = 0x10E0
found = sf.sf_command(handle, SFC_GET_LOOP_INFO, ctypes.byref(loop), ctypes.sizeof(loop))
print(found, info.frames, loop.time_sig_num, loop.time_sig_den, loop.loop_mode,
      loop.num_beats, loop.bpm, loop.root_key)
"#,
        path = out.display().to_string()
    );
    let libsndfile = djinn_tests::run_python(&script, "reading the song with libsndfile");
    // Found; 12 s of frames; 4/4; SF_LOOP_FORWARD (801); 14 beats (12 s at 72 BPM); the tonic
    // as a MIDI note from middle C.
    assert_eq!(
        libsndfile.split_whitespace().collect::<Vec<_>>(),
        [
            "1".to_owned(),
            (12 * 48_000).to_string(),
            "4".into(),
            "4".into(),
            "801".into(),
            "14".into(),
            "72.0".into(),
            root.to_string()
        ],
        "{key}"
    );

    let analyzed = Command::new(bin("djinn"))
        .args(["analyze", "--json", "--profile", "dub"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        analyzed.status.success(),
        "{}",
        String::from_utf8_lossy(&analyzed.stderr)
    );
    let analysis: Value = serde_json::from_slice(&analyzed.stdout).unwrap();
    assert_eq!(analysis["violations"], json!([]), "{analysis}");
    assert_eq!(
        analysis["loop_info"],
        json!({ "bpm": 72.0, "beats": 14, "meter": "4/4", "root": tonic, "one_shot": false })
    );
    let (ffmpeg_i, _) = ffmpeg_loudness(&out);
    let ours = analysis["loudness"]["integrated_lufs"].as_f64().unwrap();
    assert!(
        (ours - ffmpeg_i).abs() <= 0.5,
        "djinn {ours}, ffmpeg {ffmpeg_i}"
    );

    let missing = Command::new(bin("djinn"))
        .args(["analyze", "/nonexistent.wav"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.wav"));
}
