//! djinn-actors: the kameo actors that make up the daemon, one per file with its messages.
//!
//! Actors own their state and talk only by message passing. Each runs under the
//! [`supervisor::Supervisor`]: one that panics is restarted from the last state it published,
//! and a `health` event says so. Events for the outside world leave through an
//! [`events::EventSink`]; the daemon stamps and publishes them. Nothing here binds sockets or
//! parses command lines.

pub mod audio;
pub mod backends;
pub mod director;
pub mod events;
pub mod generator;
pub mod library;
pub mod moods;
pub mod profiles;
pub mod ratings;
pub mod scripting;
pub mod supervisor;
pub mod transport;
pub mod watcher;

/// Replies of actors that can be made to panic on purpose, to prove supervision works.
///
/// Sent only when the operator turned fault injection on (`[debug] fault_injection`).
#[derive(Debug, Clone, Copy)]
pub struct InjectPanic;
