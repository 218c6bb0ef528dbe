//! The DJ: a set under the default script, live script edits, hostile scripts, all with
//! the offline driver in `--fast` mode (the director holds the driver at each decision, so
//! the recording is the set a realtime run would play).

use std::path::Path;
use std::time::Duration;

use djinn_daemon::client::Events;
use djinn_engine::analysis::bands::band_shares;
use djinn_tests::{Djinnd, Options, wait_for};
use serde_json::{Value, json};

fn fast(profile: &str, scripts: Option<&Path>) -> Djinnd {
    let mut args = vec!["--fast".into(), "--profile".into(), profile.into()];
    if let Some(dir) = scripts {
        args.push("--scripts".into());
        args.push(dir.display().to_string());
    }
    Djinnd::start_with(Options {
        audio: Some("offline".into()),
        args,
        ..Options::default()
    })
}

/// Band energies of one bar of the recording, in dB.
fn bar_profile(left: &[f32], right: &[f32], start: usize, len: usize) -> [f64; 6] {
    let frames: Vec<[f32; 2]> = left[start..start + len]
        .iter()
        .zip(&right[start..start + len])
        .map(|(l, r)| [*l, *r])
        .collect();
    let power = frames
        .iter()
        .map(|f| f64::from(f[0] * f[0] + f[1] * f[1]))
        .sum::<f64>()
        / len as f64;
    let shares = band_shares(&frames, 48_000).as_array();
    let mut out = [0.0; 6];
    for (o, s) in out.iter_mut().zip(shares) {
        *o = 10.0 * (power * f64::from(s) + 1e-9).log10();
    }
    out[5] = 10.0 * (power + 1e-12).log10();
    out
}

fn distance(a: &[f64; 6], b: &[f64; 6]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / 6.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_bar_set_decides_every_phrase_and_changes_on_each_boundary() {
    let mut daemon = fast("uk_drill", None);
    let mut client = daemon.client();
    let mut events = daemon.events(&["decision", "layer.missed", "script"]).await;
    let started = client
        .call("dj.start", json!({ "seed": 11 }))
        .await
        .unwrap();
    assert_eq!(started["script"], "built-in dj/default.rhai", "{started}");
    let phrase_bars = started["phrase_bars"].as_u64().unwrap();
    assert_eq!(phrase_bars, 8);
    let first_bar = started["decision"]["bar"].as_u64().unwrap();
    // 64 bars: the start and eight phrase decisions after it.
    let mut bars = vec![first_bar];
    let deadline = Duration::from_secs(240);
    while bars.len() < 9 {
        let data = wait_for(&mut events, deadline, |topic, data| {
            assert_ne!(topic, "layer.missed", "{data}");
            assert!(
                !(topic == "script" && data["kind"] == "rejected"),
                "the default script asked for something refused: {data}"
            );
            topic == "decision" && data["kind"] != "start"
        })
        .await;
        assert_eq!(data["kind"], "phrase", "{data}");
        assert!(!data["reason"].as_str().unwrap().is_empty(), "{data}");
        assert!(!data["actions"].as_array().unwrap().is_empty(), "{data}");
        bars.push(data["bar"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (0..9).map(|k| first_bar + k * phrase_bars).collect();
    assert_eq!(bars, expected, "a decision on every phrase boundary");
    // Let the last phrase play out, then stop and read the recording.
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(status["audio"]["missed"], 0, "{}", status["audio"]);
    let director = &status["director"];
    assert!(
        director["min_lead_bars"].as_f64().unwrap() >= 1.0,
        "{director}"
    );
    assert_eq!(director["decisions"].as_array().unwrap().len(), 9);
    let path = status["audio"]["recording"].as_str().unwrap().to_owned();
    let tempo = status["transport"]["tempo"].as_f64().unwrap();
    let last = *bars.last().unwrap();
    loop {
        let position = client.call("transport.get", Value::Null).await.unwrap()["position"].clone();
        if position["bar"].as_u64().unwrap() > last + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.call("dj.stop", Value::Null).await.unwrap();
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).unwrap().success());

    let mut reader = hound::WavReader::open(&path).unwrap();
    let samples: Vec<f32> = reader.samples::<f32>().map(Result::unwrap).collect();
    let left: Vec<f32> = samples.iter().step_by(2).copied().collect();
    let right: Vec<f32> = samples.iter().skip(1).step_by(2).copied().collect();
    let bar_len = (4.0 * 60.0 / tempo * 48_000.0) as usize;
    let bar_start = |bar: u64| ((bar - 1) as f64 * 4.0 * 60.0 / tempo * 48_000.0).round() as usize;
    let profile = |bar: u64| bar_profile(&left, &right, bar_start(bar), bar_len);
    // Not silent once the set began.
    assert!(profile(first_bar + 1)[5] > -40.0, "the set is audible");
    let mut at_boundaries = Vec::new();
    let mut within = Vec::new();
    for k in 1..8 {
        let boundary = first_bar + k * phrase_bars;
        at_boundaries.push(distance(&profile(boundary - 1), &profile(boundary)));
        for b in boundary + 1..boundary + phrase_bars - 1 {
            within.push(distance(&profile(b - 1), &profile(b)));
        }
    }
    within.sort_by(f64::total_cmp);
    let within_median = within[within.len() / 2];
    let mut sorted = at_boundaries.clone();
    sorted.sort_by(f64::total_cmp);
    let boundary_median = sorted[sorted.len() / 2];
    assert!(
        boundary_median > 2.0 * within_median,
        "the sound changes on the boundaries ({at_boundaries:?} dB) more than inside phrases \
         (median {within_median:.2} dB)"
    );
    let changed = at_boundaries.iter().filter(|d| **d > within_median).count();
    assert!(
        changed >= 6,
        "{changed} of 7 boundaries audible: {at_boundaries:?}"
    );
}

const SCRIPT_A: &str = r#"
fn on_start(state) { decide("A", [add("drum", "kick", #{ bars: 1 })]) }
fn on_phrase(state) { decide("A", [set_layer("drum", #{ gain: 0.5 })]) }
"#;

const SCRIPT_B: &str = r#"
fn on_phrase(state) { decide("B", [set_layer("drum", #{ gain: 0.6 })]) }
"#;

async fn next_decision(events: &mut Events) -> Value {
    wait_for(events, Duration::from_secs(60), |topic, data| {
        topic == "decision" && data["kind"] == "phrase"
    })
    .await
}

/// Writes a script the way an editor saves: a new file renamed over the old one.
fn save(dir: &Path, source: &str) {
    let tmp = dir.join("dj").join(".default.rhai.tmp");
    std::fs::write(&tmp, source).unwrap();
    std::fs::rename(&tmp, dir.join("dj").join("default.rhai")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_script_mid_set_changes_the_next_phrase_and_errors_keep_the_old_one() {
    let scripts = tempfile::tempdir().unwrap();
    std::fs::create_dir(scripts.path().join("dj")).unwrap();
    save(scripts.path(), SCRIPT_A);
    let daemon = fast("uk_drill", Some(scripts.path()));
    let mut client = daemon.client();
    let mut events = daemon.events(&["decision", "script"]).await;
    let started = client.call("dj.start", json!({ "seed": 1 })).await.unwrap();
    assert_eq!(started["decision"]["reason"], "A", "{started}");
    assert_eq!(next_decision(&mut events).await["reason"], "A");

    // A save takes effect from the next phrase.
    save(scripts.path(), SCRIPT_B);
    wait_for(&mut events, Duration::from_secs(10), |topic, data| {
        topic == "script" && data["kind"] == "loaded"
    })
    .await;
    assert_eq!(next_decision(&mut events).await["reason"], "B");

    // A script that does not compile: reported with file and line, B plays on.
    save(
        scripts.path(),
        "fn on_phrase(state) {\n  decide(\"C\", [\n}\n",
    );
    let error = wait_for(&mut events, Duration::from_secs(10), |topic, _| {
        topic == "script.error"
    })
    .await;
    assert!(
        error["script"]
            .as_str()
            .unwrap()
            .ends_with("dj/default.rhai"),
        "{error}"
    );
    assert!(error["line"].as_u64().unwrap() >= 2, "{error}");
    assert_eq!(next_decision(&mut events).await["reason"], "B");

    // One that throws when it runs: reported, and B takes over again.
    save(
        scripts.path(),
        "fn on_phrase(state) {\n  let x = state.nothing.here;\n  decide(\"D\", [])\n}\n",
    );
    let error = wait_for(&mut events, Duration::from_secs(30), |topic, _| {
        topic == "script.error"
    })
    .await;
    assert_eq!(error["line"], 2, "{error}");
    let decision = next_decision(&mut events).await;
    assert_eq!(decision["reason"], "B", "{decision}");
    let status = client.call("script.status", Value::Null).await.unwrap();
    assert!(status["errors"].as_u64().unwrap() >= 2, "{status}");
    assert!(
        status["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "on_phrase(state)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scripts_are_stopped_within_50_ms_and_the_set_plays_on() {
    let scripts = tempfile::tempdir().unwrap();
    std::fs::create_dir(scripts.path().join("dj")).unwrap();
    save(scripts.path(), SCRIPT_A);
    let daemon = fast("uk_drill", Some(scripts.path()));
    let mut client = daemon.client();
    let mut events = daemon.events(&["decision", "script"]).await;
    client.call("dj.start", json!({ "seed": 1 })).await.unwrap();
    assert_eq!(next_decision(&mut events).await["reason"], "A");
    let hostile = [
        ("an endless loop", "fn on_phrase(state) { loop { } }"),
        (
            "deep recursion",
            "fn dive(n) { dive(n + 1) }\nfn on_phrase(state) { dive(0) }",
        ),
        (
            "a 100 MB string",
            "fn on_phrase(state) { let s = \"x\"; while s.len() < 100000000 { s += s; } s }",
        ),
        (
            "a huge array",
            "fn on_phrase(state) { let a = []; loop { a.push(1); } }",
        ),
    ];
    for (what, source) in hostile {
        let before = client.call("transport.get", Value::Null).await.unwrap()["position"]["frame"]
            .as_u64()
            .unwrap();
        save(scripts.path(), source);
        let error = wait_for(&mut events, Duration::from_secs(30), |topic, _| {
            topic == "script.error"
        })
        .await;
        let ran = error["ran_ms"].as_f64().unwrap();
        assert!(ran < 50.0, "{what} ran {ran} ms: {error}");
        let decision = next_decision(&mut events).await;
        assert_eq!(
            decision["reason"], "A",
            "{what}: the previous script plays on"
        );
        let after = client.call("transport.get", Value::Null).await.unwrap()["position"]["frame"]
            .as_u64()
            .unwrap();
        assert!(after > before, "{what}: the audio kept running");
    }
    let layers = client.call("layer.list", Value::Null).await.unwrap();
    assert_eq!(layers["layers"].as_array().unwrap().len(), 1, "{layers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_are_journaled_and_the_script_reads_them() {
    let scripts = tempfile::tempdir().unwrap();
    std::fs::create_dir(scripts.path().join("dj")).unwrap();
    save(
        scripts.path(),
        "fn on_phrase(state) { decide(`rated ${state.ratings.count} at ${state.ratings.average}`, []) }",
    );
    let daemon = fast("uk_drill", Some(scripts.path()));
    let mut client = daemon.client();
    let mut events = daemon.events(&["decision", "rating"]).await;
    let started = client.call("dj.start", json!({ "seed": 1 })).await.unwrap();
    assert_eq!(started["decision"]["reason"], "rated 0 at ", "{started}");
    let err = client
        .call("rate", json!({ "score": 9 }))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("score"), "{err}");
    for score in [5, 3] {
        let reply = client
            .call(
                "rate",
                json!({ "score": score, "comment": "from the floor" }),
            )
            .await
            .unwrap();
        assert_eq!(reply["rating"]["style"], "uk_drill", "{reply}");
    }
    wait_for(&mut events, Duration::from_secs(10), |topic, _| {
        topic == "rating"
    })
    .await;
    let decision = wait_for(&mut events, Duration::from_secs(60), |topic, data| {
        topic == "decision" && data["reason"].as_str().unwrap_or("").starts_with("rated 2")
    })
    .await;
    assert_eq!(decision["reason"], "rated 2 at 4.0", "{decision}");
    let journal = std::fs::read_to_string(daemon.dir.path().join("state/ratings.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 2, "{journal}");
    assert!(
        journal.contains("\"comment\":\"from the floor\""),
        "{journal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_profile_mid_set_reaches_the_next_phrase() {
    let scripts = tempfile::tempdir().unwrap();
    std::fs::create_dir(scripts.path().join("dj")).unwrap();
    save(
        scripts.path(),
        "fn on_phrase(state) { decide(state.profile.mood[0], []) }",
    );
    let profiles = tempfile::tempdir().unwrap();
    let original =
        std::fs::read_to_string(djinn_tests::repo().join("profiles/uk_drill.toml")).unwrap();
    let file = profiles.path().join("uk_drill.toml");
    std::fs::write(&file, &original).unwrap();
    let daemon = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        args: vec![
            "--fast".into(),
            "--profile".into(),
            "uk_drill".into(),
            "--scripts".into(),
            scripts.path().display().to_string(),
            "--profiles".into(),
            profiles.path().display().to_string(),
        ],
        ..Options::default()
    });
    let mut client = daemon.client();
    let mut events = daemon.events(&["decision", "profile"]).await;
    let started = client.call("dj.start", json!({ "seed": 1 })).await.unwrap();
    let first = started["decision"]["reason"].as_str().unwrap().to_owned();
    assert_ne!(first, "sentinel");
    let edited = original
        .lines()
        .map(|l| {
            if l.starts_with("mood") {
                "mood = [\"sentinel\"]"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, edited).unwrap();
    wait_for(&mut events, Duration::from_secs(10), |topic, data| {
        topic == "profile" && data["kind"] == "reloaded"
    })
    .await;
    assert_eq!(next_decision(&mut events).await["reason"], "sentinel");
}
