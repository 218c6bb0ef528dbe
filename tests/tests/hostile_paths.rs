//! What a client may make djinnd read, run and hold: pipe commands only by name from the
//! operator's allow-list, files only under the media roots (after symlinks, regular files
//! only, with one answer for everything else), and layers within their length and memory
//! limits, refused before the audio is decoded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use djinn_daemon::client::{Client, ClientError};
use djinn_tests::{Djinnd, Options};
use serde_json::{Value, json};

/// A djinnd on the offline driver whose only media root (besides its files area) is `root`.
fn start(root: &Path, extra: &str) -> Djinnd {
    Djinnd::start_with(Options {
        config: format!(
            "[media]\nroots = [{:?}]\n{extra}",
            root.display().to_string()
        ),
        audio: Some("offline".into()),
        ..Options::default()
    })
}

/// A WAV of silence, written sparse: `seconds` long at `rate`, 16-bit, in no time and
/// next to no disk.
fn silent_wav(path: &Path, rate: u32, channels: u16, seconds: u32) {
    let block = u32::from(channels) * 2;
    let data = rate * seconds * block;
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(36 + data).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&channels.to_le_bytes());
    header.extend_from_slice(&rate.to_le_bytes());
    header.extend_from_slice(&(rate * block).to_le_bytes());
    header.extend_from_slice(&(block as u16).to_le_bytes());
    header.extend_from_slice(&16u16.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data.to_le_bytes());
    std::fs::write(path, &header).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(44 + u64::from(data)).unwrap();
}

/// A short loop with sound in it (so that every analysis has something to hear).
fn tone_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..48_000 * 2 {
        let v =
            (0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin() * 32767.0) as i16;
        w.write_sample(v).unwrap();
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
}

fn mkfifo(path: &Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path this test owns.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// The error code, message and data of a call that must fail.
async fn refused(client: &mut Client, method: &str, params: Value) -> (i64, String, Value) {
    match client.call(method, params.clone()).await {
        Err(ClientError::Rpc {
            code,
            message,
            data,
        }) => (code, message, data.unwrap_or(Value::Null)),
        other => panic!("{method} {params} should be refused, got {other:?}"),
    }
}

/// The methods that take a file, with the params they need besides `path`.
fn file_methods(path: &str) -> [(&'static str, Value); 3] {
    [
        ("layer.add", json!({ "path": path, "quantize": "now" })),
        ("render.file", json!({ "path": path, "prompt": "warm" })),
        ("quality.assess", json!({ "path": path })),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_pipe_command_is_refused_and_never_run_a_named_one_runs() {
    let root = tempfile::tempdir().unwrap();
    let marks = tempfile::tempdir().unwrap();
    let named = marks.path().join("named-ran");
    let raw = marks.path().join("raw-ran");
    let daemon = start(
        root.path(),
        &format!(
            "[pipe.commands]\nmarker = {:?}\n",
            format!("touch {}; exec sleep 600", named.display())
        ),
    );
    let mut client = daemon.client();

    let (code, message, data) = refused(
        &mut client,
        "fx.pipe.set",
        json!({ "command": format!("touch {}", raw.display()) }),
    )
    .await;
    assert_eq!(code, -32602, "{message}");
    assert_eq!(data["field"], "command", "{data}");
    assert!(message.contains("[pipe.commands]"), "{message}");
    // A name that is a command line is only an unknown name.
    let (code, message, _) = refused(
        &mut client,
        "fx.pipe.set",
        json!({ "name": format!("touch {}", raw.display()) }),
    )
    .await;
    assert_eq!(code, -32002, "{message}");
    assert!(
        message.contains("marker"),
        "the allowed names are listed: {message}"
    );

    let pipe = client.call("fx.pipe.get", Value::Null).await.unwrap();
    assert_eq!(pipe["available"], json!(["marker"]), "{pipe}");
    assert_eq!(pipe["state"], "off", "{pipe}");

    // The allow-listed entry runs: its marker appears.
    let on = client
        .call("fx.pipe.set", json!({ "name": "marker" }))
        .await
        .unwrap();
    assert_eq!(on["name"], "marker", "{on}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !named.exists() {
        assert!(Instant::now() < deadline, "the named command never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let off = client
        .call("fx.pipe.set", json!({ "name": null }))
        .await
        .unwrap();
    assert_eq!(off["state"], "off", "{off}");
    assert!(!raw.exists(), "a command line from a client was run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_roots_get_one_answer_that_reveals_nothing() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    tone_wav(&root.path().join("in.wav"));
    tone_wav(&outside.path().join("secret.wav"));
    std::os::unix::fs::symlink(
        outside.path().join("secret.wav"),
        root.path().join("link.wav"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("missing.wav"),
        root.path().join("dangling.wav"),
    )
    .unwrap();
    let daemon = start(root.path(), "");
    let mut client = daemon.client();

    let shown = |p: &Path| p.display().to_string();
    let hostile = [
        "/etc/passwd".to_owned(),
        shown(&outside.path().join("secret.wav")),
        shown(&outside.path().join("missing.wav")),
        "/nonexistent/dir/x.wav".to_owned(),
        shown(&root.path().join("link.wav")),
        "link.wav".to_owned(),
        shown(&root.path().join("dangling.wav")),
        "../../../../../etc/passwd".to_owned(),
        format!("{}/../{}", shown(root.path()), "etc-passwd-missing"),
    ];
    for (method, _) in file_methods("") {
        let mut answers = Vec::new();
        for path in &hostile {
            let params = file_methods(path)
                .into_iter()
                .find(|(m, _)| *m == method)
                .unwrap()
                .1;
            let (code, message, data) = refused(&mut client, method, params).await;
            assert_eq!(code, -32602, "{method} {path}: {message}");
            assert_eq!(data["field"], "path", "{method} {path}: {data}");
            assert!(
                !message.contains(path.as_str()),
                "{method} echoes {path}: {message}"
            );
            answers.push(message);
        }
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "{method} answers differ, telling what exists: {answers:#?}"
        );
        assert!(answers[0].contains("media roots"), "{}", answers[0]);
    }

    // The same files inside the root are read, by absolute or relative name.
    let inside = shown(&root.path().join("in.wav"));
    let assessed = client
        .call("quality.assess", json!({ "path": inside }))
        .await
        .unwrap();
    assert!(
        assessed["source"].as_str().unwrap().ends_with("in.wav"),
        "{assessed}"
    );
    let layer = client
        .call("layer.add", json!({ "path": "in.wav", "quantize": "now" }))
        .await
        .unwrap();
    assert!(layer["frames"].as_u64().unwrap() > 90_000, "{layer}");

    // The library: not the whole disk, not a folder outside; the root, without the link.
    for dir in ["/", "/etc", &shown(outside.path())] {
        let (code, message, data) =
            refused(&mut client, "library.build", json!({ "dir": dir })).await;
        assert_eq!(code, -32602, "{dir}: {message}");
        assert_eq!(data["field"], "dir", "{data}");
        assert!(message.contains("media roots"), "{message}");
    }
    client
        .call("library.build", json!({ "dir": shown(root.path()) }))
        .await
        .unwrap();
    let found = client
        .call("library.search", json!({ "limit": 50 }))
        .await
        .unwrap();
    let paths: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.ends_with("in.wav")), "{paths:?}");
    assert!(
        paths
            .iter()
            .all(|p| !p.contains("link") && !p.contains("secret")),
        "the library followed a link out of its root: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_inside_a_root_is_refused_at_once() {
    let root = tempfile::tempdir().unwrap();
    mkfifo(&root.path().join("loop.wav"));
    tone_wav(&root.path().join("in.wav"));
    let daemon = start(root.path(), "");
    let mut client = daemon.client();
    let fifo = root.path().join("loop.wav").display().to_string();
    for (method, params) in file_methods(&fifo)
        .into_iter()
        .chain(file_methods("loop.wav"))
    {
        let started = Instant::now();
        let (code, message, _) = refused(&mut client, method, params).await;
        assert_eq!(code, -32602, "{method}: {message}");
        assert!(
            message.contains("not a regular file"),
            "{method}: {message}"
        );
        // The client's own timeout is 5 s: an answer at all means no open blocked.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{method} blocked"
        );
    }
    // A build over the folder passes the FIFO by instead of waiting on it.
    let built = client
        .call(
            "library.build",
            json!({ "dir": root.path().display().to_string() }),
        )
        .await
        .unwrap();
    assert_eq!(built["entries"], 1, "{built}");
    client.call("daemon.ping", Value::Null).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_over_max_layer_seconds_is_refused_before_it_is_decoded() {
    let root = tempfile::tempdir().unwrap();
    // 20 minutes: 19 MB on disk (sparse), 460 MB decoded at the mixer's 48 kHz stereo.
    let long = root.path().join("long.wav");
    silent_wav(&long, 8_000, 1, 20 * 60);
    let daemon = start(root.path(), "[audio]\nmax_layer_seconds = 60\n");
    let mut client = daemon.client();
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(status["audio"]["max_layer_seconds"], 60.0, "{status}");
    tone_wav(&root.path().join("in.wav"));
    let short = client
        .call("layer.add", json!({ "path": "in.wav", "quantize": "now" }))
        .await
        .unwrap();
    let before = daemon.rss_kib();
    for (method, params) in [
        (
            "layer.add",
            json!({ "path": "long.wav", "quantize": "now" }),
        ),
        (
            "layer.replace",
            json!({ "id": short["id"], "path": "long.wav", "quantize": "now" }),
        ),
    ] {
        let started = Instant::now();
        let (code, message, data) = refused(&mut client, method, params).await;
        let took = started.elapsed();
        assert_eq!(code, -32602, "{method}: {message}");
        assert_eq!(data["limit"], "audio.max_layer_seconds", "{data}");
        assert!(
            message.contains("1200.0 s"),
            "the length is told: {message}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{method} refused after {took:?}"
        );
    }
    let grown_mb = daemon.rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mb < 100,
        "djinnd grew by {grown_mb} MB refusing a file it should not have decoded"
    );
    let layers = client.call("layer.list", Value::Null).await.unwrap();
    let layers = layers["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{layers:?}");
    assert!(layers[0]["source"].as_str().unwrap().ends_with("in.wav"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_layer_memory_cap_refuses_the_layer_that_would_exceed_it() {
    let root = tempfile::tempdir().unwrap();
    // 20 s at 48 kHz stereo: 7.3 MB a layer, so two fit in 20 MB and a third does not.
    let files: Vec<PathBuf> = (0..3)
        .map(|i| {
            let path = root.path().join(format!("take{i}.wav"));
            silent_wav(&path, 48_000, 2, 20);
            path
        })
        .collect();
    let daemon = start(root.path(), "[audio]\nmax_layer_memory_mb = 20\n");
    let mut client = daemon.client();
    let add = |i: usize| json!({ "path": files[i].display().to_string(), "quantize": "now" });
    let first = client.call("layer.add", add(0)).await.unwrap();
    client.call("layer.add", add(1)).await.unwrap();
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    let used = status["audio"]["layer_memory_mb"].as_f64().unwrap();
    assert!((14.0..15.5).contains(&used), "{}", status["audio"]);
    assert_eq!(status["audio"]["layer_memory_limit_mb"], 20.0);

    let (code, message, data) = refused(&mut client, "layer.add", add(2)).await;
    assert_eq!(code, -32006, "{message}");
    assert_eq!(data["limit"], "audio.max_layer_memory_mb", "{data}");
    assert!(message.contains("remove a layer"), "{message}");
    // Raw frames count too: 8 MB of them is refused the same way.
    let payload = vec![0u8; 8 * 1024 * 1024];
    match client
        .call_with_payload(
            "layer.add",
            json!({ "quantize": "now" }),
            vec![payload.into()],
        )
        .await
    {
        Err(ClientError::Rpc { code, .. }) => assert_eq!(code, -32006),
        other => panic!("raw frames over the cap: {other:?}"),
    }
    let layers = client.call("layer.list", Value::Null).await.unwrap();
    assert_eq!(layers["layers"].as_array().unwrap().len(), 2, "{layers}");

    // Once a layer has gone, its memory is given back and the third fits.
    client
        .call(
            "layer.remove",
            json!({ "id": first["id"], "quantize": "now" }),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client.call("daemon.status", Value::Null).await.unwrap();
        if status["audio"]["layer_memory_mb"].as_f64().unwrap() < 8.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "memory not given back: {}",
            status["audio"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.call("layer.add", add(2)).await.unwrap();
}
