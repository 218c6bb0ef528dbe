//! djinnd under systemd: the unit passes `systemd-analyze verify`, and the daemon sends
//! READY once its control socket is bound, feeds the watchdog, and says STOPPING on exit.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use djinn_tests::{Djinnd, Options, bin, repo};

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("systemd/djinnd.service")).unwrap();
    for required in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "SupplementaryGroups=audio",
        "StateDirectory=djinn",
        "RuntimeDirectory=djinn",
        "ConfigurationDirectory=djinn",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitRTPRIO=",
        "LimitMEMLOCK=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(unit.contains(required), "djinnd.service lacks {required}");
    }
    // verify insists that ExecStart exists: point it at the binary this build made.
    let unit = unit.replace(
        "/usr/local/bin/djinnd",
        &bin("djinnd").display().to_string(),
    );
    std::fs::write(dir.path().join("djinnd.service"), unit).unwrap();
    std::fs::copy(
        repo().join("systemd/jackd.service"),
        dir.path().join("jackd.service"),
    )
    .unwrap();
    for name in ["djinnd.service", "jackd.service"] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(name))
            .output()
            .expect("systemd-analyze (make test installs systemd)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{name}:\n{stderr}"
        );
    }
}

fn receive(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    socket
        .recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let started = Instant::now();
    let mut daemon = Djinnd::start_with(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "200000".into()),
        ],
        ..Options::default()
    });

    let first = receive(&socket, Duration::from_secs(5)).expect("a notification");
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first message: {first:?}"
    );
    assert!(first.contains("STATUS=serving on ipc://"), "{first:?}");
    eprintln!("start to READY: {:?} (debug build)", started.elapsed());

    // 200 ms watchdog: djinnd pings every 100 ms.
    let mut pings = 0;
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(600) {
        if receive(&socket, Duration::from_millis(300)).is_some_and(|m| m.trim() == "WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        pings >= 3,
        "{pings} watchdog pings in 600 ms:\n{}",
        daemon.log()
    );

    daemon.signal(libc::SIGTERM);
    let mut stopping = false;
    while let Some(message) = receive(&socket, Duration::from_secs(2)) {
        if message.lines().any(|l| l == "STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 sent");
    assert!(daemon.wait_exit(Duration::from_secs(2)).unwrap().success());
}
