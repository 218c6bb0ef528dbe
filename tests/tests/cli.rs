//! The `djinn` command against a running djinnd, as a user at a shell meets it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use djinn_tests::{Djinnd, bin, scrub};
use serde_json::Value;

fn djinn(daemon: Option<&Djinnd>, args: &[&str]) -> Output {
    let mut command = Command::new(bin("djinn"));
    scrub(&mut command);
    if let Some(daemon) = daemon {
        command.args(["--endpoint", &daemon.control, "--events", &daemon.events]);
    }
    command.args(args).output().expect("run djinn")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "djinn failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_profile_bpm_key_and_raw() {
    let daemon = Djinnd::start();
    let status = stdout(&djinn(Some(&daemon), &["status"]));
    assert!(status.starts_with("djinnd "), "{status}");
    assert!(status.contains("profile    techno_minimal"), "{status}");
    assert!(
        status.contains("transport  126.0 BPM  4/4  A minor  stopped"),
        "{status}"
    );
    assert!(status.contains("audio      none off"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("transport   running")),
        "{status}"
    );

    let json: Value =
        serde_json::from_str(&stdout(&djinn(Some(&daemon), &["--json", "status"]))).unwrap();
    assert_eq!(json["transport"]["tempo"], 126.0);

    let out = stdout(&djinn(Some(&daemon), &["bpm", "128"]));
    assert!(out.starts_with("128.0 BPM"), "{out}");
    let out = stdout(&djinn(Some(&daemon), &["key", "F minor"]));
    assert!(out.contains("128.0 BPM  4/4  F minor"), "{out}");

    let list = stdout(&djinn(Some(&daemon), &["profile"]));
    assert_eq!(list.lines().count(), 14, "header and 13 profiles:\n{list}");
    assert!(
        list.lines().any(|l| l.starts_with("* techno_minimal")),
        "{list}"
    );
    let out = stdout(&djinn(Some(&daemon), &["profile", "deep_house"]));
    assert_eq!(out.trim(), "profile deep_house: 124.0 BPM, C minor, 4/4");

    let raw = stdout(&djinn(
        Some(&daemon),
        &["raw", "transport.set", r#"{"meter":"6/8"}"#],
    ));
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["meter"], "6/8");
}

#[test]
fn refusals_exit_1_and_a_missing_daemon_exits_2_with_one_line() {
    let daemon = Djinnd::start();
    let out = djinn(Some(&daemon), &["bpm", "500"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "djinn: tempo: 500 BPM is out of range: djinn plays from 20 to 300 BPM (-32602)"
    );
    drop(daemon);

    let endpoint = format!("tcp://127.0.0.1:{}", djinn_tests::closed_port());
    let out = djinn(
        None,
        &["--endpoint", &endpoint, "--timeout", "300", "status"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is djinnd running?"), "{stderr}");
}

#[test]
fn events_are_followed_as_lines() {
    let daemon = Djinnd::start();
    let mut follower = Command::new(bin("djinn"));
    scrub(&mut follower);
    let mut follower = follower
        .args(["--events", &daemon.events, "events", "transport"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Poke until the subscription is live (PUB drops what comes before it).
    let mut line = None;
    for tempo in 100..120 {
        djinn(Some(&daemon), &["bpm", &tempo.to_string()]);
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            line = Some(l);
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let line = line.expect("djinn events printed a line");
    assert!(
        line.contains("transport") && line.contains("\"tempo\":1"),
        "{line}"
    );
}

#[test]
fn completions_are_generated() {
    let out = stdout(&djinn(None, &["completions", "bash"]));
    assert!(
        out.contains("djinn") && out.contains("status"),
        "{}",
        &out[..200.min(out.len())]
    );
}
