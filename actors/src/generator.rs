//! The generator: what turns prompts into recipes and keeps what was generated.
//!
//! It owns the mood script, the render presets and the buffers `generate.loop` made, which
//! `layer.add` picks up by id. The rendering itself runs on tokio's blocking pool, outside
//! this actor, so that a long song never holds up a loop or a lookup.

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use kameo::Reply;
use kameo::actor::{Actor, ActorRef, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible, PanicError};
use kameo::message::{Context, Message};
use serde::Serialize;

use djinn_engine::profile::{Profile, ProfileSet};
use djinn_engine::synth::Role;
use djinn_engine::synth::preset::{self, Preset};

use crate::moods::{
    ChainChoice, ChainHints, ChainScript, Interpretation, MoodError, MoodScript, Versions,
};
use crate::supervisor::Health;

/// The generator's name in health reports and `daemon.status`.
pub const NAME: &str = "generator";

/// Buffers kept before the oldest is forgotten.
pub const MAX_BUFFERS: usize = 64;

/// What the generator starts (and restarts) from.
#[derive(Clone)]
pub struct GeneratorArgs {
    pub scripts_dir: Option<PathBuf>,
    pub preset_dirs: Vec<PathBuf>,
    pub health: Health,
}

/// A generated buffer, ready for `layer.add`.
#[derive(Debug, Clone)]
pub struct StoredBuffer {
    pub frames: Arc<[[f32; 2]]>,
    pub sample_rate: u32,
    /// The role when the buffer holds one part only.
    pub role: Option<Role>,
    pub description: String,
}

pub struct Generator {
    moods: Versions<MoodScript>,
    chains: Versions<ChainScript>,
    presets: BTreeMap<String, Preset>,
    preset_errors: Vec<String>,
    buffers: BTreeMap<String, StoredBuffer>,
    order: VecDeque<String>,
    next_id: u64,
    health: Health,
}

impl Actor for Generator {
    type Args = GeneratorArgs;
    type Error = Infallible;

    fn name() -> &'static str {
        NAME
    }

    async fn on_start(args: Self::Args, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        let moods = match MoodScript::load(args.scripts_dir.as_deref()) {
            Ok(script) => script,
            Err(error) => {
                tracing::error!(%error, "mood script not loaded; using the built-in one");
                args.health.events().publish("script.error", error.event());
                MoodScript::built_in()
            }
        };
        tracing::info!(script = moods.name(), "mood script loaded");
        let chains = match ChainScript::load(args.scripts_dir.as_deref()) {
            Ok(script) => script,
            Err(error) => {
                tracing::error!(%error, "render script not loaded; using the built-in one");
                args.health.events().publish("script.error", error.event());
                ChainScript::built_in()
            }
        };
        let (presets, errors) = preset::load_presets(&args.preset_dirs);
        for error in &errors {
            tracing::warn!(%error, "preset skipped");
        }
        args.health.started(NAME);
        Ok(Generator {
            moods: Versions::new(moods),
            chains: Versions::new(chains),
            presets,
            preset_errors: errors.iter().map(ToString::to_string).collect(),
            buffers: BTreeMap::new(),
            order: VecDeque::new(),
            next_id: 1,
            health: args.health,
        })
    }

    async fn on_panic(
        &mut self,
        _: WeakActorRef<Self>,
        err: PanicError,
    ) -> Result<ControlFlow<ActorStopReason>, Self::Error> {
        self.health.panicked(NAME, &err);
        Ok(ControlFlow::Break(ActorStopReason::Panicked(err)))
    }
}

/// Publishes a `script.error` event for a failed mood or render script call.
fn report(events: &crate::events::EventSink, error: &MoodError) {
    tracing::warn!(%error, "script call failed");
    let event = match error {
        MoodError::Script(e) => e.event(),
        MoodError::Result { script, .. } => serde_json::json!({
            "script": script, "line": 0, "message": error.to_string()
        }),
    };
    events.publish("script.error", event);
}

/// Turns a prompt into a processing chain with the render script.
#[derive(Debug, Clone)]
pub struct ChooseChain {
    pub prompt: String,
    pub hints: ChainHints,
}

impl Message<ChooseChain> for Generator {
    type Reply = Result<ChainChoice, MoodError>;

    async fn handle(
        &mut self,
        msg: ChooseChain,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let events = self.health.events();
        self.chains.run(
            events,
            |e| report(events, e),
            |script| script.choose(&msg.prompt, &msg.hints),
        )
    }
}

/// Turns a prompt into a recipe with the mood script.
#[derive(Debug, Clone)]
pub struct Interpret {
    pub prompt: String,
    pub profile: Profile,
    pub profiles: ProfileSet,
}

impl Message<Interpret> for Generator {
    type Reply = Result<Interpretation, MoodError>;

    async fn handle(&mut self, msg: Interpret, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let events = self.health.events();
        self.moods.run(
            events,
            |e| report(events, e),
            |script| script.interpret(&msg.prompt, &msg.profile, &msg.profiles),
        )
    }
}

/// Keeps a generated buffer and returns its id.
#[derive(Debug, Clone)]
pub struct StoreBuffer {
    pub buffer: StoredBuffer,
}

impl Message<StoreBuffer> for Generator {
    type Reply = String;

    async fn handle(&mut self, msg: StoreBuffer, _: &mut Context<Self, Self::Reply>) -> String {
        let id = format!("loop-{}", self.next_id);
        self.next_id += 1;
        self.buffers.insert(id.clone(), msg.buffer);
        self.order.push_back(id.clone());
        while self.order.len() > MAX_BUFFERS {
            if let Some(old) = self.order.pop_front() {
                self.buffers.remove(&old);
                tracing::debug!(buffer = %old, "oldest generated buffer forgotten");
            }
        }
        id
    }
}

/// A buffer id that matches nothing kept.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no generated buffer {0:?} (the newest {MAX_BUFFERS} are kept)")]
pub struct UnknownBuffer(pub String);

/// Looks a generated buffer up.
#[derive(Debug, Clone)]
pub struct GetBuffer {
    pub id: String,
}

impl Message<GetBuffer> for Generator {
    type Reply = Result<StoredBuffer, UnknownBuffer>;

    async fn handle(&mut self, msg: GetBuffer, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.buffers
            .get(&msg.id)
            .cloned()
            .ok_or(UnknownBuffer(msg.id))
    }
}

/// The render presets and the files that failed to load.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct PresetList {
    pub presets: Vec<Preset>,
    pub errors: Vec<String>,
}

/// Lists the render presets.
#[derive(Debug, Clone, Copy)]
pub struct ListPresets;

impl Message<ListPresets> for Generator {
    type Reply = PresetList;

    async fn handle(&mut self, _: ListPresets, _: &mut Context<Self, Self::Reply>) -> PresetList {
        PresetList {
            presets: self.presets.values().cloned().collect(),
            errors: self.preset_errors.clone(),
        }
    }
}

/// Looks a render preset up by name.
#[derive(Debug, Clone)]
pub struct GetPreset {
    pub name: String,
}

impl Message<GetPreset> for Generator {
    type Reply = Option<Preset>;

    async fn handle(
        &mut self,
        msg: GetPreset,
        _: &mut Context<Self, Self::Reply>,
    ) -> Option<Preset> {
        self.presets.get(&msg.name).cloned()
    }
}

/// Status for `daemon.status`.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct GeneratorStatus {
    pub mood_script: String,
    pub render_script: String,
    pub buffers: usize,
    pub presets: usize,
}

/// Asks for the generator's status.
#[derive(Debug, Clone, Copy)]
pub struct GetGeneratorStatus;

impl Message<GetGeneratorStatus> for Generator {
    type Reply = GeneratorStatus;

    async fn handle(
        &mut self,
        _: GetGeneratorStatus,
        _: &mut Context<Self, Self::Reply>,
    ) -> GeneratorStatus {
        GeneratorStatus {
            mood_script: self.moods.running().name().to_owned(),
            render_script: self.chains.running().name().to_owned(),
            buffers: self.buffers.len(),
            presets: self.presets.len(),
        }
    }
}

/// Reloads the mood and render scripts (the watcher sends this when `moods/*.rhai` changes).
/// A script that does not compile is reported and the running one kept; the reply is the
/// mood script's.
#[derive(Debug, Clone)]
pub struct ReloadMoods {
    pub scripts_dir: Option<PathBuf>,
}

impl Message<ReloadMoods> for Generator {
    type Reply = Result<String, crate::scripting::ScriptError>;

    async fn handle(
        &mut self,
        msg: ReloadMoods,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        match ChainScript::load(msg.scripts_dir.as_deref()) {
            Ok(script) => {
                tracing::info!(script = script.name(), "render script reloaded");
                self.chains.load(script);
            }
            Err(error) => {
                tracing::warn!(%error, "render script not reloaded; keeping the running one");
                self.health.events().publish("script.error", error.event());
            }
        }
        match MoodScript::load(msg.scripts_dir.as_deref()) {
            Ok(script) => {
                tracing::info!(script = script.name(), "mood script reloaded");
                self.moods.load(script);
                let name = self.moods.running().name().to_owned();
                self.health.events().publish(
                    "script",
                    serde_json::json!({ "kind": "loaded", "script": name }),
                );
                Ok(name)
            }
            Err(error) => {
                tracing::warn!(%error, "mood script not reloaded; keeping the running one");
                self.health.events().publish("script.error", error.event());
                Err(error)
            }
        }
    }
}
