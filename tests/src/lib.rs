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
    /// TOML written to the --config file.
    pub config: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Use tcp on free loopback ports instead of ipc.
    pub tcp: bool,
    /// Control endpoint instead of the private default.
    pub control: Option<String>,
    /// State directory instead of a fresh one.
    pub state_dir: Option<PathBuf>,
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
        std::fs::write(&config, &options.config).expect("write config");
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
            .arg("none")
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

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}
