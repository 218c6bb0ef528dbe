//! State kept honestly under hostile conditions, against a real djinnd: a typo saved in the
//! active profile, a full disk under the recordings and state.json, a mood script that
//! fails when it runs, a runaway script. Every wait polls with a generous deadline: these
//! run on a loaded 2-core host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use djinn_daemon::client::Client;
use djinn_tests::{Djinnd, Options, wait_for};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `method` until `want` holds for its result, up to [`DEADLINE`].
async fn poll(client: &mut Client, method: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let result = client.call(method, Value::Null).await.unwrap();
        if want(&result) {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "{method} never got there: {result}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes a file the way an editor saves: a new file renamed over the old one.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("saving");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The shipped dub profile, renamed, with its default tempo set to `tempo`.
fn custom_profile(tempo: u32) -> String {
    let dub = std::fs::read_to_string(djinn_tests::repo().join("profiles/dub.toml")).unwrap();
    dub.replace("default = 70", &format!("default = {tempo}"))
        .replace("Dub: heavy", "Basement dub: heavy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_in_the_active_profile_keeps_its_last_good_version_until_it_is_fixed() {
    let profiles = tempfile::tempdir().unwrap();
    let file = profiles.path().join("basement.toml");
    std::fs::write(&file, custom_profile(66)).unwrap();
    let daemon = Djinnd::start_with(Options {
        args: vec![
            "--profile".into(),
            "basement".into(),
            "--profiles".into(),
            profiles.path().display().to_string(),
        ],
        ..Options::default()
    });
    let mut client = daemon.client();
    let mut events = daemon.events(&["profile"]).await;
    let transport = client.call("transport.get", Value::Null).await.unwrap();
    assert_eq!(transport["tempo"], 66.0, "{transport}");

    // A typo on line 3: the profile stays, with its tempo; the error is published and shown.
    let broken = custom_profile(66).replacen("meter = \"4/4\"", "meter = 4/4\"", 1);
    save(&file, &broken);
    let error = wait_for(&mut events, DEADLINE, |topic, data| {
        topic == "profile" && data["kind"] == "error"
    })
    .await;
    assert!(
        error["path"].as_str().unwrap().ends_with("basement.toml"),
        "{error}"
    );
    assert_eq!(error["line"], 3, "{error}");
    assert_eq!(error["kept"], "basement", "{error}");
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(status["profile"], "basement", "{status}");
    let shown = status["profile_errors"][0].as_str().unwrap_or_default();
    assert!(shown.contains("basement.toml:3:"), "{status}");
    let active = client.call("profile.get", Value::Null).await.unwrap();
    assert_eq!(active["name"], "basement");
    assert!(
        active["description"]
            .as_str()
            .unwrap()
            .starts_with("Basement dub"),
        "{active}"
    );
    let list = client.call("profile.list", Value::Null).await.unwrap();
    assert_eq!(list["active"], "basement");
    assert!(!list["errors"].as_array().unwrap().is_empty(), "{list}");
    let transport = client.call("transport.get", Value::Null).await.unwrap();
    assert_eq!(transport["tempo"], 66.0, "{transport}");

    // Fixed, with a new default tempo: applied, and the error is gone.
    save(&file, &custom_profile(74));
    poll(&mut client, "profile.get", |p| {
        p["tempo"]["default"] == 74.0
    })
    .await;
    poll(&mut client, "transport.get", |t| t["tempo"] == 74.0).await;
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(status["profile"], "basement", "{status}");
    assert_eq!(status["profile_errors"], json!([]), "{status}");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`, or says why not (not root, no mount).
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot mount a tmpfs".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Tmpfs(dir.to_owned()))
    }

    /// Gives the file system `size`: space returns.
    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a process still holding a file there cannot keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_recording_and_saving_resume_when_space_returns() {
    let root = tempfile::tempdir().unwrap();
    let state_dir = root.path().join("state");
    // About eight seconds of recording fill it.
    let disk = match Tmpfs::mount(&state_dir, "3m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED: the disk-full test needs a tmpfs: {why}");
            return;
        }
    };
    let daemon = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        state_dir: Some(state_dir.clone()),
        ..Options::default()
    });
    let mut client = daemon.client();
    let mut events = daemon.events(&["health"]).await;

    // The disk fills: the status stops saying it records, and says why.
    let failed = wait_for(&mut events, DEADLINE, |topic, data| {
        topic == "health" && data["kind"] == "recording_failed"
    })
    .await;
    assert!(
        failed["error"].as_str().unwrap().contains("No space left"),
        "{failed}"
    );
    let status = poll(&mut client, "daemon.status", |s| {
        s["audio"]["recording_error"].is_string()
    })
    .await;
    assert_eq!(status["audio"]["recording"], Value::Null, "{status}");
    assert_eq!(status["audio"]["state"], "running", "{status}");

    // The set plays on.
    let frame = |t: &Value| t["position"]["frame"].as_u64().unwrap();
    client.call("transport.start", Value::Null).await.unwrap();
    let before = frame(&client.call("transport.get", Value::Null).await.unwrap());
    poll(&mut client, "transport.get", |t| frame(t) > before + 48_000).await;

    // A change to save: the write fails, is reported, and leaves no temporary file.
    client
        .call("transport.set", json!({ "tempo": 131.0 }))
        .await
        .unwrap();
    let not_saved = wait_for(&mut events, DEADLINE, |topic, data| {
        topic == "health" && data["kind"] == "state_not_saved"
    })
    .await;
    assert!(
        not_saved["error"].as_str().unwrap().contains("state.json"),
        "{not_saved}"
    );
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert!(status["state"]["error"].is_string(), "{status}");
    assert!(
        !state_dir.join("state.json.tmp").exists(),
        "a temporary state file was left behind"
    );

    // Space returns: recording starts a new file, the state is saved.
    disk.resize("64m");
    let resumed = wait_for(&mut events, DEADLINE, |topic, data| {
        topic == "health" && data["kind"] == "recording_resumed"
    })
    .await;
    let path = resumed["path"].as_str().unwrap().to_owned();
    let status = poll(&mut client, "daemon.status", |s| {
        s["audio"]["recording"] == path.as_str() && s["state"]["error"].is_null()
    })
    .await;
    assert_eq!(status["audio"]["recording_error"], Value::Null, "{status}");
    let grown = |p: &str| std::fs::metadata(p).map_or(0, |m| m.len());
    let deadline = Instant::now() + DEADLINE;
    while grown(&path) < 100_000 {
        assert!(Instant::now() < deadline, "the new recording does not grow");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(state_dir.join("state.json")).unwrap())
            .unwrap();
    assert_eq!(saved["tempo"], 131.0, "{saved}");
    assert!(!state_dir.join("state.json.tmp").exists());
    drop(daemon);
}

/// The shipped mood script, so that a test can start from a version that works.
fn shipped_moods() -> String {
    std::fs::read_to_string(djinn_tests::repo().join("scripts/moods/default.rhai")).unwrap()
}

fn fast_with_scripts(scripts: &Path) -> Djinnd {
    Djinnd::start_with(Options {
        audio: Some("offline".into()),
        args: vec![
            "--fast".into(),
            "--profile".into(),
            "techno_minimal".into(),
            "--scripts".into(),
            scripts.display().to_string(),
        ],
        ..Options::default()
    })
}

/// Whether a decision added or replaced a layer that now plays.
fn adds_a_layer(decision: &Value) -> bool {
    decision["actions"].as_array().is_some_and(|actions| {
        actions.iter().any(|a| {
            (a["action"] == "add" || a["action"] == "replace")
                && !a["layer"].is_null()
                && a["error"].is_null()
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mood_script_that_fails_when_it_runs_is_rolled_back_and_the_dj_plays_on() {
    let scripts = tempfile::tempdir().unwrap();
    let moods = scripts.path().join("moods");
    std::fs::create_dir(&moods).unwrap();
    let file = moods.join("default.rhai");
    std::fs::write(&file, shipped_moods()).unwrap();
    let daemon = fast_with_scripts(scripts.path());
    let mut client = daemon.client();
    let mut events = daemon.events(&["decision", "script"]).await;
    let started = client.call("dj.start", json!({ "seed": 3 })).await.unwrap();
    assert!(adds_a_layer(&started["decision"]), "{started}");

    // Compiles, but throws on every call (line 2).
    save(
        &file,
        "fn interpret(prompt, profile) {\n  throw \"no moods today\";\n}\n",
    );
    wait_for(&mut events, DEADLINE, |topic, data| {
        topic == "script" && data["kind"] == "loaded" && data["style"].is_null()
    })
    .await;
    let error = wait_for(&mut events, Duration::from_secs(120), |topic, data| {
        topic == "script.error"
            && data["script"]
                .as_str()
                .is_some_and(|s| s.ends_with("moods/default.rhai"))
    })
    .await;
    assert_eq!(error["line"], 2, "{error}");
    let reverted = wait_for(&mut events, DEADLINE, |topic, data| {
        topic == "script" && data["kind"] == "reverted"
    })
    .await;
    assert!(
        reverted["error"]
            .as_str()
            .unwrap()
            .contains("no moods today"),
        "{reverted}"
    );

    // The DJ goes on adding layers with the version that worked.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let decision = wait_for(&mut events, Duration::from_secs(120), |topic, _| {
            topic == "decision"
        })
        .await;
        if adds_a_layer(&decision) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no layer added since the rollback: {decision}"
        );
    }
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert!(
        status["generator"]["mood_script"]
            .as_str()
            .unwrap()
            .ends_with("moods/default.rhai"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_loop_is_reported_at_its_line() {
    let scripts = tempfile::tempdir().unwrap();
    std::fs::create_dir(scripts.path().join("dj")).unwrap();
    let file = scripts.path().join("dj/default.rhai");
    std::fs::write(&file, "fn on_phrase(state) { decide(\"calm\", []) }\n").unwrap();
    let daemon = fast_with_scripts(scripts.path());
    let mut client = daemon.client();
    let mut events = daemon.events(&["decision", "script"]).await;
    client.call("dj.start", json!({ "seed": 1 })).await.unwrap();
    save(
        &file,
        "fn on_phrase(state) {\n  let n = 0;\n  loop {\n    n += 1;\n  }\n}\n",
    );
    let error = wait_for(&mut events, Duration::from_secs(120), |topic, _| {
        topic == "script.error"
    })
    .await;
    let line = error["line"].as_u64().unwrap();
    assert!((3..=4).contains(&line), "the loop is on lines 3-4: {error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("default.rhai:{line}:")),
        "{error}"
    );
    // Rolled back: the calm version decides the next phrase.
    let decision = wait_for(&mut events, Duration::from_secs(120), |topic, data| {
        topic == "decision" && data["kind"] == "phrase"
    })
    .await;
    assert_eq!(decision["reason"], "calm", "{decision}");
}
