//! djinnd's configuration: built-in defaults < /etc/djinn/djinn.toml < `--config FILE` <
//! `DJINN_*` variables < flags.
//!
//! Files are merged table by table, so a file sets only the keys it names. Variables and
//! flags are read by clap (each flag has its `DJINN_*` twin), which already prefers a flag
//! to its variable. The token is never a flag: it would show in `ps`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Where the system-wide configuration lives.
pub const SYSTEM_CONFIG: &str = "/etc/djinn/djinn.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub control: ControlConfig,
    pub daemon: DaemonConfig,
    pub audio: AudioConfig,
    pub transport: TransportConfig,
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub pipe: PipeConfig,
    pub debug: DebugConfig,
}

/// The HTTP server (JSON-RPC on `POST /rpc`, events on `GET /events`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to serve on, as HOST:PORT (e.g. "127.0.0.1:7702"); unset: no HTTP server.
    /// Beyond loopback it needs control.token, which every request must carry.
    pub bind: Option<String>,
}

/// The ZeroMQ sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// ROUTER socket for requests.
    pub endpoint: String,
    /// PUB socket for events.
    pub events: String,
    /// Shared secret every request must carry; required when binding beyond loopback.
    pub token: Option<String>,
    /// Largest request (all frames together) accepted, in bytes. A request up to 64 KiB
    /// over it gets an error reply; a frame header announcing more closes the connection
    /// before anything is read or reserved for it.
    pub max_frame_bytes: usize,
    /// Requests answered concurrently; more get a busy error.
    pub max_in_flight: usize,
    /// Bytes of requests held at once, all clients together; more get a busy error.
    pub max_in_flight_bytes: usize,
    /// Connections each socket (control, events) accepts at once; more are closed as they
    /// arrive.
    pub max_connections: usize,
    /// Events queued for one subscriber that does not keep up; past it the oldest are
    /// dropped and counted (`control.events_dropped` in daemon.status).
    pub events_queue: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            endpoint: "tcp://127.0.0.1:7700".into(),
            events: "tcp://127.0.0.1:7701".into(),
            token: None,
            max_frame_bytes: 16 * 1024 * 1024,
            max_in_flight: 256,
            max_in_flight_bytes: 256 * 1024 * 1024,
            max_connections: 256,
            events_queue: 1000,
        }
    }
}

/// Where djinnd keeps things and what it starts with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Generated files, sessions, ratings, learned profile. Default: $STATE_DIRECTORY
    /// (systemd), else $XDG_DATA_HOME/djinn, else ~/.local/share/djinn.
    pub state_dir: Option<PathBuf>,
    /// Style profile at start; default: the one active at the last shutdown, else
    /// techno_minimal.
    pub profile: Option<String>,
    /// Extra profile directory, overriding built-in profiles by name.
    pub profiles_dir: Option<PathBuf>,
    /// Rhai scripts directory (dj/, moods/, learning/).
    pub scripts_dir: Option<PathBuf>,
    /// Model weights directory; default: <state_dir>/models.
    pub models_dir: Option<PathBuf>,
    /// tracing filter: error, warn, info, debug, trace, or a full directive.
    pub log_level: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            state_dir: None,
            profile: None,
            profiles_dir: None,
            scripts_dir: None,
            models_dir: None,
            log_level: "info".into(),
        }
    }
}

/// Audio output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioConfig {
    /// jack, offline or none; unset: JACK when a server runs, the offline driver otherwise.
    pub backend: Option<AudioBackend>,
    /// JACK client name.
    pub jack_name: String,
    /// Ports out_L and out_R connect to; empty: the first two physical playback ports.
    pub connect: Vec<String>,
    /// Offline driver: render as fast as possible instead of at realtime pace.
    pub fast: bool,
    /// Offline driver: recordings kept (one per hour of audio, ~1.4 GB each).
    pub keep_recordings: usize,
    /// The longest a layer may be, in seconds (a layer holds its audio decoded: 10 minutes
    /// at 48 kHz is 220 MB).
    pub max_layer_seconds: f64,
    /// Memory all layers together may hold, in MB; a layer beyond it is refused.
    pub max_layer_memory_mb: u64,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            backend: None,
            jack_name: "djinn".into(),
            connect: Vec::new(),
            fast: false,
            keep_recordings: 6,
            max_layer_seconds: 600.0,
            max_layer_memory_mb: 2048,
        }
    }
}

/// How audio leaves the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AudioBackend {
    Jack,
    Offline,
    None,
}

/// Where the transport takes its tempo and position from, and the MIDI clock ports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// internal (djinn's own clock), midi (follow the MIDI clock on clock_in) or jack
    /// (follow JACK transport).
    pub source: djinn_engine::mix::ClockSource,
    /// Send 24-ppqn MIDI clock, start, stop, continue and song position on clock_out:
    /// on/off (or true/false).
    #[serde(deserialize_with = "on_off")]
    pub master_clock: bool,
    /// JACK MIDI ports connected to clock_in at start.
    pub clock_in: Vec<String>,
    /// JACK MIDI ports clock_out is connected to at start.
    pub clock_out: Vec<String>,
    /// An ALSA sequencer input port (part of its name) whose MIDI clock is followed too,
    /// for hardware JACK does not see (no a2jmidid).
    pub alsa_port: Option<String>,
}

/// The folders whose files clients may name (`layer.add`, `render.file`, `quality.assess`,
/// `library.build`), like MPD's music directory. The files area (STATE/files) is always one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Absolute folder paths; a relative request path is looked for in the files area,
    /// then in these, in order.
    pub roots: Vec<PathBuf>,
}

/// Pipe mode's allow-list: a client picks a command by name and never sends one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipeConfig {
    /// Name -> command line, run with `sh -c` as djinnd's user.
    pub commands: BTreeMap<String, String>,
}

/// Reads a switch written as true/false or "on"/"off".
pub fn on_off<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Switch {
        Bool(bool),
        Text(String),
    }
    match Switch::deserialize(d)? {
        Switch::Bool(on) => Ok(on),
        Switch::Text(text) => match text.as_str() {
            "on" | "true" => Ok(true),
            "off" | "false" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not a switch: expected on or off"
            ))),
        },
    }
}

/// Switches for testing the daemon itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// Enables `debug.panic`, which makes an actor panic to exercise supervision.
    pub fault_injection: bool,
}

/// djinnd's flags; each has a `DJINN_*` variable of the same meaning.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(name = "djinnd", version, about = "djinn, the realtime audio daemon")]
pub struct Flags {
    /// Configuration file, read after /etc/djinn/djinn.toml.
    #[arg(long, env = "DJINN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// ZeroMQ endpoint for requests [default: tcp://127.0.0.1:7700].
    #[arg(long, env = "DJINN_CONTROL", value_name = "ENDPOINT")]
    pub control: Option<String>,
    /// ZeroMQ endpoint for events [default: tcp://127.0.0.1:7701].
    #[arg(long, env = "DJINN_EVENTS", value_name = "ENDPOINT")]
    pub events: Option<String>,
    /// State directory.
    #[arg(long, env = "DJINN_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Style profile to start with.
    #[arg(long, env = "DJINN_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Extra profile directory.
    #[arg(long, env = "DJINN_PROFILES", value_name = "DIR")]
    pub profiles: Option<PathBuf>,
    /// Rhai scripts directory.
    #[arg(long, env = "DJINN_SCRIPTS", value_name = "DIR")]
    pub scripts: Option<PathBuf>,
    /// Audio backend [default: jack when a server runs, else offline].
    #[arg(long, env = "DJINN_AUDIO", value_enum)]
    pub audio: Option<AudioBackend>,
    /// JACK client name [default: djinn].
    #[arg(long, env = "DJINN_JACK_NAME", value_name = "NAME")]
    pub jack_name: Option<String>,
    /// Offline driver: render as fast as possible instead of at realtime pace.
    #[arg(long, env = "DJINN_FAST")]
    pub fast: bool,
    /// HTTP address (HOST:PORT) for JSON-RPC and events [default: none].
    #[arg(long, env = "DJINN_HTTP", value_name = "ADDR")]
    pub http: Option<String>,
    /// Log filter (error, warn, info, debug, trace) [default: info].
    #[arg(long, env = "DJINN_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// Reads configuration the same way at start and on SIGHUP.
#[derive(Debug, Clone)]
pub struct ConfigLoader {
    pub flags: Flags,
    pub system_config: PathBuf,
}

impl ConfigLoader {
    pub fn new(flags: Flags) -> Self {
        Self {
            flags,
            system_config: PathBuf::from(SYSTEM_CONFIG),
        }
    }

    /// Layers files, variables and flags over the defaults, and checks the result.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut merged = toml::Table::try_from(Config::default())?;
        if self.system_config.exists() {
            merge(&mut merged, read_table(&self.system_config)?);
        }
        if let Some(path) = &self.flags.config {
            merge(&mut merged, read_table(path)?);
        }
        let mut config: Config = merged
            .try_into()
            .context("configuration does not match the expected keys")?;
        self.apply_flags(&mut config);
        if let Ok(token) = std::env::var("DJINN_TOKEN") {
            config.control.token = Some(token);
        }
        if config.control.token.as_deref().is_some_and(str::is_empty) {
            config.control.token = None;
        }
        config.check()?;
        Ok(config)
    }

    fn apply_flags(&self, config: &mut Config) {
        let f = &self.flags;
        let set = |slot: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                slot.clone_from(v);
            }
        };
        set(&mut config.control.endpoint, &f.control);
        set(&mut config.control.events, &f.events);
        set(&mut config.audio.jack_name, &f.jack_name);
        set(&mut config.daemon.log_level, &f.log_level);
        if f.state_dir.is_some() {
            config.daemon.state_dir.clone_from(&f.state_dir);
        }
        if f.profile.is_some() {
            config.daemon.profile.clone_from(&f.profile);
        }
        if f.profiles.is_some() {
            config.daemon.profiles_dir.clone_from(&f.profiles);
        }
        if f.scripts.is_some() {
            config.daemon.scripts_dir.clone_from(&f.scripts);
        }
        if f.audio.is_some() {
            config.audio.backend = f.audio;
        }
        if f.fast {
            config.audio.fast = true;
        }
        if f.http.is_some() {
            config.http.bind.clone_from(&f.http);
        }
    }
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("config {} is not valid TOML", path.display()))
}

/// Merges `over` into `base`, table by table; other values replace.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(over)) => merge(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Config {
    /// Refuses configurations the daemon cannot run safely with.
    pub fn check(&self) -> anyhow::Result<()> {
        let endpoint = &self.control.endpoint;
        if !is_local(endpoint)? && self.control.token.is_none() {
            bail!(
                "refusing to bind {endpoint} beyond loopback without a token: set \
                 control.token in the config or DJINN_TOKEN in the environment"
            );
        }
        // NOTE: ZeroMQ subscribers send no token, so events stay on this machine; remote
        // clients read them from the HTTP server, which checks the token.
        let events = &self.control.events;
        if !is_local(events)? {
            bail!(
                "refusing to bind the event socket {events} beyond loopback: ZeroMQ \
                 subscribers cannot be authenticated; set http.bind and read GET /events \
                 with the token instead"
            );
        }
        if let Some(bind) = &self.http.bind
            && !is_local(&format!("tcp://{bind}"))?
            && self.control.token.is_none()
        {
            bail!(
                "refusing to serve HTTP on {bind} beyond loopback without a token: set \
                 control.token in the config or DJINN_TOKEN in the environment"
            );
        }
        if self.control.max_frame_bytes < 1024 {
            bail!("control.max_frame_bytes must be at least 1024");
        }
        if self.control.max_in_flight == 0 {
            bail!("control.max_in_flight must be at least 1");
        }
        if self.control.max_in_flight_bytes < self.control.max_frame_bytes {
            bail!("control.max_in_flight_bytes must be at least control.max_frame_bytes");
        }
        if self.control.max_connections == 0 {
            bail!("control.max_connections must be at least 1");
        }
        if self.control.events_queue == 0 {
            bail!("control.events_queue must be at least 1");
        }
        self.check_media()
    }

    /// The media roots, pipe commands and layer limits.
    fn check_media(&self) -> anyhow::Result<()> {
        if let Some(root) = self.media.roots.iter().find(|r| !r.is_absolute()) {
            bail!("media.roots: {} is not an absolute path", root.display());
        }
        for (name, line) in &self.pipe.commands {
            let plain = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !plain {
                bail!(
                    "pipe.commands: {name:?} is not a plain name (letters, digits, '-', '_', '.')"
                );
            }
            if line.trim().is_empty() {
                bail!("pipe.commands.{name} is an empty command line");
            }
        }
        let seconds = self.audio.max_layer_seconds;
        if !(seconds.is_finite() && seconds >= 1.0) {
            bail!("audio.max_layer_seconds must be at least 1");
        }
        if self.audio.max_layer_memory_mb == 0 {
            bail!("audio.max_layer_memory_mb must be at least 1");
        }
        Ok(())
    }

    /// What `audio.max_layer_memory_mb` allows, in bytes.
    pub fn layer_memory_bytes(&self) -> u64 {
        self.audio.max_layer_memory_mb.saturating_mul(1024 * 1024)
    }

    /// The state directory: configured, else systemd's, else the XDG data directory.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.daemon.state_dir {
            return dir.clone();
        }
        if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several, colon-separated; the first is ours.
            let first = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            return PathBuf::from(first);
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        data.join("djinn")
    }

    /// The model weights directory.
    pub fn models_dir(&self) -> PathBuf {
        self.daemon
            .models_dir
            .clone()
            .unwrap_or_else(|| self.state_dir().join("models"))
    }
}

/// Whether an endpoint stays on this machine (ipc, or tcp on a loopback address).
pub fn is_local(endpoint: &str) -> anyhow::Result<bool> {
    if endpoint.starts_with("ipc://") {
        return Ok(true);
    }
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        bail!("endpoint {endpoint:?} is neither tcp://HOST:PORT nor ipc://PATH");
    };
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => bail!("endpoint {endpoint:?} has no port"),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_ipc_are_local_everything_else_is_not() {
        for local in [
            "tcp://127.0.0.1:7700",
            "tcp://localhost:1",
            "tcp://[::1]:7700",
            "ipc:///tmp/x",
        ] {
            assert!(is_local(local).unwrap(), "{local}");
        }
        for remote in ["tcp://0.0.0.0:7700", "tcp://*:7700", "tcp://192.0.2.1:7700"] {
            assert!(!is_local(remote).unwrap(), "{remote}");
        }
        assert!(is_local("udp://x:1").is_err());
        assert!(is_local("tcp://127.0.0.1").is_err());
    }

    #[test]
    fn a_public_bind_needs_a_token() {
        let mut config = Config::default();
        config.control.endpoint = "tcp://0.0.0.0:7700".into();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("DJINN_TOKEN"), "{err}");
        config.control.token = Some("s3cret".into());
        config.check().unwrap();
    }

    #[test]
    fn layers_apply_in_order_defaults_files_flags() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("system.toml");
        let user = dir.path().join("user.toml");
        std::fs::write(
            &system,
            "[daemon]\nprofile = \"dub\"\nlog_level = \"warn\"\n",
        )
        .unwrap();
        std::fs::write(
            &user,
            "[daemon]\nprofile = \"rock\"\n[audio]\njack_name = \"dj2\"\n",
        )
        .unwrap();
        let mut loader = ConfigLoader::new(Flags {
            config: Some(user),
            ..Flags::default()
        });
        loader.system_config = system;
        let config = loader.load().unwrap();
        assert_eq!(
            config.daemon.profile.as_deref(),
            Some("rock"),
            "--config beats /etc"
        );
        assert_eq!(config.daemon.log_level, "warn", "/etc beats defaults");
        assert_eq!(config.audio.jack_name, "dj2");
        assert_eq!(
            config.control.endpoint, "tcp://127.0.0.1:7700",
            "defaults stay"
        );

        loader.flags.profile = Some("hip_hop".into());
        loader.flags.audio = Some(AudioBackend::Offline);
        let config = loader.load().unwrap();
        assert_eq!(
            config.daemon.profile.as_deref(),
            Some("hip_hop"),
            "flags beat files"
        );
        assert_eq!(config.audio.backend, Some(AudioBackend::Offline));
    }

    #[test]
    fn media_roots_are_absolute_and_pipe_commands_have_plain_names() {
        let mut config = Config::default();
        config.media.roots = vec!["music".into()];
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("media.roots"), "{err}");
        config.media.roots = vec!["/srv/music".into()];
        config.check().unwrap();
        config.pipe.commands.insert("bad name".into(), "cat".into());
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("pipe.commands"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.toml");
        std::fs::write(&user, "[daemon]\nprofle = \"rock\"\n").unwrap();
        let mut loader = ConfigLoader::new(Flags {
            config: Some(user),
            ..Flags::default()
        });
        loader.system_config = dir.path().join("absent.toml");
        let err = format!("{:#}", loader.load().unwrap_err());
        assert!(err.contains("profle"), "{err}");
    }
}
