//! The end-to-end harness: djinnd as a child process on private endpoints.
//!
//! Each [`Djinnd`] gets its own temporary directory holding its ipc sockets, state and log,
//! so tests run in parallel without sharing anything. The binaries are the ones cargo built
//! next to the test executable (`make test` builds them first).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use djinn_daemon::client::{Client, Events};

/// A binary of this workspace, built into the same target directory as the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable inside target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ inside the repository")
        .to_owned()
}

/// The Python interpreter with pyzmq: Debian's, where python3-zmq installs.
pub fn python() -> Command {
    let interpreter = std::env::var("DJINN_PYTHON").unwrap_or_else(|_| {
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    });
    let mut command = Command::new(interpreter);
    command.env("PYTHONPATH", repo().join("clients/python"));
    command
}

/// Runs a Python script (with the client on its path); returns its stdout, failing the
/// test with its stderr and `context` if it fails.
pub fn run_python(script: &str, context: &str) -> String {
    let out = python()
        .arg("-c")
        .arg(script)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{context}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commands under test get a clean environment: no DJINN_* or systemd variables leak in
/// from the shell that runs the tests.
pub fn scrub(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("DJINN_")
            || [
                "NOTIFY_SOCKET",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
                "STATE_DIRECTORY",
            ]
            .contains(&key_text.as_ref())
        {
            command.env_remove(&key);
        }
    }
}

/// How to start a djinnd.
#[derive(Default)]
pub struct Options {
    /// TOML written to the --config file. Unless it has a `[media]` table, the system's
    /// temporary directory is made a media root, so that tests may name the files they
    /// write to their own temporary directories.
    pub config: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Use tcp on free loopback ports instead of ipc.
    pub tcp: bool,
    /// Control endpoint instead of the private default.
    pub control: Option<String>,
    /// State directory instead of a fresh one.
    pub state_dir: Option<PathBuf>,
    /// `--audio` (default `none`).
    pub audio: Option<String>,
}

/// A running djinnd child process.
pub struct Djinnd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub control: String,
    pub events: String,
}

impl Djinnd {
    pub fn start() -> Djinnd {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Djinnd {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (mut control, events) = if options.tcp {
            (
                format!("tcp://127.0.0.1:{}", free_port()),
                format!("tcp://127.0.0.1:{}", free_port()),
            )
        } else {
            (
                format!("ipc://{}", dir.path().join("control").display()),
                format!("ipc://{}", dir.path().join("events").display()),
            )
        };
        if let Some(endpoint) = &options.control {
            control.clone_from(endpoint);
        }
        let state_dir = options
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        let config = dir.path().join("djinn.toml");
        let mut text = options.config.clone();
        if !text.contains("[media]") {
            let temp = std::env::temp_dir();
            text.push_str(&format!(
                "\n[media]\nroots = [{:?}]\n",
                temp.display().to_string()
            ));
        }
        std::fs::write(&config, text).expect("write config");
        let mut command = Command::new(bin("djinnd"));
        scrub(&mut command);
        command
            .arg("--config")
            .arg(&config)
            .arg("--control")
            .arg(&control)
            .arg("--events")
            .arg(&events)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--audio")
            .arg(options.audio.as_deref().unwrap_or("none"))
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log"));
        let child = command.spawn().expect("spawn djinnd");
        let mut daemon = Djinnd {
            child,
            dir,
            control,
            events,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.stdout().contains("djinnd listening") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("djinnd exited early ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("djinnd not ready within 10 s:\n{}", self.log());
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn client(&self) -> Client {
        Client::new(&self.control, None, Duration::from_secs(5))
    }

    pub async fn events(&self, topics: &[&str]) -> Events {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let events = Events::subscribe(&self.events, &topics)
            .await
            .expect("subscribe");
        // A SUB socket misses what is published before its subscription reaches the
        // publisher; give it a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        events
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Resident memory of the daemon, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("djinnd is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    pub fn stdout(&self) -> String {
        read(&self.dir.path().join("stdout.log"))
    }

    pub fn log(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            self.stdout(),
            read(&self.dir.path().join("stderr.log"))
        )
    }
}

impl Drop for Djinnd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// JACK servers that may run at once for tests. JACK's shared registry holds only a few
/// servers and keeps the entries of servers that died, so tests take one of a fixed set
/// of names (an entry left by a crashed server is then reused, never piled up).
const JACK_SLOTS: usize = 4;

/// A claim on one server name, held through a lock file.
struct Slot {
    _lock: std::fs::File,
    _timing: std::fs::File,
    name: String,
}

impl Slot {
    /// Claims a server name. A test that measures timing (xruns, clicks) runs `alone`: it
    /// waits until no other JACK test runs and keeps the others out until it is done.
    fn claim(alone: bool) -> Slot {
        use std::os::fd::AsRawFd;
        let timing_path = std::env::temp_dir().join("djinn-test-jack-timing.lock");
        let timing = std::fs::File::create(&timing_path).expect("timing lock file");
        let mode = if alone { libc::LOCK_EX } else { libc::LOCK_SH };
        // SAFETY: flock on a file descriptor we own; released when the file closes.
        let rc = unsafe { libc::flock(timing.as_raw_fd(), mode) };
        assert_eq!(rc, 0, "flock {}", timing_path.display());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for slot in 0..JACK_SLOTS {
                let path = std::env::temp_dir().join(format!("djinn-test-jack-{slot}.lock"));
                let Ok(file) = std::fs::File::create(&path) else {
                    continue;
                };
                use std::os::fd::AsRawFd;
                // SAFETY: flock on a file descriptor we own; released when the file closes.
                let locked =
                    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
                if locked {
                    return Slot {
                        _lock: file,
                        _timing: timing,
                        name: format!("djinn-test-{slot}"),
                    };
                }
            }
            assert!(
                Instant::now() < deadline,
                "no JACK test slot free for 120 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A private JACK server with the dummy driver, under a name no running test shares.
pub struct Jackd {
    child: Child,
    pub name: String,
    realtime: bool,
    period: u32,
    _slot: Slot,
}

impl Jackd {
    /// Starts `jackd -n NAME -d dummy -r 48000 -p PERIOD`, realtime (`-R`) or not.
    pub fn start(realtime: bool, period: u32) -> Jackd {
        Self::start_with(realtime, period, false)
    }

    /// Like [`Jackd::start`], with no other JACK test running meanwhile: for tests that
    /// measure timing, which a busy 2-core machine would disturb.
    pub fn start_alone(realtime: bool, period: u32) -> Jackd {
        Self::start_with(realtime, period, true)
    }

    fn start_with(realtime: bool, period: u32, alone: bool) -> Jackd {
        let slot = Slot::claim(alone);
        let name = slot.name.clone();
        let child = Self::spawn(&name, realtime, period);
        let mut jackd = Jackd {
            child,
            name,
            realtime,
            period,
            _slot: slot,
        };
        jackd.wait_running();
        jackd
    }

    fn spawn(name: &str, realtime: bool, period: u32) -> Child {
        Command::new("jackd")
            .args(["-n", name, if realtime { "-R" } else { "--no-realtime" }])
            .args(["-d", "dummy", "-r", "48000", "-p", &period.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("jackd (make test installs jackd2)")
    }

    fn wait_running(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = Command::new("jack_wait")
                .args(["-s", &self.name, "-c"])
                .output();
            // jack_wait -c exits 0 either way: read what it says.
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("running")) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("jackd {} exited: {status}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("jackd {} not running within 10 s", self.name);
    }

    /// Environment that points JACK clients at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("JACK_DEFAULT_SERVER".into(), self.name.clone()),
            ("JACK_NO_START_SERVER".into(), "1".into()),
        ]
    }

    /// Kills the server outright (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server cleanly (SIGTERM), so it leaves nothing behind in JACK's shared
    /// registry: a server killed outright keeps its slot, and JACK allows only a few.
    pub fn stop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }

    /// Starts the server again under the same name.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.name, self.realtime, self.period);
        self.wait_running();
    }

    /// Port names, one per line (`jack_lsp`).
    pub fn ports(&self) -> String {
        let out = Command::new("jack_lsp")
            .args(["-s", &self.name])
            .output()
            .expect("jack_lsp");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Records `ports` for `seconds` with jack_capture; returns one sample vector per port.
    pub fn capture(&self, ports: &[&str], seconds: f32, dir: &Path) -> Vec<Vec<f32>> {
        capture(&self.name, ports, seconds, dir)
    }

    /// Starts [`Jackd::capture`] on a thread, so the test can act while it records.
    pub fn capture_in_background(
        &self,
        ports: &[&str],
        seconds: f32,
        dir: &Path,
    ) -> std::thread::JoinHandle<Vec<Vec<f32>>> {
        let (name, dir) = (self.name.clone(), dir.to_owned());
        let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        std::thread::spawn(move || {
            let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
            capture(&name, &ports, seconds, &dir)
        })
    }
}

/// How long jack_capture may run past the duration it was given before it is stopped.
const CAPTURE_OVERRUN: Duration = Duration::from_secs(20);

/// Asks `child` to stop (SIGTERM) and waits up to `grace` for it to exit; kills it after
/// that. Returns how it exited when it stopped by itself.
fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Records `ports` of JACK server `server` for `seconds` with jack_capture into a file in
/// `dir`; returns one sample vector per port.
pub fn capture(server: &str, ports: &[&str], seconds: f32, dir: &Path) -> Vec<Vec<f32>> {
    let name = format!("capture-{}", ports.join("+").replace(':', "_"));
    let path = dir.join(format!("{name}.wav"));
    let errors = dir.join(format!("{name}.stderr"));
    let mut command = Command::new("jack_capture");
    command
        .env("JACK_DEFAULT_SERVER", server)
        .env("JACK_NO_START_SERVER", "1")
        .args(["--daemon", "-d", &seconds.to_string(), "-b", "32", "-c"])
        .arg(ports.len().to_string());
    for port in ports {
        command.args(["--port", port]);
    }
    let mut child = command
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors).expect("a file for jack_capture's errors"))
        .spawn()
        .expect("jack_capture (make test installs it)");
    // NOTE: now and then jack_capture records on past its duration and never exits; on
    // SIGTERM it closes its file and exits cleanly.
    let deadline = Instant::now() + Duration::from_secs_f32(seconds) + CAPTURE_OVERRUN;
    let mut overran = false;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            overran = true;
            eprintln!("jack_capture ran {CAPTURE_OVERRUN:?} past {seconds} s: stopping it");
            break terminate(&mut child, Duration::from_secs(5));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.is_some_and(|s| s.success()) && path.exists(),
        "jack_capture failed ({status:?}): {}",
        std::fs::read_to_string(&errors).unwrap_or_default()
    );
    let mut reader = hound::WavReader::open(&path).expect("jack_capture wrote a WAV");
    let spec = reader.spec();
    let channels = usize::from(spec.channels);
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().map(Result::unwrap).collect(),
        hound::SampleFormat::Int => {
            let scale = 2f32.powi(i32::from(spec.bits_per_sample) - 1);
            reader
                .samples::<i32>()
                .map(|s| s.unwrap() as f32 / scale)
                .collect()
        }
    };
    // A take stopped after an overrun holds more than was asked for.
    let frames = if overran {
        (f64::from(seconds) * f64::from(spec.sample_rate)).round() as usize
    } else {
        usize::MAX
    };
    (0..channels)
        .map(|ch| {
            let channel = samples.iter().skip(ch).step_by(channels).copied();
            channel.take(frames).collect()
        })
        .collect()
}

impl Drop for Jackd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Root mean square of a signal.
pub fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// A local TCP port nothing listens on, below the kernel's range of ephemeral ports: a
/// client that keeps retrying a connection to a closed port in that range (as ZeroMQ does)
/// can be given that very port as its own, connect to itself and be reset, where a missing
/// daemon should simply not answer.
pub fn closed_port() -> u16 {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    (10_000..ephemeral)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a closed port below the ephemeral range")
}

/// One note of a test arrangement: channel (9: drums), GM program, key, start and length in
/// beats.
#[derive(Debug, Clone, Copy)]
pub struct Note {
    pub channel: u8,
    pub program: u8,
    pub key: u8,
    pub beat: f64,
    pub beats: f64,
}

/// Writes `notes` at `bpm` as a type-0 Standard MIDI File.
pub fn write_midi(path: &Path, bpm: f64, notes: &[Note]) {
    fn vlq(mut n: u32) -> Vec<u8> {
        let mut out = vec![(n & 0x7F) as u8];
        n >>= 7;
        while n > 0 {
            out.push((n & 0x7F) as u8 | 0x80);
            n >>= 7;
        }
        out.reverse();
        out
    }
    let ppq = 480.0;
    let tempo = (60_000_000.0 / bpm).round() as u32;
    let mut track = vec![0x00, 0xFF, 0x51, 0x03];
    track.extend_from_slice(&tempo.to_be_bytes()[1..]);
    // (tick, order: offs before ons, bytes)
    let mut events: Vec<(u32, u8, [u8; 3])> = Vec::new();
    let mut programs: Vec<(u8, u8)> = notes.iter().map(|n| (n.channel, n.program)).collect();
    programs.dedup();
    for (channel, program) in programs {
        events.push((0, 0, [0xC0 | channel, program, 0]));
    }
    for n in notes {
        let on = (n.beat * ppq).round() as u32;
        let off = ((n.beat + n.beats) * ppq).round() as u32;
        events.push((on, 2, [0x90 | n.channel, n.key, 100]));
        events.push((off, 1, [0x80 | n.channel, n.key, 0]));
    }
    events.sort_by_key(|e| (e.0, e.1));
    let mut last = 0;
    for (tick, _, bytes) in events {
        track.extend(vlq(tick - last));
        let len = if bytes[0] & 0xF0 == 0xC0 { 2 } else { 3 };
        track.extend_from_slice(&bytes[..len]);
        last = tick;
    }
    track.extend_from_slice(&[0x00, 0xFF, 0x2F, 0x00]);
    let mut file = b"MThd".to_vec();
    file.extend_from_slice(&[0, 0, 0, 6, 0, 0, 0, 1]);
    file.extend_from_slice(&(ppq as u16).to_be_bytes());
    file.extend_from_slice(b"MTrk");
    file.extend_from_slice(&(track.len() as u32).to_be_bytes());
    file.extend(track);
    std::fs::write(path, file).expect("write the MIDI file");
}

/// Converts `input` to `output` with ffmpeg (the format by `output`'s extension), with
/// `args` (codec, rate) between them.
pub fn ffmpeg_convert(input: &Path, output: &Path, args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(input)
        .args(args)
        .arg(output)
        .output()
        .expect("ffmpeg (make test installs it)");
    assert!(
        out.status.success(),
        "ffmpeg to {}: {}",
        output.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Renders a MIDI file to a 48 kHz WAV with fluidsynth and FluidR3_GM: real instrument
/// audio that djinn did not make.
pub fn fluidsynth(mid: &Path, wav: &Path) {
    let out = Command::new("fluidsynth")
        .args(["-ni", "-g", "0.7", "-r", "48000", "-F"])
        .arg(wav)
        .arg("/usr/share/sounds/sf2/FluidR3_GM.sf2")
        .arg(mid)
        .output()
        .expect("fluidsynth (make test installs it)");
    assert!(
        out.status.success(),
        "fluidsynth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One bar of kit from `start` (in beats): kick on 1 and 3, snare on 2 and 4, closed hats
/// on the eighths.
pub fn kit_bar(notes: &mut Vec<Note>, start: f64) {
    for beat in 0..4 {
        let b = start + f64::from(beat);
        let drum = if beat % 2 == 0 { 36 } else { 38 };
        notes.push(Note {
            channel: 9,
            program: 0,
            key: drum,
            beat: b,
            beats: 0.25,
        });
        for off in [0.0, 0.5] {
            notes.push(Note {
                channel: 9,
                program: 0,
                key: 42,
                beat: b + off,
                beats: 0.2,
            });
        }
    }
}

/// A small band playing `bars` of 4/4 at `bpm` in the key of `tonic` (pitch class, 0 = C),
/// major or minor: chords on GM `program` (I–vi–IV–V, or i–VI–iv–V with the leading tone),
/// a fingered bass on the roots, and a kit with kick, snare and hats on the eighths.
pub fn band_midi(path: &Path, bpm: f64, tonic: u8, minor: bool, bars: u32, program: u8) {
    // Chord roots and qualities in semitones from the tonic.
    let progression: [(u8, [u8; 3]); 4] = if minor {
        [
            (0, [0, 3, 7]),
            (8, [0, 4, 7]),
            (5, [0, 3, 7]),
            (7, [0, 4, 7]),
        ]
    } else {
        [
            (0, [0, 4, 7]),
            (9, [0, 3, 7]),
            (5, [0, 4, 7]),
            (7, [0, 4, 7]),
        ]
    };
    let mut notes = Vec::new();
    for bar in 0..bars {
        let start = f64::from(bar) * 4.0;
        let (root, triad) = progression[bar as usize % 4];
        for interval in triad {
            // Voiced around middle C (60).
            let pc = (tonic + root + interval) % 12;
            let key = 60 + pc - if pc > 6 { 12 } else { 0 };
            for half in [0.0, 2.0] {
                notes.push(Note {
                    channel: 0,
                    program,
                    key,
                    beat: start + half,
                    beats: 1.9,
                });
            }
        }
        let bass = 36 + (tonic + root) % 12;
        for beat in [0.0, 1.5, 2.0, 3.0] {
            notes.push(Note {
                channel: 1,
                program: 33,
                key: bass,
                beat: start + beat,
                beats: 0.45,
            });
        }
        kit_bar(&mut notes, start);
    }
    write_midi(path, bpm, &notes);
}

/// Waits for the next event that satisfies `want` (given its topic and its `data`), up to
/// `timeout`, and returns its `data`.
pub async fn wait_for(
    events: &mut Events,
    timeout: Duration,
    mut want: impl FnMut(&str, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (topic, event) = tokio::time::timeout(left, events.next())
            .await
            .expect("the event in time")
            .expect("an event");
        if want(&topic, &event["data"]) {
            return event["data"].clone();
        }
    }
}
