//! The director: the DJ brain. It calls the DJ script on phrase boundaries, checks what the
//! script asked for, has the loops rendered ahead of the bar they are due on, and sends the
//! launches to the audio actor; every decision is published with the script's reason.
//!
//! Timing: a phrase of `phrase_bars` bars is decided [`LEAD_BARS`] bars before it begins
//! (the "cue"), so its loops are ready before their bar. Launches name their bar
//! ([`djinn_engine::mix::Quantize::AtBar`]): one that reaches the mixer late is skipped and reported as
//! `layer.missed`, never played off the grid. Changes within a phrase (filter sweeps, effect
//! moves, tempo and key changes) are steps fired from the transport position. A `--fast`
//! offline driver is held at the next step or undecided boundary, so a faster-than-realtime
//! set sounds exactly as a realtime one would.
//!
//! The director renders its own loops (it does not queue behind `generate.song`): they are
//! short and they are due.

mod perform;
pub mod plan;
pub mod script;
mod state;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use kameo::Reply;
use kameo::actor::{Actor, ActorRef, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible, PanicError};
use kameo::message::{Context, Message};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use djinn_engine::analysis::bands::BandShares;
use djinn_engine::mix::LayerId;
use djinn_engine::music::Key;
use djinn_engine::synth::Role;
use djinn_engine::transport::{TEMPO_RANGE, Transport};

use self::plan::{FxPatch, Planned, Rejected};
use self::script::LoadedScript;
use crate::audio::{AudioActor, HoldAt, LayerPatch};
use crate::generator::Generator;
use crate::profiles::{ProfileLibrary, SnapshotProfiles};
use crate::scripting::{Record, Sandbox, ScriptError};
use crate::supervisor::Health;
use crate::transport::TransportActor;

/// The director's name in health reports and `daemon.status`.
pub const NAME: &str = "director";
/// Bars before a phrase boundary at which the phrase is decided.
pub const LEAD_BARS: u32 = 2;
/// Decisions kept for `daemon.status`.
pub const KEEP_DECISIONS: usize = 100;
/// Decision timings kept for the percentiles in `script.status`.
const KEEP_TIMINGS: usize = 1000;
/// Voice lines kept while no voice actor speaks them.
const KEEP_VOICE: usize = 20;
/// How early a step may fire: positions arrive every 20 ms of audio.
const FIRE_AHEAD_S: f64 = 0.04;

/// What the director starts (and restarts) from.
#[derive(Clone)]
pub struct DirectorArgs {
    pub scripts_dir: Option<PathBuf>,
    /// The ratings journal (`STATE/ratings.jsonl`).
    pub ratings: PathBuf,
    pub audio: ActorRef<AudioActor>,
    pub generator: ActorRef<Generator>,
    pub profiles: ActorRef<ProfileLibrary>,
    pub transport: ActorRef<TransportActor>,
    pub transport_watch: watch::Receiver<Transport>,
    pub health: Health,
    /// The loop library, whose loops the DJ script sees in `state.loops`.
    pub library: Option<ActorRef<crate::library::Library>>,
}

/// One layer the director put in the mix.
#[derive(Debug, Clone)]
struct SetLayer {
    id: LayerId,
    role: Role,
    prompt: String,
    instrument: String,
    bars: u32,
    /// Bar (from 0) it started or is due on.
    started_bar: u64,
    gain: f32,
    bands: BandShares,
    seed: u64,
    /// The tempo and key it was rendered at.
    tempo: f64,
    key: Key,
    /// The file it plays, when it came from one rather than the generator.
    file: Option<plan::LoopFile>,
}

/// A change fired when the transport reaches `beat`.
#[derive(Debug, Clone)]
struct Step {
    beat: f64,
    what: StepKind,
}

#[derive(Debug, Clone)]
enum StepKind {
    /// Mix settings of the layer playing `role`.
    Layer(Role, LayerPatch),
    /// A high-pass at this cutoff on every non-drum layer.
    Sweep(f32),
    /// Every layer's filter off.
    OpenFilters,
    /// Delay sends of these layers (the ones echoing out).
    Echo(Vec<LayerId>, f32),
    Fx(FxPatch),
    Transport {
        tempo: Option<f64>,
        key: Option<Key>,
        style: Option<String>,
    },
}

/// A set being played.
#[derive(Debug)]
struct Set {
    seed: u64,
    /// Decisions made so far; the next on_phrase is phrase number `phrase`.
    phrase: u64,
    /// Bar (from 0) the next on_phrase decides for.
    next_boundary: u64,
    phrase_bars: u32,
    layers: BTreeMap<Role, SetLayer>,
    energy: f64,
    energy_curve: VecDeque<f64>,
    steps: Vec<Step>,
    /// Tempo still to reach, and over how many more phrases.
    tempo_ramp: Option<(f64, u32)>,
    /// Loops rendered for phrase boundaries, and the least time to spare any had, in
    /// bars at realtime pace.
    loops: u64,
    min_lead_bars: Option<f64>,
    /// Whether the driver waits for the director (a `--fast` offline driver).
    waits: bool,
    /// The hold last sent to the audio actor.
    hold: Option<f64>,
}

/// One published decision.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    pub phrase: u64,
    /// Bar it takes effect on (counted from 1, as in event positions).
    pub bar: u64,
    /// start, phrase, now or command.
    pub kind: &'static str,
    pub script: String,
    pub reason: String,
    pub actions: Vec<Value>,
    pub rejected: Vec<Rejected>,
    /// From the phrase cue to validated actions, milliseconds.
    pub decide_ms: f64,
    /// Rendering and sending, milliseconds.
    pub perform_ms: f64,
    #[serde(with = "humantime_serde_time")]
    pub time: SystemTime,
}

mod humantime_serde_time {
    pub fn serialize<S: serde::Serializer>(
        t: &std::time::SystemTime,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }
}

/// Why a director request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectorError {
    /// dj.start while a set plays.
    #[error("a set is already playing: dj.stop it first")]
    AlreadyPlaying,
    /// A request that needs a playing set.
    #[error("no set is playing: dj.start one first")]
    NotPlaying,
    /// A parameter is wrong; `field` names it.
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Another actor did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// The script failed and no earlier version could stand in.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

pub struct Director {
    args: DirectorArgs,
    sandbox: Sandbox,
    script: LoadedScript,
    /// The last version that completed a call, kept while a newer one runs: a version that
    /// fails is rolled back to it (or to the built-in script for the style).
    last_good: Option<LoadedScript>,
    /// How the running version has fared since it was loaded.
    record: Record,
    /// The style the script was chosen for.
    script_style: String,
    loaded_at: SystemTime,
    last_error: Option<String>,
    errors: u64,
    set: Option<Set>,
    stems: BTreeSet<Role>,
    /// Changes asked for with dj.set (or by on_command) that wait for the next phrase.
    pending: Vec<Planned>,
    decisions: VecDeque<DecisionRecord>,
    timings: VecDeque<f64>,
    voice_queue: VecDeque<String>,
    ratings: crate::ratings::RatingsJournal,
    forwarder: Option<tokio::task::JoinHandle<()>>,
}

impl Director {
    fn events(&self) -> &crate::events::EventSink {
        self.args.health.events()
    }

    /// Reports a script error; `ran_ms` is how long a failed call ran before it stopped.
    fn script_error(&mut self, error: &ScriptError, ran_ms: Option<f64>) {
        tracing::warn!(%error, ?ran_ms, "DJ script error");
        self.errors += 1;
        self.last_error = Some(error.to_string());
        let mut event = error.event();
        if let Some(ms) = ran_ms {
            event["ran_ms"] = json!((ms * 1000.0).round() / 1000.0);
        }
        self.events().publish("script.error", event);
    }

    /// Loads the script for `style`; on failure keeps the one running and reports.
    fn load_script(&mut self, style: &str) -> bool {
        let loaded = script::locate(self.args.scripts_dir.as_deref(), style)
            .and_then(|source| source.compile(&self.sandbox));
        match loaded {
            Ok(script) => {
                tracing::info!(script = %script.name, style, "DJ script loaded");
                self.events().publish(
                    "script",
                    json!({ "kind": "loaded", "script": script.name, "style": style }),
                );
                let previous = std::mem::replace(&mut self.script, script);
                if self.record.proven {
                    self.last_good = Some(previous);
                }
                self.record = if self.script.path.is_none() {
                    Record::proven()
                } else {
                    Record::default()
                };
                self.script_style = style.to_owned();
                self.loaded_at = SystemTime::now();
                self.last_error = None;
                true
            }
            Err(error) => {
                self.script_error(&error, None);
                false
            }
        }
    }

    async fn snapshot(&self) -> Result<crate::profiles::ProfileSnapshot, DirectorError> {
        self.args
            .profiles
            .ask(SnapshotProfiles)
            .await
            .map_err(|e| DirectorError::Unavailable(format!("profiles: {e}")))
    }

    fn beats_per_bar(&self) -> f64 {
        f64::from(
            self.args
                .transport_watch
                .borrow()
                .meter
                .beats_per_bar
                .max(1),
        )
    }

    /// Asks the audio actor to hold a `--fast` driver before the next step or undecided
    /// boundary.
    async fn update_hold(&mut self) {
        let per_bar = self.beats_per_bar();
        let Some(set) = self.set.as_mut() else {
            return;
        };
        // The driver waits at the next cue (so the decision is made with the time to spare
        // a realtime set would have) or the next step, whichever comes first.
        let cue = set.next_boundary.saturating_sub(u64::from(LEAD_BARS)) as f64 * per_bar;
        let step = set.steps.first().map(|s| s.beat);
        let hold = Some(step.map_or(cue, |s| s.min(cue)));
        if hold != set.hold {
            set.hold = hold;
            match self.args.audio.ask(HoldAt(hold)).await {
                Ok(waits) => set.waits = waits,
                Err(e) => tracing::warn!(error = %e, "audio actor did not take the hold"),
            }
        }
    }

    async fn release_hold(&mut self) {
        let _ = self.args.audio.ask(HoldAt(None)).await;
    }

    /// Runs on every transport position: fires due steps and decides the next phrase at
    /// its cue.
    async fn follow(&mut self) {
        let (beats, tempo) = {
            let t = self.args.transport_watch.borrow();
            (t.beats(), t.tempo)
        };
        let ahead = FIRE_AHEAD_S * tempo / 60.0;
        let per_bar = self.beats_per_bar();
        loop {
            let due = self
                .set
                .as_ref()
                .and_then(|s| s.steps.first())
                .is_some_and(|s| s.beat <= beats + ahead);
            if !due {
                break;
            }
            let Some(set) = self.set.as_mut() else { break };
            let step = set.steps.remove(0);
            self.fire(step).await;
        }
        let cue = self
            .set
            .as_ref()
            .map(|s| (s.next_boundary.saturating_sub(u64::from(LEAD_BARS)) as f64) * per_bar);
        if cue.is_some_and(|cue| beats + ahead >= cue) {
            let started = Instant::now();
            if let Err(e) = self.decide(Kind::Phrase, started, None).await {
                tracing::warn!(error = %e, "phrase not decided");
            }
        }
        self.update_hold().await;
    }
}

/// What prompted a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Phrase,
    Now,
    Command,
}

impl Kind {
    /// The script function this kind of decision calls in `ast`: `on_start` and
    /// `on_command` when the script has them, `on_phrase` otherwise.
    fn entry(self, ast: &rhai::AST) -> &'static str {
        match self {
            Kind::Start if Sandbox::has_function(ast, "on_start", 1) => "on_start",
            Kind::Command if Sandbox::has_function(ast, "on_command", 2) => "on_command",
            _ => "on_phrase",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Phrase => "phrase",
            Kind::Now => "now",
            Kind::Command => "command",
        }
    }
}

impl Actor for Director {
    type Args = DirectorArgs;
    type Error = Infallible;

    fn name() -> &'static str {
        NAME
    }

    async fn on_start(args: Self::Args, actor_ref: ActorRef<Self>) -> Result<Self, Self::Error> {
        let sandbox = Sandbox::with_api(script::limits(), script::register_api);
        let style = match args.profiles.ask(SnapshotProfiles).await {
            Ok(s) => s.active.name,
            Err(_) => crate::profiles::DEFAULT_PROFILE.to_owned(),
        };
        let placeholder = script::locate(None, "default")
            .and_then(|s| s.compile(&sandbox))
            .expect("the built-in default DJ script compiles (a unit test checks it)");
        let ratings = crate::ratings::RatingsJournal::open(&args.ratings);
        let mut director = Director {
            args,
            ratings,
            sandbox,
            script: placeholder,
            last_good: None,
            record: Record::default(),
            script_style: style.clone(),
            loaded_at: SystemTime::now(),
            last_error: None,
            errors: 0,
            set: None,
            stems: Role::ALL.into(),
            pending: Vec::new(),
            decisions: VecDeque::new(),
            timings: VecDeque::new(),
            voice_queue: VecDeque::new(),
            forwarder: None,
        };
        director.load_script(&style);
        director.last_good = None;
        let mut watch = director.args.transport_watch.clone();
        let weak = actor_ref.downgrade();
        director.forwarder = Some(tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let Some(actor) = weak.upgrade() else { break };
                // A position lost to a busy director is followed by another 20 ms later.
                let _ = actor.tell(Follow).try_send();
            }
        }));
        director.args.health.started(NAME);
        Ok(director)
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
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.abort();
        }
        self.release_hold().await;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Follow;

impl Message<Follow> for Director {
    type Reply = ();

    async fn handle(&mut self, _: Follow, _: &mut Context<Self, Self::Reply>) {
        if self.set.is_some() {
            self.follow().await;
        }
    }
}

/// Starts a set: `on_start` decides what plays from the next bar, then `on_phrase` every
/// phrase.
#[derive(Debug, Clone, Default)]
pub struct DjStart {
    /// The same seed, style and script give the same set.
    pub seed: u64,
}

/// What dj.start and dj.stop answer.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct SetReport {
    pub playing: bool,
    pub script: String,
    pub style: String,
    pub seed: Option<u64>,
    pub phrase_bars: Option<u32>,
    /// The next phrase boundary, counted from 1.
    pub next_phrase_bar: Option<u64>,
    pub decision: Option<DecisionRecord>,
}

impl Director {
    fn report(&self) -> SetReport {
        SetReport {
            playing: self.set.is_some(),
            script: self.script.name.clone(),
            style: self.script_style.clone(),
            seed: self.set.as_ref().map(|s| s.seed),
            phrase_bars: self.set.as_ref().map(|s| s.phrase_bars),
            next_phrase_bar: self.set.as_ref().map(|s| s.next_boundary + 1),
            decision: self.decisions.back().cloned(),
        }
    }
}

impl Message<DjStart> for Director {
    type Reply = Result<SetReport, DirectorError>;

    async fn handle(&mut self, msg: DjStart, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        if self.set.is_some() {
            return Err(DirectorError::AlreadyPlaying);
        }
        let snapshot = self.snapshot().await?;
        if snapshot.active.name != self.script_style {
            self.load_script(&snapshot.active.name);
        }
        let (beats, per_bar) = {
            let t = self.args.transport_watch.borrow();
            (t.beats(), f64::from(t.meter.beats_per_bar.max(1)))
        };
        // The first bar line at least one whole bar away.
        let first = ((beats + per_bar) / per_bar - 1e-9).ceil() as u64;
        let seed = msg.seed;
        let phrase_bars = snapshot.active.phrase_bars.max(1);
        self.set = Some(Set {
            seed,
            phrase: 0,
            next_boundary: first,
            phrase_bars,
            layers: BTreeMap::new(),
            energy: 0.3,
            energy_curve: VecDeque::new(),
            steps: Vec::new(),
            tempo_ramp: None,
            loops: 0,
            min_lead_bars: None,
            waits: false,
            hold: None,
        });
        self.update_hold().await;
        tracing::info!(seed, first_bar = first + 1, phrase_bars, "set starting");
        let started = Instant::now();
        if let Err(e) = self.decide(Kind::Start, started, None).await {
            self.set = None;
            self.release_hold().await;
            return Err(e);
        }
        self.update_hold().await;
        self.events().publish(
            "dj",
            json!({ "kind": "started", "seed": seed, "script": self.script.name, "bar": first + 1 }),
        );
        Ok(self.report())
    }
}

/// Stops the set: its layers leave at the next bar.
#[derive(Debug, Clone, Copy)]
pub struct DjStop;

impl Message<DjStop> for Director {
    type Reply = Result<SetReport, DirectorError>;

    async fn handle(&mut self, _: DjStop, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let set = self.set.take().ok_or(DirectorError::NotPlaying)?;
        self.release_hold().await;
        for layer in set.layers.values() {
            let remove = crate::audio::RemoveLayer {
                id: layer.id,
                at: djinn_engine::mix::Quantize::Bar,
            };
            if let Err(e) = self.args.audio.ask(remove).await {
                tracing::debug!(error = %e, id = layer.id, "layer already gone");
            }
        }
        self.pending.clear();
        self.events()
            .publish("dj", json!({ "kind": "stopped", "phrases": set.phrase }));
        Ok(self.report())
    }
}

/// A free-text request: empty lets the DJ decide now, anything else goes to
/// `on_command(state, text)`. What it asks for starts at the next bar.
#[derive(Debug, Clone)]
pub struct DjCommand {
    pub text: String,
}

impl Message<DjCommand> for Director {
    type Reply = Result<DecisionRecord, DirectorError>;

    async fn handle(&mut self, msg: DjCommand, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        if self.set.is_none() {
            return Err(DirectorError::NotPlaying);
        }
        let text = msg.text.trim();
        if text.len() > 500 {
            return Err(DirectorError::Invalid {
                field: "text",
                message: "is over 500 bytes".into(),
            });
        }
        let started = Instant::now();
        let kind = if text.is_empty() {
            Kind::Now
        } else {
            Kind::Command
        };
        self.decide(kind, started, Some(text.to_owned())).await?;
        self.update_hold().await;
        self.decisions
            .back()
            .cloned()
            .ok_or_else(|| DirectorError::Unavailable("no decision recorded".into()))
    }
}

/// Changes the set's stems, tempo, key or style. Stems apply at once (layers of roles
/// taken away leave at the next phrase); tempo, key and style change at the next phrase
/// boundary (at once when no set plays).
#[derive(Debug, Clone, Default)]
pub struct DjSet {
    pub stems: Option<Vec<Role>>,
    pub bpm: Option<f64>,
    pub key: Option<String>,
    pub style: Option<String>,
}

/// What dj.set did.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct DjSetReport {
    pub stems: Vec<Role>,
    /// Changes waiting for the next phrase boundary.
    pub pending: Vec<Planned>,
    /// The bar they land on (counted from 1); none when applied at once.
    pub at_bar: Option<u64>,
}

impl Message<DjSet> for Director {
    type Reply = Result<DjSetReport, DirectorError>;

    async fn handle(&mut self, msg: DjSet, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let invalid = |field, message: String| DirectorError::Invalid { field, message };
        let snapshot = self.snapshot().await?;
        let mut changes = Vec::new();
        if let Some(bpm) = msg.bpm {
            if !(bpm.is_finite() && TEMPO_RANGE.contains(&bpm)) {
                return Err(invalid(
                    "bpm",
                    format!("{bpm} BPM is out of range: djinn plays 20 to 300"),
                ));
            }
            changes.push(Planned::Tempo {
                bpm,
                ramp_phrases: 0,
            });
        }
        if let Some(key) = &msg.key {
            let key = key
                .parse::<Key>()
                .map_err(|e| invalid("key", e.to_string()))?;
            changes.push(Planned::Key { key });
        }
        if let Some(style) = &msg.style {
            let style = state::resolve_style(&snapshot.set, style)
                .map_err(|message| invalid("style", message))?;
            changes.push(Planned::Style { style });
        }
        let stems = match msg.stems {
            Some(stems) if stems.is_empty() => {
                return Err(invalid("stems", "name at least one role".into()));
            }
            Some(stems) => Some(stems.into_iter().collect::<BTreeSet<Role>>()),
            None => None,
        };
        if let Some(stems) = stems {
            self.stems = stems;
            if let Some(set) = &self.set {
                for role in set.layers.keys().filter(|r| !self.stems.contains(r)) {
                    changes.push(Planned::Remove {
                        role: *role,
                        when: plan::When::Phrase,
                    });
                }
            }
        }
        let at_bar = match &self.set {
            Some(set) => {
                self.pending.extend(changes);
                Some(set.next_boundary + 1)
            }
            None => {
                self.apply_now(changes).await?;
                None
            }
        };
        Ok(DjSetReport {
            stems: self.stems.iter().copied().collect(),
            pending: self.pending.clone(),
            at_bar,
        })
    }
}

/// Reloads the DJ script (the watcher sends this when a file under `dj/` changes).
#[derive(Debug, Clone, Copy)]
pub struct ReloadScript;

impl Message<ReloadScript> for Director {
    type Reply = Result<ScriptStatus, DirectorError>;

    async fn handle(&mut self, _: ReloadScript, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let style = self.script_style.clone();
        if self.load_script(&style) {
            Ok(self.script_status())
        } else {
            let message = self.last_error.clone().unwrap_or_default();
            Err(DirectorError::Script(ScriptError::Compile {
                script: self.script.name.clone(),
                line: 0,
                message,
            }))
        }
    }
}

/// The DJ script in use, its limits and how fast it decides.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct ScriptStatus {
    pub script: String,
    pub path: Option<PathBuf>,
    pub style: String,
    #[serde(with = "humantime_serde_time")]
    pub loaded_at: SystemTime,
    pub functions: Vec<String>,
    pub errors: u64,
    pub last_error: Option<String>,
    pub limits: Value,
    pub decide_ms: Value,
}

/// Asks for [`ScriptStatus`].
#[derive(Debug, Clone, Copy)]
pub struct GetScriptStatus;

impl Director {
    fn script_status(&self) -> ScriptStatus {
        let limits = self.sandbox.limits();
        let mut functions: Vec<String> = self
            .script
            .ast
            .iter_functions()
            .map(|f| format!("{}({})", f.name, f.params.join(", ")))
            .collect();
        functions.sort();
        ScriptStatus {
            script: self.script.name.clone(),
            path: self.script.path.clone(),
            style: self.script_style.clone(),
            loaded_at: self.loaded_at,
            functions,
            errors: self.errors,
            last_error: self.last_error.clone(),
            limits: json!({
                "operations": limits.max_operations,
                "call_depth": limits.max_call_levels,
                "string_bytes": limits.max_string_len,
                "array_items": limits.max_array_len,
                "map_items": limits.max_map_len,
                "budget_ms": limits.budget.as_secs_f64() * 1000.0,
            }),
            decide_ms: percentiles(&self.timings),
        }
    }
}

fn percentiles(samples: &VecDeque<f64>) -> Value {
    if samples.is_empty() {
        return json!({ "count": 0 });
    }
    let mut sorted: Vec<f64> = samples.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        (sorted[i.min(sorted.len() - 1)] * 1000.0).round() / 1000.0
    };
    json!({ "count": sorted.len(), "p50": at(0.5), "p99": at(0.99), "max": at(1.0) })
}

impl Message<GetScriptStatus> for Director {
    type Reply = ScriptStatus;

    async fn handle(
        &mut self,
        _: GetScriptStatus,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.script_status()
    }
}

/// The director section of `daemon.status`.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct DirectorStatus {
    pub playing: bool,
    pub script: String,
    pub style: String,
    pub stems: Vec<Role>,
    pub phrase: Option<u64>,
    pub phrase_bars: Option<u32>,
    pub next_phrase_bar: Option<u64>,
    pub energy: Option<f64>,
    pub layers: Vec<Value>,
    pub pending: Vec<Planned>,
    pub loops: u64,
    /// The least time to spare any loop had before its bar, in bars at realtime pace.
    pub min_lead_bars: Option<f64>,
    /// Whether the audio driver waits for the director (`--fast`).
    pub holds_driver: bool,
    pub voice_queue: Vec<String>,
    pub decide_ms: Value,
    /// The last decisions, oldest first.
    pub decisions: Vec<DecisionRecord>,
}

/// Asks for [`DirectorStatus`].
#[derive(Debug, Clone, Copy)]
pub struct GetDirectorStatus;

impl Message<GetDirectorStatus> for Director {
    type Reply = DirectorStatus;

    async fn handle(
        &mut self,
        _: GetDirectorStatus,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let set = self.set.as_ref();
        DirectorStatus {
            playing: set.is_some(),
            script: self.script.name.clone(),
            style: self.script_style.clone(),
            stems: self.stems.iter().copied().collect(),
            phrase: set.map(|s| s.phrase),
            phrase_bars: set.map(|s| s.phrase_bars),
            next_phrase_bar: set.map(|s| s.next_boundary + 1),
            energy: set.map(|s| s.energy),
            layers: set
                .map(|s| s.layers.values().map(state::layer_json_brief).collect())
                .unwrap_or_default(),
            pending: self.pending.clone(),
            loops: set.map_or(0, |s| s.loops),
            min_lead_bars: set.and_then(|s| s.min_lead_bars),
            holds_driver: set.is_some_and(|s| s.waits),
            voice_queue: self.voice_queue.iter().cloned().collect(),
            decide_ms: percentiles(&self.timings),
            decisions: self.decisions.iter().cloned().collect(),
        }
    }
}

/// A listener's rating of what plays now, 1 (poor) to 5 (great).
#[derive(Debug, Clone)]
pub struct Rate {
    pub score: f64,
    pub comment: Option<String>,
}

/// What `rate` answers: the rating as recorded and the summary the DJ script sees.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct RateReport {
    pub rating: crate::ratings::Rating,
    pub ratings: Value,
    pub journal: PathBuf,
}

impl Message<Rate> for Director {
    type Reply = Result<RateReport, DirectorError>;

    async fn handle(&mut self, msg: Rate, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        if !(msg.score.is_finite() && (1.0..=5.0).contains(&msg.score)) {
            return Err(DirectorError::Invalid {
                field: "score",
                message: format!("{} is out of range 1 to 5", msg.score),
            });
        }
        let style = self.snapshot().await?.active.name;
        let bar = self.args.transport_watch.borrow().position().bar;
        let rating = crate::ratings::Rating {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            score: msg.score,
            comment: msg.comment,
            style,
            phrase: self.set.as_ref().map(|s| s.phrase.saturating_sub(1)),
            bar,
            layers: self
                .set
                .iter()
                .flat_map(|s| s.layers.values())
                .map(|l| format!("{}: {}", l.role, l.prompt))
                .collect(),
        };
        self.ratings
            .append(rating.clone())
            .map_err(|e| DirectorError::Unavailable(format!("the ratings journal: {e}")))?;
        self.events().publish(
            "rating",
            json!({ "score": rating.score, "comment": rating.comment, "style": rating.style,
                    "phrase": rating.phrase }),
        );
        Ok(RateReport {
            rating,
            ratings: self.ratings.summary(),
            journal: self.ratings.path().to_owned(),
        })
    }
}

impl Message<crate::InjectPanic> for Director {
    type Reply = ();

    async fn handle(&mut self, _: crate::InjectPanic, _: &mut Context<Self, Self::Reply>) {
        panic!("fault injection: director told to panic");
    }
}

/// A DJ script played against a model of the mix, with no audio: each phrase's state is
/// built, the script called and its actions checked exactly as the director does, and the
/// accepted layer changes are applied to the model. Used to test scripts and to time the
/// decision path.
pub struct Rehearsal {
    sandbox: Sandbox,
    script: LoadedScript,
    set: Set,
    transport: Transport,
    profile: djinn_engine::profile::Profile,
    profiles: djinn_engine::profile::ProfileSet,
    stems: BTreeSet<Role>,
    decisions: VecDeque<DecisionRecord>,
}

/// One rehearsed decision.
#[derive(Debug, Clone)]
pub struct Rehearsed {
    pub reason: String,
    pub planned: Vec<Planned>,
    pub rejected: Vec<Rejected>,
    /// The roles playing after it.
    pub roles: Vec<Role>,
}

impl Rehearsal {
    /// Rehearses `style`'s script (from `scripts_dir`, else built in) over its profile.
    pub fn new(
        scripts_dir: Option<&std::path::Path>,
        style: &str,
        profiles: djinn_engine::profile::ProfileSet,
    ) -> Result<Rehearsal, DirectorError> {
        let sandbox = Sandbox::with_api(script::limits(), script::register_api);
        let script = script::locate(scripts_dir, style)?.compile(&sandbox)?;
        let profile = profiles
            .get(style)
            .cloned()
            .ok_or_else(|| DirectorError::Invalid {
                field: "style",
                message: format!("no style profile named {style:?}"),
            })?;
        let mut transport = Transport::default();
        transport.tempo = profile.tempo.default;
        transport.key = profile.key;
        transport.meter = profile.meter;
        Ok(Rehearsal {
            sandbox,
            script,
            set: Set {
                seed: 1,
                phrase: 0,
                next_boundary: 1,
                phrase_bars: profile.phrase_bars.max(1),
                layers: BTreeMap::new(),
                energy: 0.3,
                energy_curve: VecDeque::new(),
                steps: Vec::new(),
                tempo_ramp: None,
                loops: 0,
                min_lead_bars: None,
                waits: false,
                hold: None,
            },
            transport,
            profile,
            profiles,
            stems: Role::ALL.into(),
            decisions: VecDeque::new(),
        })
    }

    /// Makes the next decision (the first is `on_start`).
    pub fn step(&mut self) -> Result<Rehearsed, DirectorError> {
        let at_bar = self.set.next_boundary;
        let kind = if self.set.phrase == 0 {
            Kind::Start
        } else {
            Kind::Phrase
        };
        let state = state::build(&state::StateInput {
            kind: kind.name(),
            set: &self.set,
            at_bar,
            transport: &self.transport,
            profile: &self.profile,
            stems: self.stems.iter().map(|r| r.name()).collect(),
            decisions: &self.decisions,
            request: "",
            ratings: json!({ "count": 0, "average": null, "recent": [] }),
            loops: json!({}),
        });
        let state = rhai::serde::to_dynamic(&state)
            .map_err(|e| DirectorError::Unavailable(e.to_string()))?;
        let function = kind.entry(&self.script.ast);
        let value = self
            .sandbox
            .call(&self.script.name, &self.script.ast, function, (state,))?;
        let decision = script::decision(value).map_err(|message| {
            DirectorError::Script(ScriptError::Runtime {
                script: self.script.name.clone(),
                function: function.into(),
                line: 0,
                message,
            })
        })?;
        let mut context = plan::Context {
            profile: &self.profile,
            profiles: &self.profiles,
            playing: self.set.layers.keys().copied().collect(),
            stems: &self.stems,
        };
        let (planned, rejected) = plan::check(decision.actions, &mut context, plan::When::Phrase);
        let playing = context.playing;
        // The model: roles that play now; new and replaced layers start on this boundary.
        self.set.layers.retain(|role, _| playing.contains(role));
        for p in &planned {
            let (role, prompt) = match p {
                Planned::Add { role, prompt, .. } | Planned::Replace { role, prompt, .. } => {
                    (*role, prompt.clone())
                }
                Planned::Energy { target } => {
                    self.set.energy = *target;
                    continue;
                }
                _ => continue,
            };
            let bands = match role {
                Role::Drum => [0.25, 0.3, 0.25, 0.15, 0.05],
                Role::Bass => [0.5, 0.45, 0.05, 0.0, 0.0],
                Role::Pad => [0.0, 0.15, 0.6, 0.2, 0.05],
                Role::Lead => [0.0, 0.05, 0.6, 0.3, 0.05],
                Role::Fx => [0.0, 0.1, 0.3, 0.4, 0.2],
            };
            self.set.layers.insert(
                role,
                SetLayer {
                    id: role as u64 + 1,
                    role,
                    prompt,
                    instrument: String::new(),
                    bars: 8,
                    started_bar: at_bar,
                    file: None,
                    gain: plan::role_gain(role),
                    bands: BandShares {
                        sub: bands[0],
                        low: bands[1],
                        mid: bands[2],
                        high: bands[3],
                        air: bands[4],
                    },
                    seed: 0,
                    tempo: self.transport.tempo,
                    key: self.transport.key,
                },
            );
        }
        self.set.phrase += 1;
        self.set.next_boundary = at_bar + u64::from(self.set.phrase_bars);
        self.set.energy_curve.push_back(self.set.energy);
        self.decisions.push_back(DecisionRecord {
            phrase: self.set.phrase - 1,
            bar: at_bar + 1,
            kind: kind.name(),
            script: self.script.name.clone(),
            reason: decision.reason.clone(),
            actions: planned
                .iter()
                .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
                .collect(),
            rejected: rejected.clone(),
            decide_ms: 0.0,
            perform_ms: 0.0,
            time: SystemTime::now(),
        });
        while self.decisions.len() > KEEP_DECISIONS {
            self.decisions.pop_front();
        }
        Ok(Rehearsed {
            reason: decision.reason,
            planned,
            rejected,
            roles: self.set.layers.keys().copied().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_script_plays_a_long_set_without_a_refused_action() {
        let profiles = djinn_engine::profile::ProfileSet::built_in();
        for (style, _) in script::BUILT_IN {
            let style = if style == "default" {
                "deep_house"
            } else {
                style
            };
            let mut rehearsal = Rehearsal::new(None, style, profiles.clone()).unwrap();
            let mut changes = 0;
            let mut basses_max = 0;
            for phrase in 0..40 {
                let r = rehearsal
                    .step()
                    .unwrap_or_else(|e| panic!("{style} {phrase}: {e}"));
                assert!(
                    r.rejected.is_empty(),
                    "{style} phrase {phrase}: {:?}",
                    r.rejected
                );
                assert!(
                    !r.reason.is_empty(),
                    "{style} phrase {phrase} gave no reason"
                );
                let layer_changes = r
                    .planned
                    .iter()
                    .filter(|p| {
                        matches!(
                            p,
                            Planned::Add { .. }
                                | Planned::Replace { .. }
                                | Planned::Remove { .. }
                                | Planned::Transition { .. }
                        )
                    })
                    .count();
                if layer_changes > 0 {
                    changes += 1;
                } else {
                    eprintln!("{style} phrase {phrase}: no change: {}", r.reason);
                }
                basses_max = basses_max.max(r.roles.iter().filter(|r| **r == Role::Bass).count());
                assert!(!r.roles.is_empty(), "{style} phrase {phrase}: silence");
            }
            assert!(
                changes >= 36,
                "{style}: only {changes} of 40 phrases changed the mix"
            );
            assert!(basses_max <= 1);
        }
    }
}
