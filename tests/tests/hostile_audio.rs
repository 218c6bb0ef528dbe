//! Hostile audio against a real djinnd: a NaN in a client's audio must not silence the
//! master. Non-finite samples are zeroed on their way into a layer and counted in the
//! reply, in a `health` event and in `daemon.status`; the mix plays on.
//!
//! The daemon runs the offline driver at realtime pace: the recording it writes is what a
//! listener would have heard, and nothing here depends on how fast the host is beyond
//! generous deadlines.

use std::time::Duration;

use bytes::Bytes;
use djinn_tests::{Djinnd, Options, rms};
use serde_json::{Value, json};

const RATE: usize = 48_000;
/// Longest wait for any one thing djinnd is expected to do, however loaded the host.
const PATIENCE: Duration = Duration::from_secs(30);

/// Stereo frames as a payload of interleaved little-endian f32 samples.
fn payload(frames: &[[f32; 2]]) -> Bytes {
    let bytes: Vec<u8> = frames
        .iter()
        .flatten()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    Bytes::from(bytes)
}

/// White noise (a fixed sequence from `seed`) at `amp`.
fn noise(frames: usize, amp: f32, seed: u32) -> Vec<[f32; 2]> {
    let mut state = seed.max(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        amp * (state as f32 / u32::MAX as f32 * 2.0 - 1.0)
    };
    (0..frames).map(|_| [next(), next()]).collect()
}

/// The next event on a topic starting with `topic` whose body satisfies `wanted`.
async fn wait_for(
    events: &mut djinn_daemon::client::Events,
    topic: &str,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let search = async {
        loop {
            let (t, event) = events.next().await.expect("an event");
            if t.starts_with(topic) && wanted(&event) {
                return event;
            }
        }
    };
    tokio::time::timeout(PATIENCE, search)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
}

/// The master's left peak in a meter event, dBFS.
fn master_peak_db(meter: &Value) -> f64 {
    meter["data"]["master"]["peak_db"][0]
        .as_f64()
        .expect("a master peak")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_in_a_one_shot_is_zeroed_and_the_next_layer_in_its_slot_is_heard() {
    let mut daemon = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        ..Options::default()
    });
    let mut events = daemon.events(&["health", "layer", "meter"]).await;
    let mut client = daemon.client();

    // A pad: a 220 Hz loop at 0.3.
    let pad: Vec<[f32; 2]> = (0..RATE)
        .map(|i| {
            let v = 0.3 * (std::f32::consts::TAU * 220.0 * i as f32 / RATE as f32).sin();
            [v, v]
        })
        .collect();
    let (reply, _) = client
        .call_with_payload(
            "layer.add",
            json!({ "quantize": "now" }),
            vec![payload(&pad)],
        )
        .await
        .unwrap();
    assert_eq!(reply["nonfinite_zeroed"], 0, "{reply}");
    let meter = wait_for(&mut events, "meter", "the pad on the meters", |m| {
        m["data"]["master"]["peak_db"][0]
            .as_f64()
            .is_some_and(|db| db > -20.0)
    })
    .await;
    let pad_db = master_peak_db(&meter);
    // The driver's thread opens its file as it starts: with audio on the meters it has.
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    let recording = status["audio"]["recording"]
        .as_str()
        .unwrap_or_else(|| panic!("a recording: {}", status["audio"]))
        .to_owned();

    // One NaN in a second of quiet noise, added as a one-shot at gain 0.01.
    let mut poisoned = noise(RATE, 0.5, 7);
    poisoned[12_000][0] = f32::NAN;
    let (reply, _) = client
        .call_with_payload(
            "layer.add",
            json!({ "quantize": "now", "loop": false, "gain": 0.01, "group": "drums" }),
            vec![payload(&poisoned)],
        )
        .await
        .unwrap();
    assert_eq!(reply["nonfinite_zeroed"], 1, "{reply}");
    assert_eq!(reply["nonfinite_first_s"], 0.25, "{reply}");
    let poisoned_id = reply["id"].as_u64().expect("a layer id");
    let health = wait_for(&mut events, "health", "the zeroing reported", |e| {
        e["data"]["kind"] == "nonfinite_input"
    })
    .await;
    assert_eq!(health["data"]["samples"], 1, "{health}");
    assert_eq!(health["data"]["first_s"], 0.25, "{health}");
    wait_for(&mut events, "layer.ended", "the one-shot's end", |e| {
        e["data"]["id"] == poisoned_id
    })
    .await;

    // The next layer takes the slot it left: two seconds of clean noise.
    let (reply, _) = client
        .call_with_payload(
            "layer.add",
            json!({ "quantize": "now", "loop": false, "group": "drums" }),
            vec![payload(&noise(2 * RATE, 0.5, 11))],
        )
        .await
        .unwrap();
    assert_eq!(reply["nonfinite_zeroed"], 0, "{reply}");
    let clean_id = reply["id"].as_u64().expect("a layer id");
    wait_for(
        &mut events,
        "layer.started",
        "the clean one-shot's start",
        |e| e["data"]["id"] == clean_id,
    )
    .await;
    // Meters a tenth of a second apart while it plays: every one finite and loud.
    let mut loud = Vec::new();
    while loud.len() < 5 {
        let (topic, event) = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("events while the noise plays")
            .unwrap();
        assert!(
            !(topic == "health" && event["data"]["kind"] == "nonfinite_reset"),
            "the mixer never met a NaN: {event}"
        );
        if topic == "meter" {
            let db = master_peak_db(&event);
            assert!(db > pad_db - 3.0, "the master is heard: {event}");
            loud.push(db);
        }
    }
    assert!(
        loud.iter().any(|db| *db > pad_db + 1.0),
        "noise over the pad: {loud:?} vs {pad_db}"
    );

    let status = client.call("daemon.status", Value::Null).await.unwrap();
    let audio = &status["audio"];
    assert_eq!(audio["state"], "running", "{audio}");
    assert_eq!(audio["nonfinite_zeroed"], 1, "{audio}");
    assert_eq!(audio["nonfinite_resets"], 0, "{audio}");

    daemon.signal(libc::SIGTERM);
    assert!(
        daemon.wait_exit(PATIENCE).is_some_and(|s| s.success()),
        "{}",
        daemon.log()
    );
    let mut reader = hound::WavReader::open(&recording).expect("a finished WAV file");
    let samples: Vec<f32> = reader.samples::<f32>().map(Result::unwrap).collect();
    // The whole story: the one-shot's second and the half second of meters after it.
    assert!(samples.len() > 3 * RATE, "{} samples", samples.len());
    assert!(
        samples.iter().all(|s| s.is_finite()),
        "the recording is finite"
    );
    let left: Vec<f32> = samples.iter().step_by(2).copied().collect();
    let tail = &left[left.len() - RATE / 4..];
    assert!(
        rms(tail) > 0.1,
        "the mix is heard to the end: {}",
        rms(tail)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_float_file_with_a_nan_is_zeroed_on_load() {
    let daemon = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        ..Options::default()
    });
    let mut client = daemon.client();
    let path = daemon.dir.path().join("nan.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 44_100,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(&path, spec).unwrap();
    for (i, [s, _]) in noise(44_100, 0.5, 3).into_iter().enumerate() {
        let s = match i {
            22_050 => f32::NAN,
            22_051 => f32::INFINITY,
            _ => s,
        };
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
    let reply = client
        .call(
            "layer.add",
            json!({ "path": path, "quantize": "now", "loop": false, "gain": 0.01 }),
        )
        .await
        .unwrap();
    // Counted as the file holds them, before the 44.1 kHz file is brought to 48 kHz.
    assert_eq!(reply["nonfinite_zeroed"], 2, "{reply}");
    assert_eq!(reply["nonfinite_first_s"], 0.5, "{reply}");
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(
        status["audio"]["nonfinite_zeroed"], 2,
        "{}",
        status["audio"]
    );
}
