//! djinn and MIDI clock on a real JACK server: `jack_midi_clock` (driven by JACK transport)
//! is the external master djinn follows, and `djinn-jack-probe`, a second JACK client,
//! timestamps the clock's ticks and djinn's output to the frame.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use djinn_daemon::client::{Client, Events};
use djinn_tests::{Djinnd, Jackd, Options, bin};
use serde_json::{Value, json};

const BAR_TICKS: usize = 96;
/// jack_midi_clock's output port.
const CLOCK: &str = "jack_midi_clock:mclk_out";
/// A millisecond at 48 kHz.
const MS: i64 = 48;

/// A child process killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `jack_midi_clock` at `bpm` (none: the timebase master's tempo), with `jitter` percent.
fn jack_midi_clock(jackd: &Jackd, bpm: Option<f64>, jitter: u32) -> Peer {
    // NOTE: a fresh server can say "running" a moment before it takes clients: a clock
    // that could not connect exits, and is started again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut command = Command::new("jack_midi_clock");
        command
            .envs(jackd.env())
            .args(["-d", "0.2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(bpm) = bpm {
            command.args(["-b", &bpm.to_string()]);
        }
        if jitter > 0 {
            command.args(["-J", &jitter.to_string()]);
        }
        let mut peer = Peer(
            command
                .spawn()
                .expect("jack_midi_clock (make test installs it)"),
        );
        while Instant::now() < deadline {
            if jackd.ports().lines().any(|l| l.trim() == CLOCK) {
                return peer;
            }
            if let Ok(Some(_)) = peer.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            Instant::now() < deadline,
            "jack_midi_clock did not start:\n{}",
            jackd.ports()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one command to `jack_transport` (interactive, so through its stdin).
fn jack_transport(jackd: &Jackd, command: &str) {
    let mut child = Command::new("jack_transport")
        .envs(jackd.env())
        .args(["-s", &jackd.name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("jack_transport");
    let _ = writeln!(child.stdin.take().expect("stdin"), "{command}");
    let _ = child.wait();
}

/// Locates JACK transport at 0 and starts it (a short pause between, or jack_midi_clock
/// sends Continue instead of Start).
fn play_from_the_top(jackd: &Jackd) {
    jack_transport(jackd, "locate 0");
    std::thread::sleep(Duration::from_millis(60));
    jack_transport(jackd, "play");
}

/// Disconnects two ports, as a user would in a patchbay.
fn jack_disconnect(jackd: &Jackd, from: &str, to: &str) {
    let status = Command::new("jack_disconnect")
        .envs(jackd.env())
        .args(["-s", &jackd.name, from, to])
        .status()
        .expect("jack_disconnect");
    assert!(status.success(), "jack_disconnect {from} {to}");
}

/// Whether `jack_lsp -c` lists `to` under `from`.
fn connected(jackd: &Jackd, from: &str, to: &str) -> bool {
    let out = Command::new("jack_lsp")
        .args(["-s", &jackd.name, "-c"])
        .output()
        .expect("jack_lsp");
    let mut port = String::new();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| match line.strip_prefix("   ") {
            Some(peer) => port == from && peer == to,
            None => {
                port = line.to_owned();
                false
            }
        })
}

/// Waits up to `within` for `from` to be connected to `to`.
async fn wait_connected(jackd: &Jackd, from: &str, to: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if connected(jackd, from, to) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The measuring client, recording until it is dropped or its time is up.
struct Probe {
    _peer: Peer,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Probe {
    fn start(jackd: &Jackd, midi: &str, audio: Option<&str>, seconds: f64) -> Probe {
        let mut command = Command::new(bin("djinn-jack-probe"));
        command
            .envs(jackd.env())
            .args(["--midi", midi, "--seconds", &seconds.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(port) = audio {
            command.args(["--audio", port, "--threshold", "0.25"]);
        }
        let mut child = command.spawn().expect("djinn-jack-probe");
        let stdout = child.stdout.take().expect("probe stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let lines = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if value["ready"] == true {
                    let _ = ready_tx.send(());
                } else {
                    lines.lock().unwrap().push(value);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the probe connects within 5 s");
        Probe {
            _peer: Peer(child),
            seen,
        }
    }

    /// Frames of the MIDI messages whose first byte is `status`.
    fn midi(&self, status: u8) -> Vec<u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["midi"][0] == status)
            .filter_map(|v| v["frame"].as_u64())
            .collect()
    }

    fn onsets(&self) -> Vec<u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v.get("onset").is_some())
            .filter_map(|v| v["frame"].as_u64())
            .collect()
    }
}

async fn next(events: &mut Events, topic: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (got, event) = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {topic} event within {within:?}"))
            .unwrap();
        if got == topic {
            return event["data"].clone();
        }
    }
}

/// A click: one sample at 0.5, then silence.
fn click() -> Bytes {
    let mut bytes = Vec::with_capacity(4_800 * 8);
    for i in 0..4_800 {
        let v: f32 = if i == 0 { 0.5 } else { 0.0 };
        bytes.extend_from_slice(&v.to_le_bytes());
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Bytes::from(bytes)
}

async fn launch_click(client: &mut Client, events: &mut Events) -> u64 {
    let params = json!({ "quantize": "bar", "group": "drums", "loop": false });
    let layer = client
        .call_with_payload("layer.add", params, vec![click()])
        .await
        .unwrap()
        .0;
    let started = next(events, "layer.started", Duration::from_secs(10)).await;
    assert_eq!(started["id"], layer["id"]);
    started["beat"].as_f64().unwrap() as u64
}

/// The clock's ticks since its last Start, and the frames of its bar lines.
///
/// NOTE: a client that misses a cycle (an xrun) misses that cycle's ticks; the probe's
/// count is kept by the gaps between ticks, as djinn's own is, and a bar line whose tick
/// the probe missed is left out.
fn bar_ticks(probe: &Probe) -> Result<(Vec<u64>, Vec<u64>, u64), String> {
    // A Start the probe missed (in a cycle it lost) leaves nothing to count from.
    let start = *probe
        .midi(0xFA)
        .last()
        .ok_or("the probe saw no Start from jack_midi_clock")?;
    let mut ticks: Vec<u64> = probe
        .midi(0xF8)
        .into_iter()
        .filter(|&t| t > start)
        .collect();
    // In time order, whatever order the probe's reports came in.
    ticks.sort_unstable();
    let mut gaps: Vec<u64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let typical = gaps.get(gaps.len() / 2).copied().unwrap_or(1).max(1) as f64;
    let mut index = 0u64;
    let mut bars = Vec::new();
    let ratio = |k: usize| (ticks[k] - ticks[k - 1]) as f64 / typical;
    for (k, &tick) in ticks.iter().enumerate() {
        if k > 0 {
            let mut step = ratio(k).round().max(1.0) as u64;
            // A long gap closed by a short one is a tick the clock sent late (it missed a
            // cycle), not one the probe missed: the ticks since are one fewer.
            if step > 1 && k + 1 < ticks.len() && ratio(k + 1) < 0.75 {
                step -= 1;
            }
            index += step;
        }
        if index.is_multiple_of(BAR_TICKS as u64) {
            bars.push(tick);
        }
    }
    Ok((ticks, bars, index))
}

fn following(jackd: &Jackd) -> Djinnd {
    Djinnd::start_with(Options {
        audio: Some("jack".into()),
        args: vec!["--jack-name".into(), "djinn".into()],
        env: jackd.env(),
        config: "[transport]\nsource = \"midi\"\nclock_in = [\"jack_midi_clock:mclk_out\"]\n"
            .into(),
        ..Options::default()
    })
}

async fn wait_running(client: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = client.call("daemon.status", Value::Null).await.unwrap();
        if status["audio"]["state"] == "running" {
            return;
        }
        assert!(Instant::now() < deadline, "audio not running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn djinn_locks_to_jack_midi_clock_and_launches_on_its_bar_one() {
    let jackd = Jackd::start_alone(true, 256);
    // The first clock runs before djinnd starts: the config connects it.
    let mut clock = Some(jack_midi_clock(&jackd, Some(90.0), 0));
    let daemon = following(&jackd);
    let mut client = daemon.client();
    wait_running(&mut client).await;
    for (bpm, jitter) in [
        (90.0, 0),
        (123.4, 0),
        (128.0, 0),
        (174.0, 0),
        (90.0, 10),
        (123.4, 10),
        (128.0, 10),
        (174.0, 10),
    ] {
        jack_transport(&jackd, "stop");
        // Each run brings its own clock at its own tempo, and djinn connects it: its port
        // is in the configuration.
        let _clock = clock
            .take()
            .unwrap_or_else(|| jack_midi_clock(&jackd, Some(bpm), jitter));
        assert!(
            wait_connected(&jackd, CLOCK, "djinn:clock_in", Duration::from_secs(3)).await,
            "the clock at {bpm} BPM is not connected"
        );
        // NOTE: on this non-realtime server a client now and then misses a cycle (an
        // xrun), and the probe then misses what happened in it; a run that fails with a
        // cycle lost is done again (up to seven times: a stalled host can spoil several
        // runs in a row), a run that fails without one fails the test.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let xruns = xrun_count(&mut client).await;
            match follow_run(&jackd, &daemon, &mut client, bpm, jitter).await {
                Ok(report) => {
                    eprintln!("{report}");
                    break;
                }
                Err(failure) if attempt < 8 && xrun_count(&mut client).await > xruns => {
                    eprintln!("redone after an xrun: {failure}");
                }
                // NOTE: a -J stream's phase is a random walk, and how soon it carries its
                // tempo to ±0.1 BPM varies from one stream to the next: a late lock is tried
                // once more on a fresh stretch of it.
                Err(failure) if attempt < 2 && jitter > 0 && failure.starts_with("locked late") => {
                    eprintln!("redone on a fresh stretch of the stream: {failure}");
                }
                Err(failure) => panic!(
                    "{failure} (cycles lost before the run: {xruns}, after: {})",
                    xrun_count(&mut client).await
                ),
            }
        }
    }
}

/// Cycles lost so far: the xruns the server reported, and the frames djinn found its clock
/// skipped with no period (a cycle it missed, reported or not).
async fn xrun_count(client: &mut Client) -> u64 {
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    let audio = &status["audio"];
    audio["xruns"].as_u64().unwrap_or(0) + audio["frames_skipped"].as_u64().unwrap_or(0)
}

/// One run against the clock now connected: a fresh follower, play from the top, lock,
/// two bar launches. Returns what was measured, or why it falls short.
async fn follow_run(
    jackd: &Jackd,
    daemon: &Djinnd,
    client: &mut Client,
    bpm: f64,
    jitter: u32,
) -> Result<String, String> {
    jack_transport(jackd, "stop");
    // A fresh follower for each run.
    for source in ["internal", "midi"] {
        client
            .call("transport.set", json!({ "source": source }))
            .await
            .unwrap();
    }
    let mut events = daemon
        .events(&["clock.locked", "layer.started", "transport.started"])
        .await;
    let probe = Probe::start(jackd, CLOCK, Some("djinn:drums_L"), 30.0);
    play_from_the_top(jackd);
    let started = next(&mut events, "transport.started", Duration::from_secs(5)).await;
    assert_eq!(started["from"], "start");
    let locked = next(&mut events, "clock.locked", Duration::from_secs(20)).await;
    let lock_beats = locked["after_beats"].as_f64().unwrap();
    let lock_error = (locked["tempo"].as_f64().unwrap() - bpm).abs();
    let first = launch_click(client, &mut events).await;
    let second = launch_click(client, &mut events).await;
    assert!(
        second > first,
        "two bar launches, on beats {first} and {second}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    let clock_status = status["audio"]["clock"].clone();
    let (ticks, bars, counted) = bar_ticks(&probe)?;
    let onsets = probe.onsets();
    if onsets.len() != 2 {
        return Err(format!("{bpm} BPM: two clicks heard: {onsets:?}"));
    }
    let mut phase = Vec::new();
    for onset in &onsets {
        let bar = bars
            .iter()
            .min_by_key(|&&b| (b as i64 - *onset as i64).abs())
            .unwrap();
        phase.push(*onset as i64 - *bar as i64);
    }
    // What the stream itself carried since its Start (a jittered clock's tempo wanders
    // with it).
    let carried =
        60.0 * 48_000.0 * counted as f64 / (24.0 * (ticks[ticks.len() - 1] - ticks[0]) as f64);
    let tempo = clock_status["tempo"].as_f64().unwrap();
    let report = format!(
        "{bpm:>6} BPM, jitter {jitter:>2} %: locked after {lock_beats:.2} beats ({lock_error:.3} BPM off), \
         now {tempo:.3} BPM (stream {carried:.2}), launch phase {phase:?} frames, {clock_status}"
    );
    if clock_status["lock"] != "locked" {
        return Err(format!("not locked: {report}"));
    }
    if phase.iter().any(|error| error.abs() > MS) {
        return Err(format!("a bar launch off the clock's bar: {report}"));
    }
    // Each shortfall is returned, not asserted: one that follows a lost cycle is done again.
    if jitter == 0 {
        if lock_beats > 1.0 + 1e-9 {
            return Err(format!("locked late: {report}"));
        }
        if lock_error > 0.1 {
            return Err(format!("off at lock: {report}"));
        }
        if (tempo - bpm).abs() > 0.1 {
            return Err(format!("off tempo: {report}"));
        }
    } else {
        // NOTE: jack_midi_clock -J jitters each interval on its own, so the phase wanders
        // and the tempo the stream carries over n ticks varies as 1/√n: ±0.1 BPM needs
        // more beats than with ticks scattered about a grid (the unit tests cover those).
        if lock_beats > 16.0 {
            return Err(format!("locked late: {report}"));
        }
        if (tempo - carried).abs() > 0.6 {
            return Err(format!("off the stream's tempo: {report}"));
        }
    }
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_that_comes_later_is_connected_and_a_connection_undone_by_hand_stays_undone() {
    let jackd = Jackd::start_alone(true, 256);
    let daemon = following(&jackd);
    let mut client = daemon.client();
    wait_running(&mut client).await;
    let to = "djinn:clock_in";
    let waiting = |status: Value| status["audio"]["connections_waiting"].clone();
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(waiting(status), json!([[CLOCK, to]]));
    let clock = jack_midi_clock(&jackd, Some(120.0), 0);
    assert!(
        wait_connected(&jackd, CLOCK, to, Duration::from_secs(3)).await,
        "a clock that starts after djinn is not connected:\n{}",
        daemon.log()
    );
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(waiting(status), json!([]));
    // Undone by hand, it stays undone.
    jack_disconnect(&jackd, CLOCK, to);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!connected(&jackd, CLOCK, to), "djinn undid a disconnection");
    // The clock goes away and comes back: djinn connects it again.
    drop(clock);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(waiting(status), json!([[CLOCK, to]]), "waiting again");
    let _clock = jack_midi_clock(&jackd, Some(120.0), 0);
    assert!(
        wait_connected(&jackd, CLOCK, to, Duration::from_secs(3)).await,
        "a clock that came back is not connected:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_continue_and_a_lost_clock_are_followed() {
    let jackd = Jackd::start_alone(true, 256);
    let clock = jack_midi_clock(&jackd, Some(128.0), 0);
    let daemon = following(&jackd);
    let mut client = daemon.client();
    wait_running(&mut client).await;
    let mut events = daemon
        .events(&[
            "clock.locked",
            "clock.lost",
            "transport.started",
            "transport.stopped",
        ])
        .await;
    play_from_the_top(&jackd);
    let started = next(&mut events, "transport.started", Duration::from_secs(5)).await;
    assert_eq!(started["from"], "start");
    next(&mut events, "clock.locked", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Stop: the position holds.
    jack_transport(&jackd, "stop");
    let stopped = next(&mut events, "transport.stopped", Duration::from_secs(5)).await;
    let held = stopped["beats"].as_f64().unwrap();
    assert!(held > 2.0, "stopped after some beats: {stopped}");
    // The transport's state reaches daemon.status with the next position report.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let status = client.call("daemon.status", Value::Null).await.unwrap();
        if status["transport"]["rolling"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still rolling: {}",
            status["transport"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Play on without locating: jack_midi_clock sends a song position and Continue, and
    // the position carries on from the sixteenth it names.
    jack_transport(&jackd, "play");
    let resumed = next(&mut events, "transport.started", Duration::from_secs(5)).await;
    assert_eq!(resumed["from"], "continue", "{resumed}");
    let from = resumed["beats"].as_f64().unwrap();
    assert!(
        (from - held).abs() <= 0.25 + 1e-9,
        "continued at beat {from}, stopped at {held}"
    );

    // The clock dies while playing: djinn runs on at its tempo and says so.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(clock);
    let lost = next(&mut events, "clock.lost", Duration::from_secs(5)).await;
    assert!(
        (lost["tempo"].as_f64().unwrap() - 128.0).abs() < 0.1,
        "{lost}"
    );
    let before = client.call("daemon.status", Value::Null).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = client.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(after["audio"]["clock"]["lock"], "free_running");
    assert_eq!(after["transport"]["rolling"], true);
    let moved = after["transport"]["position"]["frame"].as_u64().unwrap()
        - before["transport"]["position"]["frame"].as_u64().unwrap();
    assert!(
        moved > 30_000,
        "the transport runs on: {moved} frames in a second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn djinn_as_master_sends_a_sample_accurate_clock() {
    // NOTE: on this non-realtime server a client now and then misses a cycle, and the probe
    // then misses what was sent in it (a Start, a Continue, a tick) or djinn sends a tick a
    // period late; a run that falls short with cycles lost is done again (up to three
    // times), one that falls short without fails the test.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match master_clock_run().await {
            Ok(()) => break,
            Err((failure, lost)) if attempt < 3 && lost > 0 => {
                eprintln!("redone after {lost} lost: {failure}");
            }
            Err((failure, lost)) => panic!("{failure} ({lost} cycles lost)"),
        }
    }
}

/// Returns a shortfall as a failure, with the cycles lost so far.
macro_rules! check {
    ($lost:expr, $cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err((format!($($message)+), $lost));
        }
    };
}

/// One run of djinn as the clock master: start, stop, continue mid-bar, a ramp, a stop,
/// recorded by the probe. Returns a shortfall and the cycles lost (reported xruns and
/// frames djinn found skipped).
async fn master_clock_run() -> Result<(), (String, u64)> {
    let jackd = Jackd::start_alone(true, 256);
    let daemon = Djinnd::start_with(Options {
        audio: Some("jack".into()),
        args: vec!["--jack-name".into(), "djinn".into()],
        env: jackd.env(),
        config: "[transport]\nmaster_clock = \"on\"\n".into(),
        ..Options::default()
    });
    let mut client = daemon.client();
    wait_running(&mut client).await;
    client
        .call("transport.set", json!({ "tempo": 123.4 }))
        .await
        .unwrap();
    client.call("transport.stop", Value::Null).await.unwrap();
    let probe = Probe::start(&jackd, "djinn:clock_out", None, 30.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // From the top: Start. Stopped and started again mid-bar: a song position, Continue.
    client.call("transport.start", Value::Null).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.call("transport.stop", Value::Null).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.call("transport.start", Value::Null).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // A smooth ramp to 140 BPM over four beats, then steady.
    client
        .call("transport.set", json!({ "tempo": 140, "ramp_beats": 4 }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    client.call("transport.stop", Value::Null).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lost = xrun_count(&mut client).await;

    let starts = probe.midi(0xFA);
    let stops = probe.midi(0xFC);
    let continues = probe.midi(0xFB);
    let positions = probe.midi(0xF2);
    // The first start is from wherever the transport stood (a Start only at the very top);
    // the second is mid-bar.
    check!(lost, stops.len() == 2, "two Stops, not {}", stops.len());
    check!(
        lost,
        starts.len() + continues.len() == 2,
        "each start announced: {} of 2",
        starts.len() + continues.len()
    );
    check!(
        lost,
        positions.len() == continues.len(),
        "a song position before each Continue: {} for {}",
        positions.len(),
        continues.len()
    );
    let Some(&resumed) = continues.last() else {
        return Err(("no Continue".into(), lost));
    };
    check!(
        lost,
        stops[0] < resumed && resumed < stops[1],
        "the Continue between the Stops"
    );
    check!(
        lost,
        positions.iter().all(|p| continues.contains(p)),
        "sent together"
    );
    let first_run = probe
        .midi(0xF8)
        .into_iter()
        .filter(|&t| t < stops[0])
        .count();
    // 1.5 s at 123.4 BPM is about 74 ticks.
    check!(
        lost,
        (60..=90).contains(&first_run),
        "{first_run} ticks before the first Stop"
    );
    let ticks: Vec<u64> = probe
        .midi(0xF8)
        .into_iter()
        .filter(|&t| t > resumed && t < stops[1])
        .collect();
    // NOTE: on this non-realtime server a client now and then misses a cycle (an xrun).
    // When djinn misses one, the tick due in it goes out at the start of the next, up to a
    // period late (the count of ticks must hold); when the probe misses one, it never sees
    // that cycle's tick. Only with cycles lost may a tick be late or missing, and the
    // intervals it touches are set aside; every other tick must be exact.
    check!(
        lost,
        ticks.len() > 150,
        "{} ticks after the Continue",
        ticks.len()
    );
    let t: Vec<f64> = ticks.iter().map(|&t| t as f64).collect();
    // A tick late against the line through its neighbours by more than a ramp's bend and
    // rounding, and by at most a period.
    let late = |i: usize| {
        i > 0 && i + 1 < t.len() && {
            let off = t[i] - (t[i - 1] + t[i + 1]) / 2.0;
            off > 2.0 && off <= 257.0
        }
    };
    // An interval over a missing tick spans two.
    let missing = |i: usize| {
        let local = [i.wrapping_sub(1), i + 1]
            .iter()
            .filter_map(|&j| ticks.get(j + 1).zip(ticks.get(j)).map(|(b, a)| b - a))
            .min()
            .unwrap_or(u64::MAX);
        ticks[i + 1] - ticks[i] > local * 3 / 2
    };
    // Interval i runs from tick i to tick i + 1; the first, from the Continue's cycle, is
    // left out.
    let gaps: Vec<Option<i64>> = (1..ticks.len() - 1)
        .map(|i| {
            let doubtful = late(i) || late(i + 1) || missing(i);
            (!doubtful).then(|| (ticks[i + 1] - ticks[i]) as i64)
        })
        .collect();
    let doubtful = gaps.iter().filter(|g| g.is_none()).count();
    check!(
        lost,
        lost > 0 || doubtful == 0,
        "{doubtful} ticks late or missing with no cycle lost"
    );
    let trusted: Vec<i64> = gaps.iter().flatten().copied().collect();
    // At 123.4 BPM a tick is 972.3 frames, so every interval is 972 or 973 until the ramp
    // (its first is a frame shorter already); at 140, 857.1. How many ticks come before the
    // ramp is up to the host (a loaded one runs the server slower than the test's sleeps),
    // but not their exactness: at least two beats of them, and the ramp after.
    let steady = trusted
        .iter()
        .take_while(|&&g| g == 972 || g == 973)
        .count();
    check!(
        lost,
        steady >= 48,
        "only {steady} exact ticks at a constant tempo ({lost} lost): {:?}",
        &gaps[..gaps.len().min(64)]
    );
    let end: Vec<i64> = trusted.iter().rev().take(48).copied().collect();
    check!(lost, end.iter().all(|&g| g == 857 || g == 858), "{end:?}");
    // The ramp glides: 115 frames of change over 96 ticks is 1.2 a tick, plus a frame of
    // rounding at each end of an interval; a step would jump by 115.
    let jumps = gaps
        .windows(2)
        .filter_map(|w| Some((w[1]? - w[0]?).abs()))
        .max()
        .unwrap_or(0);
    check!(
        lost,
        jumps <= 4,
        "the tempo ramp jumps by {jumps} frames between ticks ({lost} lost): {gaps:?}"
    );
    let ramping = trusted.iter().filter(|&&g| g > 858 && g < 972).count();
    check!(
        lost,
        ramping > 48,
        "the ramp spans beats: {ramping} intervals between the tempi"
    );
    Ok(())
}

fn beats_of(status: &Value) -> f64 {
    let p = &status["transport"]["position"];
    let per_bar = 4.0;
    (p["bar"].as_f64().unwrap() - 1.0) * per_bar
        + (p["beat"].as_f64().unwrap() - 1.0)
        + p["tick"].as_f64().unwrap() / 960.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn djinn_leads_jack_transport_and_another_djinn_follows_it() {
    let jackd = Jackd::start_alone(true, 256);
    // djinn A is JACK's timebase master: bars, beats and tempo for every client.
    let leader = Djinnd::start_with(Options {
        audio: Some("jack".into()),
        args: vec!["--jack-name".into(), "djinn".into()],
        env: jackd.env(),
        config: "[transport]\nmaster_clock = \"on\"\n".into(),
        ..Options::default()
    });
    let mut lead = leader.client();
    wait_running(&mut lead).await;
    lead.call("transport.set", json!({ "tempo": 123.4 }))
        .await
        .unwrap();
    // djinn B follows JACK transport.
    let follower = Djinnd::start_with(Options {
        audio: Some("jack".into()),
        args: vec!["--jack-name".into(), "djinn_b".into()],
        env: jackd.env(),
        config: "[transport]\nsource = \"jack\"\n".into(),
        ..Options::default()
    });
    let mut follow = follower.client();
    wait_running(&mut follow).await;

    // jack_midi_clock with no tempo of its own takes the timebase master's.
    let _clock = jack_midi_clock(&jackd, None, 0);
    let probe = Probe::start(&jackd, CLOCK, None, 30.0);
    play_from_the_top(&jackd);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let b = follow.call("daemon.status", Value::Null).await.unwrap();
    let a = lead.call("daemon.status", Value::Null).await.unwrap();
    let b_after = follow.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(b["audio"]["clock"]["source"], "jack");
    assert_eq!(
        b["transport"]["rolling"], true,
        "JACK transport rolls: {}",
        b["transport"]
    );
    assert!(
        (b["audio"]["clock"]["tempo"].as_f64().unwrap() - 123.4).abs() < 0.01,
        "the follower takes the leader's tempo: {}",
        b["audio"]["clock"]
    );
    // Read one after the other, the follower's bar and beat bracket the leader's.
    let (b0, a0, b1) = (beats_of(&b), beats_of(&a), beats_of(&b_after));
    assert!(
        a0 >= b0 - 0.1 && a0 <= b1 + 0.1,
        "leader at beat {a0}, follower between {b0} and {b1}"
    );

    // jack_midi_clock ticks at the leader's tempo: 972.3 frames apart.
    // (The mean of the gaps within a quarter tick of the median: a cycle the probe or the
    // clock missed on a stalled host neither stretches nor shortens it.)
    let (ticks, _, _) = bar_ticks(&probe).unwrap();
    assert!(ticks.len() > 48, "{} ticks", ticks.len());
    let mut gaps: Vec<f64> = ticks.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    let typical: Vec<f64> = gaps
        .into_iter()
        .filter(|g| (g - median).abs() <= median / 4.0)
        .collect();
    assert!(typical.len() > 48, "{} typical gaps", typical.len());
    let span = typical.iter().sum::<f64>() / typical.len() as f64;
    assert!((span - 972.3).abs() < 1.0, "ticks {span} frames apart");

    // JACK transport stops: the follower stops with it.
    jack_transport(&jackd, "stop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = follow.call("daemon.status", Value::Null).await.unwrap();
    assert_eq!(b["transport"]["rolling"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alsa_clock_port_that_cannot_be_had_is_reported_and_the_daemon_plays_on() {
    let daemon = Djinnd::start_with(Options {
        audio: Some("offline".into()),
        args: vec!["--fast".into()],
        config: "[transport]\nsource = \"midi\"\nalsa_port = \"No Such Drum Machine\"\n".into(),
        ..Options::default()
    });
    let mut client = daemon.client();
    let status = client.call("daemon.status", Value::Null).await.unwrap();
    let clock = &status["audio"]["clock"];
    assert_eq!(clock["source"], "midi");
    let alsa = clock["alsa"].as_str().unwrap();
    assert!(
        alsa.starts_with("not connected to \"No Such Drum Machine\": "),
        "{alsa}"
    );
    assert_eq!(status["audio"]["state"], "running");
    let text = Command::new(bin("djinn"))
        .args(["--endpoint", &daemon.control, "status"])
        .output()
        .expect("djinn status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("clock      midi"), "{text}");
    assert!(text.contains("ALSA: not connected"), "{text}");
}
