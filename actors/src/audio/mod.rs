//! The audio actor: owns the mixer's handle and the driver that runs the mixer (JACK, the
//! offline driver, or none), keeps the table of layers, and turns the mixer's notifications
//! into events.
//!
//! Buffers come back from the mixer in notifications and are dropped here, off the realtime
//! thread. When the JACK server goes away the actor reports it, retries every second, and
//! on its return starts a fresh mixer with the same layers, effects and connections.

mod alsa;
mod clock;
mod jack;
pub mod memory;
mod offline;
pub mod pipe;
mod timebase;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use djinn_engine::chain::ChainSettings;
use djinn_engine::decode::zero_nonfinite_shared;
use djinn_engine::dsp::{FilterMode, gain_to_db};
use djinn_engine::mix::{
    Command, FilterSettings, Group, LayerAudio, LayerId, LayerParams, MasterFx, MixerHandle,
    Notification, Processor, Quantize, Refusal, Stage,
};
use djinn_engine::transport::Transport;
use kameo::Reply;
use kameo::actor::{Actor, ActorRef, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible, PanicError};
use kameo::message::{Context, Message};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

pub use self::clock::{ClockSettings, ClockStatus, RampTempo, SetClock};
use self::jack::JackDriver;
pub use self::jack::JackStats;
pub use self::memory::{LayerLimitError, LayerMemory, Reservation};
pub use self::offline::Hold;
use self::offline::OfflineDriver;
use crate::supervisor::Health;
use crate::transport::{SyncPosition, TransportActor};

/// The audio actor's name in health reports and `daemon.status`.
pub const NAME: &str = "audio";
/// Sample rate of the offline driver.
pub const OFFLINE_RATE: u32 = 48_000;
/// Period of the offline driver, frames.
pub const OFFLINE_PERIOD: usize = 256;
/// How often the actor drains notifications.
const TICK: Duration = Duration::from_millis(10);
/// How often the JACK load, longest callback and xruns are published as `health`.
const HEALTH_REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often a lost JACK server is looked for.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Least time between two `health` events of one mixer stage's non-finite resets: a
/// stage spoiled every period is reported once a second, with the count in between.
const NONFINITE_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Which driver to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// JACK when a server runs, the offline driver otherwise.
    Auto,
    Jack,
    Offline,
    None,
}

/// What the audio actor starts (and restarts) from.
#[derive(Clone)]
pub struct AudioArgs {
    pub backend: Backend,
    pub jack_name: String,
    /// Ports out_L/out_R connect to; empty: the first physical playback ports.
    pub connect: Vec<String>,
    /// The transport's clock source, MIDI clock output and clock port connections.
    pub clock: ClockSettings,
    /// Where the offline driver writes.
    pub recordings: PathBuf,
    /// Offline driver without realtime pacing.
    pub fast: bool,
    /// Offline recordings kept (one per hour of audio); older ones are deleted.
    pub keep_recordings: usize,
    pub fx: MasterFx,
    pub transport: ActorRef<TransportActor>,
    pub transport_watch: watch::Receiver<Transport>,
    pub health: Health,
    /// The bounds on layer length and on the memory all layers hold.
    pub layer_memory: Arc<LayerMemory>,
}

enum Driver {
    Jack(JackDriver),
    Offline(OfflineDriver),
    /// JACK was asked for (or was running) and is not reachable now.
    WaitingForJack {
        since: std::time::Instant,
        last_try: std::time::Instant,
    },
    Off,
}

/// One layer as the actor knows it.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub id: LayerId,
    pub group: Group,
    /// Where the audio came from: a path, `frames`, a buffer id.
    pub source: String,
    pub frames: usize,
    pub seconds: f64,
    #[serde(rename = "loop")]
    pub looped: bool,
    pub params: LayerParams,
    /// pending (waiting for its beat), playing, or stopping.
    pub state: &'static str,
    /// Transport frame of its first sample, once started.
    pub started_frame: Option<u64>,
    #[serde(skip)]
    audio: Arc<[[f32; 2]]>,
    /// What a pending replace swaps out, restored if the replace misses its bar.
    #[serde(skip)]
    previous: Option<Swapped>,
    /// The layer memory its audio holds, given back when the layer is dropped.
    #[serde(skip)]
    reservation: Arc<Reservation>,
}

/// What a pending replace swaps out: the source, the audio and the memory it holds.
type Swapped = (String, Arc<[[f32; 2]]>, Arc<Reservation>);

/// The owner of the mixer.
pub struct AudioActor {
    args: AudioArgs,
    handle: Option<MixerHandle>,
    driver: Driver,
    layers: BTreeMap<LayerId, LayerInfo>,
    next_id: LayerId,
    fx: MasterFx,
    /// The live effect chain on the inputs, and whether it is heard.
    live: LiveChainSettings,
    /// The pipe's command, when pipe mode is on.
    pipe_command: Option<PipeCommand>,
    /// Its worker, while the command runs.
    pipe: Option<pipe::PipeWorker>,
    /// The pipe's worker ends while no command runs.
    pipe_ends: Option<djinn_engine::mix::pipe::PipeEnds>,
    sample_rate: u32,
    period: usize,
    /// Frames of latency the mixer adds (its limiter's lookahead).
    latency: usize,
    last_xruns: u64,
    /// Launches and replaces that reached the mixer after their bar had begun.
    missed: u64,
    reason: String,
    /// Whether the transport should roll: true from the start, changed by transport.start
    /// and transport.stop, and carried over to a new mixer after a reconnect.
    rolling: bool,
    /// How far a `--fast` offline driver may run ahead of the director.
    hold: Hold,
    /// When the last periodic `health` report of the audio engine went out.
    last_report: std::time::Instant,
    ticker: Option<tokio::task::JoinHandle<()>>,
    clock: clock::ClockWatch,
    /// The ALSA sequencer port followed, once connected, and how that went.
    alsa: Option<alsa::AlsaClock>,
    alsa_state: Option<String>,
    /// Non-finite samples zeroed on their way into layers.
    nonfinite_zeroed: u64,
    /// Times a mixer stage's output went non-finite and the stage was reset.
    nonfinite_resets: u64,
    /// Per stage ([`Stage::ALL`] order): when its last event went out, and the resets
    /// since that were not published.
    nonfinite_reported: [Option<std::time::Instant>; 3],
    nonfinite_quiet: [u64; 3],
}

impl AudioActor {
    /// Starts the pipe's command on its ends, when there is a command and a processor.
    fn start_pipe(&mut self, sample_rate: u32) {
        if let (Some(command), None) = (&self.pipe_command, &self.pipe)
            && let Some(ends) = self.pipe_ends.take()
        {
            self.pipe = Some(pipe::PipeWorker::start(
                command.line.clone(),
                ends,
                sample_rate,
                self.events().clone(),
            ));
        }
    }

    /// Builds a processor at the driver's rate, seeded with the transport and effects, and
    /// with every known layer relaunched.
    fn processor(&mut self, sample_rate: u32, period: usize) -> Processor {
        let mut transport = self.args.transport_watch.borrow().clone();
        transport.rolling = self.rolling;
        let (mut processor, mut handle) = Processor::new(sample_rate, period, transport);
        self.feed_alsa_clock(&mut processor);
        let _ = handle.send(Command::SetFx(self.fx));
        let _ = handle.send(Command::SetLiveChain {
            settings: self.live.settings,
            on: self.live.on,
        });
        for layer in self.layers.values_mut() {
            let audio = Box::new(LayerAudio {
                frames: layer.audio.clone(),
                looped: layer.looped,
            });
            let _ = handle.send(Command::Launch {
                id: layer.id,
                audio,
                group: layer.group,
                params: layer.params,
                at: Quantize::Now,
            });
            layer.state = "pending";
        }
        // A new processor has a new pipe: the old worker stops, one starts on the new ends.
        if let Some(old) = self.pipe.take() {
            drop(old.stop());
        }
        self.pipe_ends = handle.take_pipe();
        if self.pipe_command.is_some() {
            let _ = handle.send(Command::SetPipe(true));
        }
        self.handle = Some(handle);
        self.start_pipe(sample_rate);
        self.apply_clock();
        self.sample_rate = sample_rate;
        self.period = period;
        self.latency = processor.latency();
        processor
    }

    /// Hands the mixer the clock of the configured ALSA sequencer port, connecting to it
    /// the first time.
    fn feed_alsa_clock(&mut self, processor: &mut Processor) {
        let Some(wanted) = self.args.clock.alsa_port.clone() else {
            return;
        };
        if let Some(alsa) = &self.alsa {
            processor.set_clock_feed(alsa.renew());
            return;
        }
        match alsa::AlsaClock::connect(&wanted) {
            Ok((alsa, feed)) => {
                tracing::info!(port = %alsa.port, "following MIDI clock from ALSA");
                self.alsa_state = Some(format!("connected to {}", alsa.port));
                processor.set_clock_feed(feed);
                self.alsa = Some(alsa);
            }
            Err(e) => {
                tracing::warn!(port = %wanted, error = %e, "no ALSA MIDI clock");
                self.alsa_state = Some(format!("not connected to {wanted:?}: {e}"));
            }
        }
    }

    fn start_jack(&mut self) -> Result<(), String> {
        let server = jack::connect(&self.args.jack_name).map_err(|e| e.to_string())?;
        let (rate, period) = (server.sample_rate, server.period);
        let processor = self.processor(rate, period.max(1));
        let connections = jack::Connections {
            outputs: self.args.connect.clone(),
            clock_in: self.args.clock.clock_in.clone(),
            clock_out: self.args.clock.clock_out.clone(),
        };
        let driver = server
            .start(processor, &connections)
            .map_err(|e| e.to_string())?;
        tracing::info!(client = %driver.name, rate, period, "playing through JACK");
        self.lead_jack_timebase(&driver);
        self.reason = format!("JACK client {} at {rate} Hz, {period} frames", driver.name);
        self.driver = Driver::Jack(driver);
        Ok(())
    }

    fn start_offline(&mut self) {
        let processor = self.processor(OFFLINE_RATE, OFFLINE_PERIOD);
        match OfflineDriver::start(
            processor,
            self.args.recordings.clone(),
            OFFLINE_PERIOD,
            self.args.fast,
            self.args.keep_recordings,
            self.hold.clone(),
            self.events().clone(),
        ) {
            Ok(driver) => {
                self.reason = format!(
                    "no JACK server: writing the master to {}{}",
                    self.args.recordings.display(),
                    if self.args.fast {
                        " as fast as possible"
                    } else {
                        ""
                    }
                );
                self.driver = Driver::Offline(driver);
            }
            Err(e) => {
                self.reason = format!("offline driver failed: {e}");
                tracing::error!(error = %e, "offline driver failed");
                self.driver = Driver::Off;
            }
        }
    }

    fn events(&self) -> &crate::events::EventSink {
        self.args.health.events()
    }

    /// Drains notifications, drops retired buffers, publishes events, watches JACK.
    fn tick(&mut self) {
        let mut position = None;
        while let Some(note) = self.handle.as_mut().and_then(MixerHandle::poll) {
            match note {
                Notification::Started { id, frame, beat } => {
                    if let Some(layer) = self.layers.get_mut(&id) {
                        layer.state = "playing";
                        layer.started_frame = Some(frame);
                    }
                    self.events().publish(
                        "layer.started",
                        json!({ "id": id, "frame": frame, "beat": beat }),
                    );
                }
                Notification::Replaced { id, frame } => {
                    if let Some(layer) = self.layers.get_mut(&id) {
                        layer.previous = None;
                    }
                    self.events()
                        .publish("layer.replaced", json!({ "id": id, "frame": frame }));
                }
                Notification::Ended { id, frame } => {
                    self.layers.remove(&id);
                    self.events()
                        .publish("layer.ended", json!({ "id": id, "frame": frame }));
                }
                Notification::Retired(audio) => drop(audio),
                Notification::Refused {
                    id,
                    audio,
                    reason: Refusal::Late,
                } => {
                    drop(audio);
                    self.missed += 1;
                    self.missed_bar(id);
                }
                Notification::Refused { id, audio, reason } => {
                    drop(audio);
                    if reason == Refusal::NoFreeSlot {
                        self.layers.remove(&id);
                    }
                    tracing::warn!(id, ?reason, "mixer refused a layer command");
                }
                Notification::Position {
                    frame,
                    beats,
                    rolling,
                    tempo,
                    clock,
                } => {
                    position = Some((frame, beats, rolling));
                    self.clock_report(clock, tempo);
                }
                Notification::Clock(event) => self.clock_event(event),
                Notification::Meter { peak, rms } => {
                    let names = std::iter::once("master").chain(Group::ALL.map(Group::name));
                    let outputs: serde_json::Map<String, serde_json::Value> = names
                        .zip(peak.iter().zip(&rms))
                        .map(|(name, (p, r))| {
                            let db = |v: f32| (gain_to_db(v) * 10.0).round() / 10.0;
                            (
                                name.to_owned(),
                                json!({ "peak_db": [db(p[0]), db(p[1])], "rms_db": [db(r[0]), db(r[1])] }),
                            )
                        })
                        .collect();
                    self.events()
                        .publish("meter", serde_json::Value::Object(outputs));
                }
                Notification::NonFinite {
                    stage,
                    layer,
                    frame,
                } => self.nonfinite_reset(stage, layer, frame),
            }
        }
        if let Some((frame, beats, rolling)) = position {
            let sync = SyncPosition {
                frame,
                beats,
                rolling,
                sample_rate: self.sample_rate,
            };
            // A position lost to a full mailbox is replaced by the next one 20 ms later.
            let _ = self.args.transport.tell(sync).try_send();
        }
        self.watch_jack();
    }

    /// A mixer stage went non-finite and reset itself: counted, logged and published as a
    /// `health` event, at most once a second per stage (with the resets in between).
    fn nonfinite_reset(&mut self, stage: Stage, layer: Option<LayerId>, frame: u64) {
        self.nonfinite_resets += 1;
        let index = Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
        let now = std::time::Instant::now();
        let (Some(last), Some(quiet)) = (
            self.nonfinite_reported.get_mut(index),
            self.nonfinite_quiet.get_mut(index),
        ) else {
            return;
        };
        if last.is_some_and(|at| now.duration_since(at) < NONFINITE_REPORT_EVERY) {
            *quiet += 1;
            return;
        }
        let unreported = std::mem::take(quiet);
        *last = Some(now);
        tracing::warn!(
            stage = stage.name(),
            layer,
            frame,
            unreported,
            "mixer output went non-finite: that block silenced, the stage reset"
        );
        let total = self.nonfinite_resets;
        self.events().publish(
            "health",
            json!({
                "kind": "nonfinite_reset",
                "stage": stage.name(),
                "layer": layer,
                "frame": frame,
                "unreported": unreported,
                "nonfinite_resets": total,
            }),
        );
    }

    /// Non-finite samples were zeroed on their way into a layer from `source`: counted,
    /// logged and published as a `health` event.
    fn nonfinite_zeroed(&mut self, source: &str, samples: u64, first_s: Option<f64>) {
        self.nonfinite_zeroed += samples;
        tracing::warn!(
            %source,
            samples,
            first_s,
            "non-finite samples in a layer's audio zeroed"
        );
        let total = self.nonfinite_zeroed;
        self.events().publish(
            "health",
            json!({
                "kind": "nonfinite_input",
                "source": source,
                "samples": samples,
                "first_s": first_s,
                "nonfinite_zeroed": total,
            }),
        );
    }

    /// `frames` as a layer may hold them: any non-finite sample zeroed and reported. The
    /// control methods zero them before resampling; this catches every other way in.
    fn finite(&mut self, frames: Arc<[[f32; 2]]>, source: &str) -> Arc<[[f32; 2]]> {
        let (frames, found) = zero_nonfinite_shared(frames);
        if !found.is_none() {
            let first_s = found.first_s(self.sample_rate);
            self.nonfinite_zeroed(source, found.samples, first_s);
        }
        frames
    }

    /// A launch or replace came too late for its bar: a new layer is dropped, a replaced
    /// one keeps playing what it played.
    fn missed_bar(&mut self, id: LayerId) {
        let Some(layer) = self.layers.get_mut(&id) else {
            return;
        };
        let source = match layer.previous.take() {
            Some((source, audio, reservation)) => {
                let missed = std::mem::replace(&mut layer.source, source);
                layer.frames = audio.len();
                layer.seconds = audio.len() as f64 / f64::from(self.sample_rate);
                layer.audio = audio;
                layer.reservation = reservation;
                missed
            }
            None => {
                let missed = layer.source.clone();
                self.layers.remove(&id);
                missed
            }
        };
        tracing::warn!(id, %source, "layer missed its bar");
        self.events().publish(
            "layer.missed",
            json!({ "id": id, "source": source, "reason": "not ready before its bar" }),
        );
    }

    fn watch_jack(&mut self) {
        let now = std::time::Instant::now();
        if let Driver::Jack(driver) = &mut self.driver {
            driver.watch_connections(now);
        }
        match &self.driver {
            Driver::Jack(driver) => {
                if now.duration_since(self.last_report) >= HEALTH_REPORT_EVERY {
                    self.last_report = now;
                    self.events().publish(
                        "health",
                        json!({
                            "kind": "audio",
                            "dsp_load": driver.dsp_load(),
                            "longest_callback_us": driver.stats.longest_callback_us.load(Ordering::Relaxed),
                            "xruns": driver.stats.xruns.load(Ordering::Relaxed),
                        }),
                    );
                }
                let xruns = driver.stats.xruns.load(Ordering::Relaxed);
                if xruns > self.last_xruns {
                    self.events().publish(
                        "xrun",
                        json!({ "count": xruns - self.last_xruns, "total": xruns }),
                    );
                    self.last_xruns = xruns;
                }
                if driver.stats.server_gone.load(Ordering::Relaxed) {
                    tracing::error!("the JACK server went away; retrying every second");
                    self.events()
                        .publish("health", json!({ "kind": "jack_lost" }));
                    self.reason = "the JACK server went away; retrying every second".into();
                    self.handle = None;
                    // Drop the dead client in its own thread: closing it may block.
                    let old = std::mem::replace(
                        &mut self.driver,
                        Driver::WaitingForJack {
                            since: now,
                            last_try: now,
                        },
                    );
                    std::thread::spawn(move || drop(old));
                }
            }
            Driver::WaitingForJack { since, last_try }
                if now.duration_since(*last_try) >= RECONNECT_EVERY =>
            {
                let since = *since;
                match self.start_jack() {
                    Ok(()) => {
                        self.last_xruns = 0;
                        tracing::info!(after_s = since.elapsed().as_secs_f32(), "JACK is back");
                        self.events().publish(
                            "health",
                            json!({ "kind": "jack_restored", "after_s": since.elapsed().as_secs_f64() }),
                        );
                    }
                    Err(_) => {
                        self.driver = Driver::WaitingForJack {
                            since,
                            last_try: now,
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn send(&mut self, command: Command) -> Result<(), AudioError> {
        let handle = self
            .handle
            .as_mut()
            .ok_or_else(|| AudioError::Off(self.reason.clone()))?;
        handle.send(command).map_err(|_| AudioError::QueueFull)
    }
}

impl Actor for AudioActor {
    type Args = AudioArgs;
    type Error = Infallible;

    fn name() -> &'static str {
        NAME
    }

    async fn on_start(args: Self::Args, actor_ref: ActorRef<Self>) -> Result<Self, Self::Error> {
        let now = std::time::Instant::now();
        let mut actor = AudioActor {
            fx: args.fx,
            live: LiveChainSettings::default(),
            pipe_command: None,
            pipe: None,
            pipe_ends: None,
            args,
            handle: None,
            driver: Driver::Off,
            layers: BTreeMap::new(),
            next_id: 1,
            sample_rate: OFFLINE_RATE,
            period: OFFLINE_PERIOD,
            latency: 0,
            last_xruns: 0,
            missed: 0,
            reason: "audio is off (--audio none)".into(),
            rolling: true,
            hold: Hold::default(),
            last_report: std::time::Instant::now(),
            ticker: None,
            clock: clock::ClockWatch::default(),
            alsa: None,
            alsa_state: None,
            nonfinite_zeroed: 0,
            nonfinite_resets: 0,
            nonfinite_reported: [None; 3],
            nonfinite_quiet: [0; 3],
        };
        match actor.args.backend {
            Backend::None => {}
            Backend::Offline => actor.start_offline(),
            Backend::Jack => {
                if let Err(e) = actor.start_jack() {
                    tracing::warn!(error = %e, "no JACK server yet; retrying every second");
                    actor.reason = format!("waiting for a JACK server ({e})");
                    actor.driver = Driver::WaitingForJack {
                        since: now,
                        last_try: now,
                    };
                }
            }
            Backend::Auto => {
                if let Err(e) = actor.start_jack() {
                    tracing::info!(error = %e, "no JACK server: using the offline driver");
                    actor.start_offline();
                }
            }
        }
        let weak = actor_ref.downgrade();
        actor.ticker = Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let Some(actor) = weak.upgrade() else { break };
                if actor.tell(Tick).await.is_err() && !actor.is_alive() {
                    break;
                }
            }
        }));
        let mut transport = actor.args.transport_watch.clone();
        let weak = actor_ref.downgrade();
        tokio::spawn(async move {
            while transport.changed().await.is_ok() {
                let (tempo, meter) = {
                    let t = transport.borrow_and_update();
                    (t.tempo, t.meter)
                };
                let Some(actor) = weak.upgrade() else { break };
                let _ = actor.tell(FollowTransport { tempo, meter }).await;
            }
        });
        actor.args.health.started(NAME);
        Ok(actor)
    }

    async fn on_panic(
        &mut self,
        _: WeakActorRef<Self>,
        err: PanicError,
    ) -> Result<ControlFlow<ActorStopReason>, Self::Error> {
        self.args.health.panicked(NAME, &err);
        Ok(ControlFlow::Break(ActorStopReason::Panicked(err)))
    }

    async fn on_stop(
        &mut self,
        _: WeakActorRef<Self>,
        _: ActorStopReason,
    ) -> Result<(), Self::Error> {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        // Closing a JACK client or joining the offline thread blocks briefly.
        let driver = std::mem::replace(&mut self.driver, Driver::Off);
        let _ = tokio::task::spawn_blocking(move || drop(driver)).await;
        Ok(())
    }
}

/// Why an audio request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AudioError {
    /// No driver runs.
    #[error("audio is not running: {0}")]
    Off(String),
    /// No layer with that id.
    #[error("no layer {0}")]
    UnknownLayer(LayerId),
    /// All slots are taken.
    #[error(
        "all {} layer slots are in use; remove one first",
        djinn_engine::mix::MAX_LAYERS
    )]
    NoFreeSlot,
    /// The command queue to the mixer is full.
    #[error("the mixer's command queue is full; retry shortly")]
    QueueFull,
    /// The layer is too long, or the layers would hold too much memory.
    #[error(transparent)]
    Limit(#[from] LayerLimitError),
}

#[derive(Debug, Clone, Copy)]
struct Tick;

impl Message<Tick> for AudioActor {
    type Reply = ();

    async fn handle(&mut self, _: Tick, _: &mut Context<Self, Self::Reply>) {
        self.tick();
    }
}

#[derive(Debug, Clone, Copy)]
struct FollowTransport {
    tempo: f64,
    meter: djinn_engine::music::Meter,
}

impl Message<FollowTransport> for AudioActor {
    type Reply = ();

    async fn handle(&mut self, msg: FollowTransport, _: &mut Context<Self, Self::Reply>) {
        if let Some(handle) = self.handle.as_mut() {
            let _ = handle.send(Command::SetTempo(msg.tempo));
            let _ = handle.send(Command::SetMeter(msg.meter));
        }
    }
}

/// Adds a layer.
#[derive(Debug, Clone)]
pub struct AddLayer {
    pub frames: Arc<[[f32; 2]]>,
    pub looped: bool,
    pub group: Group,
    pub params: LayerParams,
    pub at: Quantize,
    pub source: String,
    /// The memory reserved for `frames` while they were prepared; `None`: reserved here.
    pub reservation: Option<Arc<Reservation>>,
}

impl AudioActor {
    /// Checks `frames` against the layer limits, reserving their memory unless the caller
    /// already did.
    fn admit(
        &self,
        frames: &[[f32; 2]],
        reservation: Option<Arc<Reservation>>,
    ) -> Result<Arc<Reservation>, AudioError> {
        let memory = &self.args.layer_memory;
        memory.check_length(frames.len(), self.sample_rate)?;
        Ok(match reservation {
            Some(reserved) => reserved,
            None => Arc::new(memory.reserve(frames.len() as u64 * memory::FRAME_BYTES)?),
        })
    }
}

impl Message<AddLayer> for AudioActor {
    type Reply = Result<LayerInfo, AudioError>;

    async fn handle(&mut self, msg: AddLayer, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        if self.layers.len() >= djinn_engine::mix::MAX_LAYERS {
            return Err(AudioError::NoFreeSlot);
        }
        let mut msg = msg;
        msg.frames = self.finite(msg.frames, &msg.source);
        let reservation = self.admit(&msg.frames, msg.reservation)?;
        let id = self.next_id;
        let audio = Box::new(LayerAudio {
            frames: msg.frames.clone(),
            looped: msg.looped,
        });
        self.send(Command::Launch {
            id,
            audio,
            group: msg.group,
            params: msg.params,
            at: msg.at,
        })?;
        self.next_id += 1;
        let info = LayerInfo {
            id,
            group: msg.group,
            source: msg.source,
            frames: msg.frames.len(),
            seconds: msg.frames.len() as f64 / f64::from(self.sample_rate),
            looped: msg.looped,
            params: msg.params,
            state: "pending",
            started_frame: None,
            audio: msg.frames,
            previous: None,
            reservation,
        };
        self.layers.insert(id, info.clone());
        Ok(info)
    }
}

/// Replaces a layer's audio with a crossfade.
#[derive(Debug, Clone)]
pub struct ReplaceLayer {
    pub id: LayerId,
    pub frames: Arc<[[f32; 2]]>,
    pub at: Quantize,
    pub crossfade_beats: f32,
    pub source: String,
    /// The memory reserved for `frames` while they were prepared; `None`: reserved here.
    pub reservation: Option<Arc<Reservation>>,
}

impl Message<ReplaceLayer> for AudioActor {
    type Reply = Result<LayerInfo, AudioError>;

    async fn handle(
        &mut self,
        msg: ReplaceLayer,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let looped = self
            .layers
            .get(&msg.id)
            .ok_or(AudioError::UnknownLayer(msg.id))?
            .looped;
        let mut msg = msg;
        msg.frames = self.finite(msg.frames, &msg.source);
        let reservation = self.admit(&msg.frames, msg.reservation)?;
        let audio = Box::new(LayerAudio {
            frames: msg.frames.clone(),
            looped,
        });
        self.send(Command::Replace {
            id: msg.id,
            audio,
            at: msg.at,
            crossfade_beats: msg.crossfade_beats,
        })?;
        let rate = f64::from(self.sample_rate);
        let layer = self
            .layers
            .get_mut(&msg.id)
            .ok_or(AudioError::UnknownLayer(msg.id))?;
        layer.frames = msg.frames.len();
        layer.seconds = msg.frames.len() as f64 / rate;
        let source = std::mem::replace(&mut layer.source, msg.source);
        let audio = std::mem::replace(&mut layer.audio, msg.frames);
        let reserved = std::mem::replace(&mut layer.reservation, reservation);
        // A second replace before the first lands keeps the audio that actually plays.
        if layer.previous.is_none() {
            layer.previous = Some((source, audio, reserved));
        }
        Ok(layer.clone())
    }
}

/// Says that non-finite samples were zeroed in audio on its way into a layer (before it
/// was resampled, where the count is the source's own): counted in `daemon.status` and
/// published as a `health` event.
#[derive(Debug, Clone)]
pub struct NonFiniteZeroed {
    pub source: String,
    pub samples: u64,
    /// Where the first was, seconds into the source.
    pub first_s: Option<f64>,
}

impl Message<NonFiniteZeroed> for AudioActor {
    type Reply = ();

    async fn handle(&mut self, msg: NonFiniteZeroed, _: &mut Context<Self, Self::Reply>) {
        self.nonfinite_zeroed(&msg.source, msg.samples, msg.first_s);
    }
}

/// Stops and removes a layer.
#[derive(Debug, Clone, Copy)]
pub struct RemoveLayer {
    pub id: LayerId,
    pub at: Quantize,
}

impl Message<RemoveLayer> for AudioActor {
    type Reply = Result<LayerInfo, AudioError>;

    async fn handle(
        &mut self,
        msg: RemoveLayer,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        if !self.layers.contains_key(&msg.id) {
            return Err(AudioError::UnknownLayer(msg.id));
        }
        self.send(Command::Remove {
            id: msg.id,
            at: msg.at,
        })?;
        let layer = self
            .layers
            .get_mut(&msg.id)
            .ok_or(AudioError::UnknownLayer(msg.id))?;
        layer.state = "stopping";
        Ok(layer.clone())
    }
}

/// Changes some of a layer's mix settings; `None` keeps a setting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LayerPatch {
    pub gain: Option<f32>,
    pub pan: Option<f32>,
    pub mute: Option<bool>,
    pub solo: Option<bool>,
    pub filter: Option<FilterMode>,
    pub cutoff_hz: Option<f32>,
    pub resonance: Option<f32>,
    pub reverb_send: Option<f32>,
    pub delay_send: Option<f32>,
}

impl Serialize for LayerPatch {
    /// The settings that change, by their request names.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        let numbers = [
            ("gain", self.gain),
            ("pan", self.pan),
            ("cutoff_hz", self.cutoff_hz),
            ("resonance", self.resonance),
            ("reverb_send", self.reverb_send),
            ("delay_send", self.delay_send),
        ];
        for (name, value) in numbers {
            if let Some(v) = value {
                map.serialize_entry(name, &v)?;
            }
        }
        if let Some(filter) = self.filter {
            let name = match filter {
                FilterMode::Off => "off",
                FilterMode::LowPass => "lowpass",
                FilterMode::HighPass => "highpass",
                FilterMode::BandPass => "bandpass",
            };
            map.serialize_entry("filter", name)?;
        }
        for (name, value) in [("mute", self.mute), ("solo", self.solo)] {
            if let Some(v) = value {
                map.serialize_entry(name, &v)?;
            }
        }
        map.end()
    }
}

impl LayerPatch {
    /// These changes applied to `params`.
    pub fn apply(&self, mut params: LayerParams) -> LayerParams {
        let f: &mut FilterSettings = &mut params.filter;
        if let Some(mode) = self.filter {
            f.mode = mode;
        }
        if let Some(cutoff) = self.cutoff_hz {
            f.cutoff_hz = cutoff;
        }
        if let Some(resonance) = self.resonance {
            f.resonance = resonance;
        }
        params.gain = self.gain.unwrap_or(params.gain);
        params.pan = self.pan.unwrap_or(params.pan);
        params.mute = self.mute.unwrap_or(params.mute);
        params.solo = self.solo.unwrap_or(params.solo);
        params.reverb_send = self.reverb_send.unwrap_or(params.reverb_send);
        params.delay_send = self.delay_send.unwrap_or(params.delay_send);
        params
    }
}

/// Applies a [`LayerPatch`] to a layer.
#[derive(Debug, Clone, Copy)]
pub struct SetLayer {
    pub id: LayerId,
    pub patch: LayerPatch,
}

impl Message<SetLayer> for AudioActor {
    type Reply = Result<LayerInfo, AudioError>;

    async fn handle(&mut self, msg: SetLayer, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let params = self
            .layers
            .get(&msg.id)
            .map(|l| msg.patch.apply(l.params))
            .ok_or(AudioError::UnknownLayer(msg.id))?;
        self.send(Command::Set { id: msg.id, params })?;
        let layer = self
            .layers
            .get_mut(&msg.id)
            .ok_or(AudioError::UnknownLayer(msg.id))?;
        layer.params = params;
        Ok(layer.clone())
    }
}

/// Lists the layers.
#[derive(Debug, Clone, Copy)]
pub struct ListLayers;

/// The layers, in id order.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct LayerList(pub Vec<LayerInfo>);

impl Message<ListLayers> for AudioActor {
    type Reply = LayerList;

    async fn handle(&mut self, _: ListLayers, _: &mut Context<Self, Self::Reply>) -> LayerList {
        LayerList(self.layers.values().cloned().collect())
    }
}

/// Reads the master effects.
#[derive(Debug, Clone, Copy)]
pub struct GetFx;

/// Master effect settings.
#[derive(Debug, Clone, Copy, Serialize, Reply)]
pub struct FxSettings(pub MasterFx);

impl Message<GetFx> for AudioActor {
    type Reply = FxSettings;

    async fn handle(&mut self, _: GetFx, _: &mut Context<Self, Self::Reply>) -> FxSettings {
        FxSettings(self.fx)
    }
}

/// Sets the master effects (the control layer merges partial changes first).
#[derive(Debug, Clone, Copy)]
pub struct SetFx(pub MasterFx);

impl Message<SetFx> for AudioActor {
    type Reply = Result<FxSettings, AudioError>;

    async fn handle(&mut self, msg: SetFx, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let fx = msg.0.clamped();
        if self.handle.is_some() {
            self.send(Command::SetFx(fx))?;
        }
        self.fx = fx;
        Ok(FxSettings(fx))
    }
}

/// The live effect chain: the processing chain on the JACK inputs, heard on the master.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Reply)]
pub struct LiveChainSettings {
    pub settings: ChainSettings,
    pub on: bool,
}

/// Reads the live effect chain.
#[derive(Debug, Clone, Copy)]
pub struct GetLiveChain;

impl Message<GetLiveChain> for AudioActor {
    type Reply = LiveChainSettings;

    async fn handle(&mut self, _: GetLiveChain, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.live
    }
}

/// Changes the live effect chain; the mixer glides to it.
#[derive(Debug, Clone, Copy)]
pub struct SetLiveChain(pub LiveChainSettings);

impl Message<SetLiveChain> for AudioActor {
    type Reply = Result<LiveChainSettings, AudioError>;

    async fn handle(
        &mut self,
        msg: SetLiveChain,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        if self.handle.is_some() {
            self.send(Command::SetLiveChain {
                settings: msg.0.settings,
                on: msg.0.on,
            })?;
        }
        self.live = msg.0;
        Ok(self.live)
    }
}

/// Pipe mode: the inputs through an external command (`None` turns it off).
#[derive(Debug, Clone)]
pub struct SetPipe(pub Option<PipeCommand>);

/// A command from the operator's allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeCommand {
    /// Its name in the configuration, which clients pick it by.
    pub name: String,
    /// The command line, run with `sh -c`.
    pub line: String,
}

/// Reads pipe mode's state.
#[derive(Debug, Clone, Copy)]
pub struct GetPipe;

/// Pipe mode as `daemon.status` and `fx.pipe.*` show it.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct PipeReport {
    /// The allow-listed command's name, and its command line.
    pub name: Option<String>,
    pub command: Option<String>,
    /// off, running, bypassed (waiting to restart), starting or stopped.
    pub state: &'static str,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub last_error: Option<String>,
    pub block_frames: usize,
    /// What the pipe adds, in frames and ms.
    pub latency_frames: usize,
    pub latency_ms: f64,
    /// From djinn's inputs to its master outputs, all told (pipe, live chain, master
    /// limiter), in frames.
    pub input_latency_frames: usize,
    pub processed_frames: u64,
    pub bypassed_frames: u64,
}

impl AudioActor {
    fn pipe_report(&self) -> PipeReport {
        let block = djinn_engine::mix::pipe::PIPE_BLOCK;
        let on = self.pipe_command.is_some();
        let latency = if on {
            djinn_engine::mix::pipe::latency(block)
        } else {
            0
        };
        let chain = if self.live.on {
            djinn_engine::chain::Chain::live(&self.live.settings, self.sample_rate.max(1)).latency()
        } else {
            0
        };
        let state = self.pipe.as_ref().map(pipe::PipeWorker::state);
        let (processed, bypassed) = self.pipe.as_ref().map_or((0, 0), pipe::PipeWorker::counts);
        PipeReport {
            name: self.pipe_command.as_ref().map(|c| c.name.clone()),
            command: self.pipe_command.as_ref().map(|c| c.line.clone()),
            state: match (&state, on) {
                (_, false) => "off",
                (Some(s), true) => s.state,
                (None, true) => "waiting",
            },
            pid: state.as_ref().and_then(|s| s.pid),
            restarts: state.as_ref().map_or(0, |s| s.restarts),
            last_error: state.and_then(|s| s.last_error),
            block_frames: block,
            latency_frames: latency,
            latency_ms: latency as f64 * 1000.0 / f64::from(self.sample_rate.max(1)),
            input_latency_frames: latency + chain + self.latency,
            processed_frames: processed,
            bypassed_frames: bypassed,
        }
    }
}

impl Message<GetPipe> for AudioActor {
    type Reply = PipeReport;

    async fn handle(&mut self, _: GetPipe, _: &mut Context<Self, Self::Reply>) -> PipeReport {
        self.pipe_report()
    }
}

impl Message<SetPipe> for AudioActor {
    type Reply = Result<PipeReport, AudioError>;

    async fn handle(&mut self, msg: SetPipe, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        if let Some(old) = self.pipe.take()
            && let Some(ends) = old.stop()
        {
            self.pipe_ends = Some(ends);
        }
        self.pipe_command = msg.0;
        if self.handle.is_some() {
            self.send(Command::SetPipe(self.pipe_command.is_some()))?;
            self.start_pipe(self.sample_rate);
        }
        Ok(self.pipe_report())
    }
}

/// Starts or stops the transport.
#[derive(Debug, Clone, Copy)]
pub struct SetRolling(pub bool);

impl Message<SetRolling> for AudioActor {
    type Reply = Result<(), AudioError>;

    async fn handle(&mut self, msg: SetRolling, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.send(Command::SetRolling(msg.0))?;
        self.rolling = msg.0;
        let topic = if msg.0 {
            "transport.started"
        } else {
            "transport.stopped"
        };
        self.events().publish(topic, json!({}));
        Ok(())
    }
}

/// Holds a `--fast` offline driver before `beat` (`None` lets it run free). Realtime
/// drivers cannot wait and ignore it. Replies whether the driver is one that waits.
#[derive(Debug, Clone, Copy)]
pub struct HoldAt(pub Option<f64>);

impl Message<HoldAt> for AudioActor {
    type Reply = bool;

    async fn handle(&mut self, msg: HoldAt, _: &mut Context<Self, Self::Reply>) -> bool {
        self.hold.set(msg.0);
        self.args.fast && matches!(self.driver, Driver::Offline(_))
    }
}

/// Asks for the audio section of `daemon.status`.
#[derive(Debug, Clone, Copy)]
pub struct AudioStatus;

/// The audio section of `daemon.status`.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct AudioReport {
    /// jack, offline, waiting (for JACK) or off.
    pub driver: &'static str,
    pub state: &'static str,
    pub reason: String,
    pub sample_rate: u32,
    pub period: usize,
    pub layers: usize,
    /// Memory the layers hold (and layers being prepared have reserved), MB.
    pub layer_memory_mb: f64,
    /// What `audio.max_layer_memory_mb` allows them, MB.
    pub layer_memory_limit_mb: f64,
    /// The longest a layer may be (`audio.max_layer_seconds`).
    pub max_layer_seconds: f64,
    pub recording: Option<PathBuf>,
    /// Why the offline driver records nothing (a full disk), while it retries.
    pub recording_error: Option<String>,
    pub xruns: u64,
    pub dsp_load: Option<f32>,
    pub longest_callback_us: Option<u64>,
    pub latency_frames: usize,
    /// Launches and replaces skipped because they arrived after their bar began.
    pub missed: u64,
    pub commands_dropped: u64,
    pub notifications_dropped: u64,
    /// MIDI clock messages lost for want of room, in or out.
    pub clock_messages_dropped: u64,
    /// Frames the driver's clock moved on by with no period processed (missed cycles),
    /// caught up in silence.
    pub frames_skipped: u64,
    /// Where the transport follows from, the lock to an external clock, MIDI clock out.
    pub clock: ClockStatus,
    /// Configured JACK connections not made yet, as [source, target]: djinn makes each
    /// when both its ports are there.
    pub connections_waiting: Vec<[String; 2]>,
    /// Pipe mode.
    pub pipe: PipeReport,
    /// Non-finite samples (NaN, infinity) zeroed on their way into layers.
    pub nonfinite_zeroed: u64,
    /// Times a mixer stage's output went non-finite: each time that block of the stage
    /// played silence and the stage reset itself.
    pub nonfinite_resets: u64,
}

impl Message<AudioStatus> for AudioActor {
    type Reply = AudioReport;

    async fn handle(&mut self, _: AudioStatus, _: &mut Context<Self, Self::Reply>) -> AudioReport {
        let stats = self.handle.as_ref().map(|h| h.stats().clone());
        let load = |f: fn(&djinn_engine::mix::MixerStats) -> &std::sync::atomic::AtomicU64| {
            stats.as_ref().map_or(0, |s| f(s).load(Ordering::Relaxed))
        };
        let (driver, state, recording, xruns, dsp_load, longest) = match &self.driver {
            Driver::Jack(d) => (
                "jack",
                "running",
                None,
                d.stats.xruns.load(Ordering::Relaxed),
                Some(d.dsp_load()),
                Some(d.stats.longest_callback_us.load(Ordering::Relaxed)),
            ),
            Driver::Offline(d) => (
                "offline",
                "running",
                d.recording.borrow().path.clone(),
                0,
                None,
                None,
            ),
            Driver::WaitingForJack { .. } => ("jack", "waiting", None, 0, None, None),
            Driver::Off => ("none", "off", None, 0, None, None),
        };
        AudioReport {
            driver,
            state,
            reason: self.reason.clone(),
            sample_rate: self.sample_rate,
            period: self.period,
            layers: self.layers.len(),
            layer_memory_mb: megabytes(self.args.layer_memory.used_bytes()),
            layer_memory_limit_mb: megabytes(self.args.layer_memory.limit_bytes()),
            max_layer_seconds: self.args.layer_memory.max_seconds(),
            recording,
            recording_error: match &self.driver {
                Driver::Offline(d) => d.recording.borrow().error.clone(),
                _ => None,
            },
            xruns,
            dsp_load,
            longest_callback_us: longest,
            latency_frames: self.latency,
            missed: self.missed,
            commands_dropped: load(|s| &s.commands_dropped),
            notifications_dropped: load(|s| &s.notifications_dropped),
            clock_messages_dropped: load(|s| &s.clock_messages_dropped),
            frames_skipped: load(|s| &s.frames_skipped),
            clock: self.clock_status(),
            connections_waiting: match &self.driver {
                Driver::Jack(d) => d.waiting_connections(),
                _ => Vec::new(),
            },
            pipe: self.pipe_report(),
            nonfinite_zeroed: self.nonfinite_zeroed,
            nonfinite_resets: self.nonfinite_resets,
        }
    }
}

/// Bytes as MB, to a tenth.
fn megabytes(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

impl Message<crate::InjectPanic> for AudioActor {
    type Reply = ();

    async fn handle(&mut self, _: crate::InjectPanic, _: &mut Context<Self, Self::Reply>) {
        panic!("fault injection: audio actor told to panic");
    }
}
