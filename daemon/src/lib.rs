//! djinnd's service side: wiring actors, the ZeroMQ control plane, events, state and systemd.
//!
//! [`Daemon::start`] brings everything up and returns once the control socket is bound (the
//! moment systemd is told READY); [`Daemon::run`] serves until shutdown is triggered, then
//! answers the requests in flight, flushes state and stops the actors. The binaries in
//! `src/bin` are thin: flags, logging, signals.

pub mod client;
pub mod config;
pub mod control;
pub mod http;
pub mod logging;
pub mod media;
pub mod offline;
pub mod publisher;
pub mod rpc;
pub mod shell;
pub mod state;
pub mod systemd;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use djinn_actors::audio::{AudioActor, AudioArgs, Backend, LayerMemory};
use djinn_actors::backends::BackendProbe;
use djinn_actors::director::{Director, DirectorArgs};
use djinn_actors::events::EventSink;
use djinn_actors::generator::{Generator, GeneratorArgs};
use djinn_actors::library::{Library, LibraryArgs};
use djinn_actors::profiles::{
    DEFAULT_PROFILE, ProfileArgs, ProfileLibrary, ProfileSelection, ReloadProfiles, SetProfile,
};
use djinn_actors::supervisor::{Health, RESTART_LIMIT, RESTART_WINDOW, Supervisor};
use djinn_actors::transport::{GetTransport, SetTransport, TransportActor, TransportArgs};
use djinn_engine::transport::{Transport, TransportChange};
use kameo::actor::{ActorRef, Spawn};
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use zeromq::{PubSocket, RouterSocket, Socket, SocketOptions};

use crate::config::{AudioBackend, Config, ConfigLoader};

/// How long shutdown waits for requests in flight before giving up on them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(1200);

/// Renders (loops, songs, presets) that run at once; more wait for a slot.
pub const RENDER_SLOTS: usize = 1;

/// A one-way switch every task can wait on.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Sender<bool>);

impl Default for Shutdown {
    fn default() -> Self {
        Self(watch::channel(false).0)
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // An error means the sender is gone, which is as good as shut down.
        let _ = rx.wait_for(|down| *down).await;
    }
}

/// Request counters for `daemon.status`.
#[derive(Debug, Default)]
pub struct ControlStats {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
}

/// What the control handlers share: actor references, configuration and counters.
pub struct Shared {
    pub config: RwLock<Config>,
    pub state_dir: PathBuf,
    pub control_endpoint: String,
    pub events_endpoint: String,
    /// The HTTP server's address as bound, when it serves.
    pub http_endpoint: Option<String>,
    pub transport: ActorRef<TransportActor>,
    pub transport_watch: watch::Receiver<Transport>,
    pub profiles: ActorRef<ProfileLibrary>,
    pub audio: ActorRef<AudioActor>,
    /// The bounds on layer length and layer memory, and the memory in use.
    pub layer_memory: Arc<LayerMemory>,
    pub generator: ActorRef<Generator>,
    /// The loop library (`library.build`, `library.search`).
    pub library: ActorRef<Library>,
    pub director: ActorRef<Director>,
    /// Renders (loops, songs, presets) running at once; more wait their turn.
    pub render_slots: Arc<Semaphore>,
    pub selection: watch::Receiver<ProfileSelection>,
    pub health: Health,
    pub backends: BackendProbe,
    pub started: Instant,
    pub started_at: SystemTime,
    pub shutdown: Shutdown,
    pub stats: ControlStats,
    /// Requests being answered, over every transport, within the configured limits.
    pub in_flight: control::InFlight,
    /// The event publisher's subscriber counts.
    pub publisher: Arc<publisher::PublisherStats>,
    /// How keeping state.json is going.
    pub saving: state::Saving,
}

impl Shared {
    /// A copy of the configuration in force.
    pub fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The `state` section of `daemon.status`.
    pub fn state_report(&self) -> serde_json::Value {
        self.saving.report()
    }
}

/// The loop library's file in the state directory.
pub fn library_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("library").join("labeled_prompts.jsonl")
}

/// A started daemon.
pub struct Daemon {
    shared: Arc<Shared>,
    loader: ConfigLoader,
    supervisor: ActorRef<Supervisor>,
    server: JoinHandle<()>,
    http_server: Option<JoinHandle<()>>,
    publisher: JoinHandle<()>,
    watchdog: Option<JoinHandle<()>>,
    /// Saves the state as it changes.
    state_keeper: JoinHandle<()>,
    _watcher: djinn_actors::watcher::Watcher,
}

impl Daemon {
    /// Loads configuration, starts the actors, binds both sockets and tells systemd READY.
    pub async fn start(loader: ConfigLoader) -> anyhow::Result<Daemon> {
        let config = loader.load()?;
        let state_dir = config.state_dir();
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let saved = state::load(&state_dir);
        let saving = state::Saving::new(saved.clone());

        let (events, events_rx) = EventSink::channel(4096);
        let health = Health::new(events.clone());
        let supervisor = Supervisor::spawn(());

        let (transport_tx, transport_watch) = watch::channel(Transport::default());
        let transport = TransportActor::supervise(
            &supervisor,
            TransportArgs {
                published: transport_tx,
                health: health.clone(),
            },
        )
        .restart_limit(RESTART_LIMIT, RESTART_WINDOW)
        .spawn()
        .await;

        let wanted = config
            .daemon
            .profile
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.profile.clone()))
            .unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        let (selection_tx, selection) = watch::channel(ProfileSelection {
            dirs: config.daemon.profiles_dir.iter().cloned().collect(),
            active: wanted.clone(),
        });
        let profiles = ProfileLibrary::supervise(
            &supervisor,
            ProfileArgs {
                selection: selection_tx,
                transport: transport.clone(),
                health: health.clone(),
            },
        )
        .restart_limit(RESTART_LIMIT, RESTART_WINDOW)
        .spawn()
        .await;

        // A remembered session resumes where it stopped, unless a profile was asked for.
        match saved.filter(|_| config.daemon.profile.is_none()) {
            Some(saved) => {
                let change = TransportChange {
                    tempo: Some(saved.tempo),
                    meter: Some(saved.meter),
                    key: Some(saved.key.tonic.to_string()),
                    scale: Some(saved.key.scale),
                };
                let source = "state".to_owned();
                if let Err(e) = transport.ask(SetTransport { change, source }).await {
                    tracing::warn!(error = %e, "saved transport not restored");
                }
            }
            None => {
                let active = selection.borrow().active.clone();
                if let Err(e) = profiles.ask(SetProfile { name: active }).await {
                    tracing::warn!(error = %e, "start profile not applied");
                }
            }
        }

        let effects = profiles
            .ask(djinn_actors::profiles::GetProfile { name: None })
            .await
            .map(|p| master_fx(&p))
            .unwrap_or_default();
        let layer_memory =
            LayerMemory::new(config.audio.max_layer_seconds, config.layer_memory_bytes());
        let audio = AudioActor::supervise(
            &supervisor,
            AudioArgs {
                backend: match config.audio.backend {
                    None => Backend::Auto,
                    Some(AudioBackend::Jack) => Backend::Jack,
                    Some(AudioBackend::Offline) => Backend::Offline,
                    Some(AudioBackend::None) => Backend::None,
                },
                jack_name: config.audio.jack_name.clone(),
                connect: config.audio.connect.clone(),
                clock: djinn_actors::audio::ClockSettings {
                    source: config.transport.source,
                    master: config.transport.master_clock,
                    clock_in: config.transport.clock_in.clone(),
                    clock_out: config.transport.clock_out.clone(),
                    alsa_port: config.transport.alsa_port.clone(),
                },
                recordings: state_dir.join("recordings"),
                fast: config.audio.fast,
                keep_recordings: config.audio.keep_recordings,
                fx: effects,
                transport: transport.clone(),
                transport_watch: transport_watch.clone(),
                health: health.clone(),
                layer_memory: layer_memory.clone(),
            },
        )
        .restart_limit(RESTART_LIMIT, RESTART_WINDOW)
        .spawn()
        .await;

        let preset_dirs = config
            .daemon
            .profiles_dir
            .iter()
            .map(|d| d.join("presets"))
            .collect();
        let generator = Generator::supervise(
            &supervisor,
            GeneratorArgs {
                scripts_dir: config.daemon.scripts_dir.clone(),
                preset_dirs,
                health: health.clone(),
            },
        )
        .restart_limit(RESTART_LIMIT, RESTART_WINDOW)
        .spawn()
        .await;

        let library = Library::supervise(
            &supervisor,
            LibraryArgs {
                file: library_file(&state_dir),
                health: health.clone(),
            },
        )
        .restart_limit(RESTART_LIMIT, RESTART_WINDOW)
        .spawn()
        .await;

        let director = Director::supervise(
            &supervisor,
            DirectorArgs {
                scripts_dir: config.daemon.scripts_dir.clone(),
                ratings: state_dir.join("ratings.jsonl"),
                audio: audio.clone(),
                generator: generator.clone(),
                profiles: profiles.clone(),
                transport: transport.clone(),
                transport_watch: transport_watch.clone(),
                health: health.clone(),
                library: Some(library.clone()),
            },
        )
        .restart_limit(RESTART_LIMIT, RESTART_WINDOW)
        .spawn()
        .await;
        let watcher = djinn_actors::watcher::Watcher::start(
            config.daemon.scripts_dir.clone(),
            config.daemon.profiles_dir.clone(),
            djinn_actors::watcher::WatchTargets {
                director: director.clone(),
                generator: generator.clone(),
                profiles: profiles.clone(),
            },
        );

        let mut events_socket = PubSocket::with_options(events_options(&config.control));
        let events_endpoint = events_socket
            .bind(&config.control.events)
            .await
            .with_context(|| format!("cannot bind the event socket {}", config.control.events))?
            .to_string();
        let mut control_socket = RouterSocket::with_options(control_options(&config.control));
        let control_endpoint = control_socket
            .bind(&config.control.endpoint)
            .await
            .with_context(|| format!("cannot bind the control socket {}", config.control.endpoint))?
            .to_string();

        let http_listener = match &config.http.bind {
            Some(bind) => {
                let listener = tokio::net::TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("cannot serve HTTP on {bind}"))?;
                Some(http::BoundedListener::new(
                    listener,
                    config.control.max_connections,
                ))
            }
            None => None,
        };
        let http_endpoint = http_listener
            .as_ref()
            .and_then(|l| axum::serve::Listener::local_addr(l).ok())
            .map(|addr| format!("http://{addr}"));

        let publisher_stats = Arc::new(publisher::PublisherStats::default());
        // NOTE: one ring of events_queue events for every HTTP stream together; a stream
        // that falls further behind skips ahead and is told how many it missed.
        let (streams, _) = tokio::sync::broadcast::channel(config.control.events_queue);
        let publisher = tokio::spawn(publisher::publish(
            events_socket,
            events_rx,
            transport_watch.clone(),
            publisher_stats.clone(),
            streams.clone(),
        ));
        let backends = BackendProbe {
            models_dir: config.models_dir(),
        };
        let in_flight = control::InFlight::new(&config.control);
        let shared = Arc::new(Shared {
            config: RwLock::new(config),
            state_dir,
            control_endpoint,
            events_endpoint,
            http_endpoint,
            transport,
            transport_watch,
            profiles,
            audio,
            layer_memory,
            generator,
            library,
            director,
            // NOTE: one render at a time per core is what this box can do without starving
            // the audio thread of CPU.
            render_slots: Arc::new(Semaphore::new(RENDER_SLOTS)),
            selection,
            health,
            backends,
            started: Instant::now(),
            started_at: SystemTime::now(),
            shutdown: Shutdown::default(),
            stats: ControlStats::default(),
            in_flight,
            publisher: publisher_stats,
            saving,
        });
        let server = tokio::spawn(control::serve(control_socket, shared.clone()));
        let http_server =
            http_listener.map(|l| tokio::spawn(http::serve(l, shared.clone(), streams)));
        tracing::info!(
            control = %shared.control_endpoint,
            events = %shared.events_endpoint,
            http = shared.http_endpoint.as_deref().unwrap_or("off"),
            state_dir = %shared.state_dir.display(),
            profile = %shared.selection.borrow().active,
            "djinnd ready"
        );
        systemd::ready(&format!("serving on {}", shared.control_endpoint));
        shared.health.events().publish(
            "daemon",
            json!({ "kind": "started", "pid": std::process::id() }),
        );
        let watchdog = systemd::watchdog_interval()
            .map(|every| tokio::spawn(keep_watchdog_fed(shared.clone(), every)));
        let state_keeper = tokio::spawn(keep_state_saved(shared.clone()));
        Ok(Daemon {
            state_keeper,
            shared,
            loader,
            supervisor,
            server,
            http_server,
            publisher,
            watchdog,
            _watcher: watcher,
        })
    }

    /// The state the handlers share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The control endpoint as bound (a tcp port 0 resolved to the real port).
    pub fn control_endpoint(&self) -> &str {
        &self.shared.control_endpoint
    }

    /// The event endpoint as bound.
    pub fn events_endpoint(&self) -> &str {
        &self.shared.events_endpoint
    }

    /// The switch that stops the daemon.
    pub fn shutdown(&self) -> Shutdown {
        self.shared.shutdown.clone()
    }

    /// SIGHUP: re-reads configuration and profiles. A broken configuration is reported and
    /// the running one kept.
    pub async fn reload(&self) {
        systemd::reloading();
        let events = self.shared.health.events();
        match self.loader.load() {
            Ok(config) => {
                let old = self.shared.config();
                if config.control != old.control {
                    tracing::warn!("control socket changes take effect at the next start");
                }
                if config.daemon.log_level != old.daemon.log_level {
                    tracing::warn!("log_level changes take effect at the next start");
                }
                let dirs = config.daemon.profiles_dir.iter().cloned().collect();
                // Layers already playing stay; the new limits apply to the next ones.
                self.shared
                    .layer_memory
                    .set_limits(config.audio.max_layer_seconds, config.layer_memory_bytes());
                *self
                    .shared
                    .config
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
                match self
                    .shared
                    .profiles
                    .ask(ReloadProfiles { dirs: Some(dirs) })
                    .await
                {
                    Ok(report) => {
                        events.publish(
                            "daemon",
                            json!({ "kind": "reloaded", "profiles": report.loaded,
                                    "profile_errors": report.errors }),
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "profiles not reloaded"),
                }
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "reload failed; keeping the running configuration"
                );
                events.publish(
                    "daemon",
                    json!({ "kind": "reload_failed", "error": format!("{e:#}") }),
                );
            }
        }
        systemd::reloaded();
    }

    /// Serves until shutdown is triggered, then drains requests, saves state and stops.
    pub async fn run(self) -> anyhow::Result<()> {
        self.shared.shutdown.wait().await;
        systemd::stopping();
        tracing::info!("shutting down");
        if let Err(e) = self.server.await {
            tracing::error!(error = %e, "control server ended abnormally");
        }
        if let Some(http_server) = self.http_server {
            match tokio::time::timeout(DRAIN_TIMEOUT, http_server).await {
                Ok(Err(e)) => tracing::error!(error = %e, "HTTP server ended abnormally"),
                Ok(Ok(())) => {}
                Err(_) => tracing::warn!("HTTP connections still open at shutdown"),
            }
        }
        if let Some(watchdog) = self.watchdog {
            watchdog.abort();
        }
        self.state_keeper.abort();
        save_state(&self.shared).await;
        // NOTE: the supervisor stops its children before itself.
        let _ = self.supervisor.stop_gracefully().await;
        self.supervisor.wait_for_shutdown().await;
        self.shared
            .health
            .events()
            .publish("daemon", json!({ "kind": "stopped" }));
        let shared = self.shared;
        drop(shared);
        // The publisher ends when the last event sink is dropped; give it a moment to send
        // the final events, but never hang the exit on it.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.publisher).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long a connection may take to complete the ZMTP handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A request may run this far over `max_frame_bytes` and still get an error reply; a
/// frame header announcing more closes the connection as it arrives.
pub const OVERSIZE_GRACE: usize = 64 * 1024;

/// Largest message a subscriber may send: subscriptions are topic prefixes.
const SUBSCRIPTION_MAX_BYTES: usize = 4096;

/// Kernel socket buffers of each event subscriber's connection.
const EVENTS_TCP_BUFFER: usize = 64 * 1024;

/// Subscriptions one subscriber may hold.
const MAX_SUBSCRIPTIONS: usize = 256;

/// The control socket's bounds: message size, connections, handshake time.
fn control_options(control: &config::ControlConfig) -> SocketOptions {
    let mut options = SocketOptions::default();
    options
        .max_message_size(control.max_frame_bytes.saturating_add(OVERSIZE_GRACE))
        .max_connections(control.max_connections)
        .handshake_timeout(HANDSHAKE_TIMEOUT);
    options
}

/// The event socket's bounds: what a subscriber may send and hold, and its queue.
fn events_options(control: &config::ControlConfig) -> SocketOptions {
    let mut options = SocketOptions::default();
    options
        .max_message_size(SUBSCRIPTION_MAX_BYTES)
        .max_subscriptions(MAX_SUBSCRIPTIONS)
        .send_high_water_mark(control.events_queue)
        // NOTE: events are small and steady; the crate's 4 MiB buffers would let each
        // subscriber that stops reading hold 8 MiB of kernel memory before its queue
        // (and its bound) even comes into play.
        .tcp_buffer_size(Some(EVENTS_TCP_BUFFER))
        .max_connections(control.max_connections)
        .handshake_timeout(HANDSHAKE_TIMEOUT);
    options
}

/// The master effects a profile starts with.
pub(crate) fn master_fx(profile: &djinn_engine::profile::Profile) -> djinn_engine::mix::MasterFx {
    let e = profile.effects;
    djinn_engine::mix::MasterFx {
        reverb_size: e.reverb_size as f32,
        reverb_mix: e.reverb_mix as f32,
        delay_beats: e.delay_beats as f32,
        delay_feedback: e.delay_feedback as f32,
        delay_mix: e.delay_mix as f32,
        limiter_ceiling_db: profile.loudness.true_peak_dbtp as f32,
        ..djinn_engine::mix::MasterFx::default()
    }
}

/// How often the state is compared with what was saved (and a failed save retried).
const STATE_SAVE_EVERY: Duration = Duration::from_secs(3);

fn current_state(shared: &Shared, transport: &Transport) -> state::SavedState {
    state::SavedState {
        profile: shared.selection.borrow().active.clone(),
        tempo: transport.tempo,
        meter: transport.meter,
        key: transport.key,
    }
}

/// Saves the state on the blocking pool; `force` writes even when nothing changed.
async fn write_state(shared: &Arc<Shared>, saved: state::SavedState, force: bool) {
    let keeper = shared.clone();
    let result = tokio::task::spawn_blocking(move || {
        keeper
            .saving
            .save(&keeper.state_dir, &saved, force, keeper.health.events())
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        // Reported (once per outage) by `Saving`, and retried by the keeper.
        Ok(Err(_)) => {}
        Err(e) => tracing::error!(error = %e, "state not saved"),
    }
}

/// Saves the state whenever it changes, and retries a failed save, every few seconds: a
/// crash loses little, and a full disk is seen when it happens, not at the next restart.
async fn keep_state_saved(shared: Arc<Shared>) {
    let first = tokio::time::Instant::now() + STATE_SAVE_EVERY;
    let mut ticker = tokio::time::interval_at(first, STATE_SAVE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let transport = shared.transport_watch.borrow().clone();
        let saved = current_state(&shared, &transport);
        write_state(&shared, saved, false).await;
    }
}

async fn save_state(shared: &Arc<Shared>) {
    let transport = match shared.transport.ask(GetTransport).await {
        Ok(snapshot) => snapshot.0,
        Err(_) => shared.transport_watch.borrow().clone(),
    };
    let saved = current_state(shared, &transport);
    write_state(shared, saved, true).await;
    if shared.saving.report()["error"].is_null() {
        tracing::info!(path = %state::path(&shared.state_dir).display(), "state saved");
    }
}

/// Pings the systemd watchdog only while the actor system answers, so a wedged daemon is
/// restarted.
async fn keep_watchdog_fed(shared: Arc<Shared>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let alive = tokio::time::timeout(every, shared.transport.ask(GetTransport)).await;
        match alive {
            Ok(Ok(_)) => systemd::watchdog(),
            _ => tracing::warn!("transport actor did not answer; watchdog not fed"),
        }
    }
}
