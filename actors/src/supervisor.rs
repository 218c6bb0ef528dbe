//! The root of the actor tree and the health board every actor reports to.
//!
//! [`Supervisor`] owns the daemon's actors as supervised children: one that panics is
//! restarted (up to [`RESTART_LIMIT`] times in [`RESTART_WINDOW`]) with arguments that let it
//! resume from the state it last published. [`Health`] records each actor's life and
//! publishes a `health` event whenever one panics or comes back, so operators hear of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use kameo::actor::{Actor, ActorRef};
use kameo::error::{Infallible, PanicError};
use kameo::supervision::SupervisionStrategy;
use serde::Serialize;
use serde_json::json;

use crate::events::EventSink;

/// Restarts allowed within [`RESTART_WINDOW`] before an actor is left stopped.
pub const RESTART_LIMIT: u32 = 5;
/// The window over which restarts are counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The root actor: it does no work of its own and restarts its children one for one.
pub struct Supervisor;

impl Actor for Supervisor {
    type Args = ();
    type Error = Infallible;

    fn supervision_strategy() -> SupervisionStrategy {
        SupervisionStrategy::OneForOne
    }

    async fn on_start(_: Self::Args, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        Ok(Supervisor)
    }
}

/// Where an actor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    Running,
    /// It panicked and its supervisor is bringing it back.
    Restarting,
    /// It stopped and will not come back (restart limit reached, or shutdown).
    Stopped,
}

/// What the health board knows of one actor.
#[derive(Debug, Clone, Serialize)]
pub struct ActorHealth {
    pub state: ActorState,
    pub restarts: u32,
    /// The panic message of the last failure, if any.
    pub last_error: Option<String>,
    /// When the actor entered its current state.
    #[serde(serialize_with = "rfc3339")]
    pub since: SystemTime,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// Shared record of every actor's health, updated from their lifecycle hooks.
#[derive(Debug, Clone)]
pub struct Health {
    board: Arc<Mutex<BTreeMap<&'static str, ActorHealth>>>,
    events: EventSink,
}

impl Health {
    pub fn new(events: EventSink) -> Self {
        Self {
            board: Arc::default(),
            events,
        }
    }

    /// The event sink actors holding this board publish to.
    pub fn events(&self) -> &EventSink {
        &self.events
    }

    fn update<R>(&self, f: impl FnOnce(&mut BTreeMap<&'static str, ActorHealth>) -> R) -> R {
        // NOTE: the board holds plain values and no update can leave it half-written, so a
        // poisoned lock (a panic elsewhere while holding it) is safe to keep using.
        let mut board = self.board.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut board)
    }

    /// Called from an actor's `on_start`. A start after a panic is a restart: it is counted
    /// and published as a `health` event.
    pub fn started(&self, actor: &'static str) {
        let restarted = self.update(|board| {
            let entry = board.entry(actor).or_insert(ActorHealth {
                state: ActorState::Running,
                restarts: 0,
                last_error: None,
                since: SystemTime::now(),
            });
            let restarted = entry.state == ActorState::Restarting;
            if restarted {
                entry.restarts += 1;
            }
            entry.state = ActorState::Running;
            entry.since = SystemTime::now();
            restarted.then(|| entry.clone())
        });
        if let Some(entry) = restarted {
            tracing::warn!(actor, restarts = entry.restarts, "actor restarted");
            self.events.publish(
                "health",
                json!({
                    "kind": "actor_restarted",
                    "actor": actor,
                    "restarts": entry.restarts,
                    "error": entry.last_error,
                }),
            );
        }
    }

    /// Called from an actor's `on_panic`: records the failure and publishes it.
    pub fn panicked(&self, actor: &'static str, error: &PanicError) {
        let message = panic_message(error);
        tracing::error!(actor, error = %message, "actor panicked; restarting it");
        self.update(|board| {
            if let Some(entry) = board.get_mut(actor) {
                entry.state = ActorState::Restarting;
                entry.last_error = Some(message.clone());
                entry.since = SystemTime::now();
            }
        });
        self.events.publish(
            "health",
            json!({ "kind": "actor_panicked", "actor": actor, "error": message }),
        );
    }

    /// Called when an actor will not come back.
    pub fn stopped(&self, actor: &'static str) {
        self.update(|board| {
            if let Some(entry) = board.get_mut(actor) {
                entry.state = ActorState::Stopped;
                entry.since = SystemTime::now();
            }
        });
    }

    /// Every actor's health, by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, ActorHealth> {
        self.update(|board| board.clone())
    }
}

/// The text of a panic, whatever type it was raised with.
fn panic_message(error: &PanicError) -> String {
    error
        .with_str(str::to_owned)
        .unwrap_or_else(|| error.to_string())
}
