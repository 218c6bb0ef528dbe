//! The profile library: the loaded style profiles and which one is active.
//!
//! Profiles come from the built-in set, overridden by the configured directories. Selecting
//! a profile moves the transport to its default tempo, meter and key. Reloading re-reads
//! the directories; files that fail are reported with path and line. A profile whose file
//! breaks keeps its last good version (as a broken configuration keeps the running one), so
//! a typo saved in the active profile never switches the style; a deleted active profile
//! stays active from memory until another is set. A reload that changes the active
//! profile's default tempo, meter or key moves the transport there, as `profile.set` does.

use std::ops::ControlFlow;
use std::path::PathBuf;

use kameo::Reply;
use kameo::actor::{Actor, ActorRef, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible, PanicError};
use kameo::message::{Context, Message};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use djinn_engine::profile::{Profile, ProfileError, ProfileSet};
use djinn_engine::transport::TransportChange;

use crate::InjectPanic;
use crate::supervisor::Health;
use crate::transport::{SetTransport, TransportActor};

/// The profile library's name in health reports and `daemon.status`.
pub const NAME: &str = "profiles";

/// The style djinn plays when nothing else is chosen.
pub const DEFAULT_PROFILE: &str = "techno_minimal";

/// Which directories are read and which profile is active: what a restart resumes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSelection {
    pub dirs: Vec<PathBuf>,
    pub active: String,
}

/// What the profile library starts (and restarts) from.
#[derive(Clone)]
pub struct ProfileArgs {
    pub selection: watch::Sender<ProfileSelection>,
    pub transport: ActorRef<TransportActor>,
    pub health: Health,
}

/// A profile file that did not load, and what djinn did about it.
#[derive(Debug, Clone)]
struct ProfileFault {
    error: ProfileError,
    /// The profile the file defines, when it had loaded before and its last good version
    /// stays in use.
    kept: Option<String>,
}

impl std::fmt::Display for ProfileFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kept {
            Some(name) => write!(
                f,
                "{} (the last good version of {name} stays in use)",
                self.error
            ),
            None => self.error.fmt(f),
        }
    }
}

/// Holds the loaded profiles.
pub struct ProfileLibrary {
    set: ProfileSet,
    errors: Vec<ProfileFault>,
    selection: watch::Sender<ProfileSelection>,
    transport: ActorRef<TransportActor>,
    health: Health,
}

impl ProfileLibrary {
    /// Re-reads the directories. Profiles whose files no longer load keep their last good
    /// version; the active one is kept even when its file is gone.
    fn load(&mut self) {
        let dirs = self.selection.borrow().dirs.clone();
        let (mut set, errors) = ProfileSet::load_over_built_in(&dirs);
        let previous = std::mem::take(&mut self.set);
        let mut faults = Vec::with_capacity(errors.len());
        for error in errors {
            let name = error
                .path
                .extension()
                .is_some_and(|e| e == "toml")
                .then(|| error.path.file_stem().and_then(|s| s.to_str()))
                .flatten();
            let kept = name.and_then(|n| previous.get(n)).cloned();
            tracing::warn!(%error, kept = kept.is_some(), "profile file not loaded");
            faults.push(ProfileFault {
                error,
                kept: kept.as_ref().map(|p| p.name.clone()),
            });
            if let Some(profile) = kept {
                set.insert(profile);
            }
        }
        let active = self.selection.borrow().active.clone();
        if set.get(&active).is_none()
            && let Some(profile) = previous.get(&active)
        {
            tracing::warn!(profile = %active, "the active profile's file is gone; it stays active from memory");
            faults.push(ProfileFault {
                error: ProfileError {
                    path: PathBuf::from(format!("{active}.toml")),
                    line: None,
                    message: "the active profile's file is gone: it stays active until another \
                              profile is set"
                        .into(),
                },
                kept: None,
            });
            set.insert(profile.clone());
        }
        self.set = set;
        self.errors = faults;
        if self.set.get(&active).is_none() {
            let fallback = if self.set.get(DEFAULT_PROFILE).is_some() {
                DEFAULT_PROFILE.to_owned()
            } else {
                self.set
                    .iter()
                    .next()
                    .map(|p| p.name.clone())
                    .unwrap_or_default()
            };
            tracing::error!(wanted = %active, using = %fallback, "active profile not found");
            self.health.events().publish(
                "profile",
                json!({ "kind": "changed", "profile": fallback, "previous": active,
                        "reason": "the profile did not load" }),
            );
            self.selection.send_modify(|s| s.active = fallback);
        }
    }

    fn active(&self) -> Option<&Profile> {
        self.set.get(&self.selection.borrow().active)
    }

    fn error_texts(&self) -> Vec<String> {
        self.errors.iter().map(ToString::to_string).collect()
    }
}

impl Actor for ProfileLibrary {
    type Args = ProfileArgs;
    type Error = Infallible;

    fn name() -> &'static str {
        NAME
    }

    async fn on_start(args: Self::Args, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        let mut library = ProfileLibrary {
            set: ProfileSet::default(),
            errors: Vec::new(),
            selection: args.selection,
            transport: args.transport,
            health: args.health,
        };
        library.load();
        library.health.started(NAME);
        Ok(library)
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

/// One line of `profile.list`.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileSummary {
    pub name: String,
    pub description: String,
    pub tempo: f64,
    pub key: String,
    pub meter: String,
    pub active: bool,
}

/// The profiles that loaded, and the files that did not.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct ProfileList {
    pub active: String,
    pub profiles: Vec<ProfileSummary>,
    pub errors: Vec<String>,
}

/// Lists the loaded profiles.
#[derive(Debug, Clone, Copy)]
pub struct ListProfiles;

impl Message<ListProfiles> for ProfileLibrary {
    type Reply = ProfileList;

    async fn handle(&mut self, _: ListProfiles, _: &mut Context<Self, Self::Reply>) -> ProfileList {
        let active = self.selection.borrow().active.clone();
        ProfileList {
            profiles: self
                .set
                .iter()
                .map(|p| ProfileSummary {
                    name: p.name.clone(),
                    description: p.description.clone(),
                    tempo: p.tempo.default,
                    key: p.key.to_string(),
                    meter: p.meter.to_string(),
                    active: p.name == active,
                })
                .collect(),
            active,
            errors: self.error_texts(),
        }
    }
}

/// A profile name that matches no loaded profile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no profile named {name:?}; loaded: {known}")]
pub struct UnknownProfile {
    pub name: String,
    pub known: String,
}

impl ProfileLibrary {
    fn lookup(&self, name: &str) -> Result<&Profile, UnknownProfile> {
        self.set.get(name).ok_or_else(|| UnknownProfile {
            name: name.to_owned(),
            known: self
                .set
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// Gets one profile, or the active one when `name` is `None`.
#[derive(Debug, Clone)]
pub struct GetProfile {
    pub name: Option<String>,
}

impl Message<GetProfile> for ProfileLibrary {
    type Reply = Result<Profile, UnknownProfile>;

    async fn handle(&mut self, msg: GetProfile, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let name = msg
            .name
            .unwrap_or_else(|| self.selection.borrow().active.clone());
        self.lookup(&name).cloned()
    }
}

/// Makes a profile active and moves the transport to its tempo, meter and key.
#[derive(Debug, Clone)]
pub struct SetProfile {
    pub name: String,
}

impl Message<SetProfile> for ProfileLibrary {
    type Reply = Result<Profile, UnknownProfile>;

    async fn handle(&mut self, msg: SetProfile, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let profile = self.lookup(&msg.name)?.clone();
        let previous = self.selection.borrow().active.clone();
        self.selection
            .send_modify(|s| s.active = profile.name.clone());
        tracing::info!(profile = %profile.name, %previous, "profile set");
        self.health.events().publish(
            "profile",
            json!({ "kind": "changed", "profile": profile.name, "previous": previous }),
        );
        self.move_transport(&profile).await;
        Ok(profile)
    }
}

impl ProfileLibrary {
    /// Moves the transport to `profile`'s default tempo, meter and key.
    async fn move_transport(&self, profile: &Profile) {
        let change = TransportChange {
            tempo: Some(profile.tempo.default),
            meter: Some(profile.meter),
            key: Some(profile.key.tonic.to_string()),
            scale: Some(profile.key.scale),
        };
        let set = SetTransport {
            change,
            source: format!("profile:{}", profile.name),
        };
        // NOTE: tell, not ask: the transport publishes its own event, and the profile library
        // must not wait on another actor while holding its mailbox.
        if let Err(e) = self.transport.tell(set).await {
            tracing::warn!(error = %e, "could not move the transport to the profile");
        }
    }
}

/// Re-reads the profile directories, optionally switching to new ones.
#[derive(Debug, Clone, Default)]
pub struct ReloadProfiles {
    pub dirs: Option<Vec<PathBuf>>,
}

/// What a reload found.
#[derive(Debug, Clone, Serialize, Reply)]
pub struct ReloadReport {
    pub loaded: usize,
    pub errors: Vec<String>,
}

impl Message<ReloadProfiles> for ProfileLibrary {
    type Reply = ReloadReport;

    async fn handle(
        &mut self,
        msg: ReloadProfiles,
        _: &mut Context<Self, Self::Reply>,
    ) -> ReloadReport {
        if let Some(dirs) = msg.dirs {
            self.selection.send_modify(|s| s.dirs = dirs);
        }
        let before = self.active().cloned();
        self.load();
        for fault in &self.errors {
            self.health.events().publish(
                "profile",
                json!({
                    "kind": "error",
                    "path": fault.error.path,
                    "line": fault.error.line,
                    "message": fault.error.message,
                    "error": fault.to_string(),
                    "kept": fault.kept,
                }),
            );
        }
        if let (Some(before), Some(after)) = (before, self.active().cloned())
            && before.name == after.name
            && (before.tempo.default != after.tempo.default
                || before.meter != after.meter
                || before.key != after.key)
        {
            tracing::info!(profile = %after.name, "the active profile changed; moving the transport to it");
            self.move_transport(&after).await;
        }
        let report = ReloadReport {
            loaded: self.set.len(),
            errors: self.error_texts(),
        };
        tracing::info!(
            loaded = report.loaded,
            skipped = report.errors.len(),
            "profiles reloaded"
        );
        self.health.events().publish(
            "profile",
            json!({
                "kind": "reloaded",
                "loaded": report.loaded,
                "errors": report.errors,
                "active": self.active().map(|p| p.name.clone()),
            }),
        );
        report
    }
}

impl Message<InjectPanic> for ProfileLibrary {
    type Reply = ();

    async fn handle(&mut self, _: InjectPanic, _: &mut Context<Self, Self::Reply>) {
        panic!("fault injection: profile library told to panic");
    }
}

/// Every loaded profile and the active one, for work that may switch style (prompts).
#[derive(Debug, Clone, Reply)]
pub struct ProfileSnapshot {
    pub set: ProfileSet,
    pub active: Profile,
}

/// Takes a snapshot of the library.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotProfiles;

impl Message<SnapshotProfiles> for ProfileLibrary {
    type Reply = Result<ProfileSnapshot, UnknownProfile>;

    async fn handle(
        &mut self,
        _: SnapshotProfiles,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let active = self.selection.borrow().active.clone();
        let active = self.lookup(&active)?.clone();
        Ok(ProfileSnapshot {
            set: self.set.clone(),
            active,
        })
    }
}
