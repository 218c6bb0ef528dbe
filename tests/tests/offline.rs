//! The offline driver, djinnd's embedded default without JACK: the mixer renders into WAV
//! files in the state directory, here as fast as it can (`--fast`).

use std::time::Duration;

use bytes::Bytes;
use djinn_tests::{Djinnd, Options, rms};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_driver_writes_the_mix_to_a_wav_file() {
    let mut daemon = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        args: vec!["--fast".into()],
        ..Options::default()
    });
    let mut client = daemon.client();
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(status["audio"]["driver"], "offline", "{}", status["audio"]);
    let path = status["audio"]["recording"].as_str().unwrap().to_owned();
    assert!(path.contains("/state/recordings/djinn-"), "{path}");

    // A 1 kHz tone, seamless over 48,000 frames, at 0.25.
    let mut tone = Vec::new();
    for i in 0..48_000 {
        let v = 0.25 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 48_000.0).sin();
        tone.extend_from_slice(&v.to_le_bytes());
        tone.extend_from_slice(&v.to_le_bytes());
    }
    let (layer, _) = client
        .call_with_payload(
            "layer.add",
            json!({ "quantize": "now" }),
            vec![Bytes::from(tone)],
        )
        .await
        .unwrap();
    assert_eq!(layer["state"], "pending");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = client.call("layer.list", Value::Null).await.unwrap();
    assert_eq!(list["layers"][0]["state"], "playing", "{list}");
    let position = client.call("transport.get", Value::Null).await.unwrap()["position"].clone();
    assert!(
        position["frame"].as_u64().unwrap() > 48_000,
        "fast mode outruns the clock: {position}"
    );

    daemon.signal(libc::SIGTERM);
    assert!(
        daemon.wait_exit(Duration::from_secs(3)).unwrap().success(),
        "{}",
        daemon.log()
    );
    let mut reader = hound::WavReader::open(&path).expect("a finished WAV file");
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.sample_rate), (2, 48_000));
    let samples: Vec<f32> = reader.samples::<f32>().map(Result::unwrap).collect();
    let left: Vec<f32> = samples.iter().step_by(2).copied().collect();
    assert!(left.len() > 48_000, "{} frames", left.len());
    let tail = &left[left.len() - 24_000..];
    let level = rms(tail);
    assert!(
        (level - 0.25 / 2f32.sqrt()).abs() < 0.01,
        "the tone at its level: rms {level}"
    );
}
