//! The transport actor: the one place tempo, meter and key are changed.
//!
//! Every accepted change is published twice: as a `transport` event for clients, and on a
//! watch channel that the event publisher reads positions from and that a restarted
//! instance resumes from.

use kameo::Reply;
use kameo::actor::{Actor, ActorRef, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible, PanicError};
use kameo::message::{Context, Message};
use serde_json::json;
use std::ops::ControlFlow;
use tokio::sync::watch;

use djinn_engine::transport::{Transport, TransportChange, TransportError};

use crate::InjectPanic;
use crate::supervisor::Health;

/// The transport actor's name in health reports and `daemon.status`.
pub const NAME: &str = "transport";

/// Owns the daemon's [`Transport`].
pub struct TransportActor {
    transport: Transport,
    published: watch::Sender<Transport>,
    health: Health,
}

/// What the transport actor starts (and restarts) from.
#[derive(Clone)]
pub struct TransportArgs {
    /// The last published transport; a restarted actor resumes from it.
    pub published: watch::Sender<Transport>,
    pub health: Health,
}

impl Actor for TransportActor {
    type Args = TransportArgs;
    type Error = Infallible;

    fn name() -> &'static str {
        NAME
    }

    async fn on_start(args: Self::Args, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        args.health.started(NAME);
        let transport = args.published.borrow().clone();
        Ok(Self {
            transport,
            published: args.published,
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

/// Asks for the current transport.
#[derive(Debug, Clone, Copy)]
pub struct GetTransport;

/// A snapshot of the transport.
#[derive(Debug, Clone, Reply)]
pub struct TransportSnapshot(pub Transport);

impl Message<GetTransport> for TransportActor {
    type Reply = TransportSnapshot;

    async fn handle(&mut self, _: GetTransport, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        TransportSnapshot(self.transport.clone())
    }
}

/// Changes tempo, meter, key or scale; `source` says who asked (a method name, a profile).
#[derive(Debug, Clone)]
pub struct SetTransport {
    pub change: TransportChange,
    pub source: String,
}

impl Message<SetTransport> for TransportActor {
    type Reply = Result<Transport, TransportError>;

    async fn handle(
        &mut self,
        msg: SetTransport,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let before = self.transport.clone();
        self.transport.apply(&msg.change)?;
        let t = &self.transport;
        let mut changed = Vec::new();
        if t.tempo != before.tempo {
            changed.push("tempo");
        }
        if t.meter != before.meter {
            changed.push("meter");
        }
        if t.key.tonic != before.key.tonic {
            changed.push("key");
        }
        if t.key.scale != before.key.scale {
            changed.push("scale");
        }
        self.published.send_replace(t.clone());
        tracing::info!(tempo = t.tempo, meter = %t.meter, key = %t.key, source = %msg.source, "transport set");
        self.health.events().publish(
            "transport",
            json!({
                "kind": "changed",
                "tempo": t.tempo,
                "meter": t.meter,
                "key": t.key.tonic,
                "scale": t.key.scale,
                "changed": changed,
                "source": msg.source,
            }),
        );
        Ok(t.clone())
    }
}

impl Message<InjectPanic> for TransportActor {
    type Reply = ();

    async fn handle(&mut self, _: InjectPanic, _: &mut Context<Self, Self::Reply>) {
        panic!("fault injection: transport actor told to panic");
    }
}

/// The audio clock's report of where the playhead is; changes no setting and publishes no
/// event, so events are stamped with the position the listener actually hears.
#[derive(Debug, Clone, Copy)]
pub struct SyncPosition {
    pub frame: u64,
    pub beats: f64,
    pub rolling: bool,
    pub sample_rate: u32,
}

impl Message<SyncPosition> for TransportActor {
    type Reply = ();

    async fn handle(&mut self, msg: SyncPosition, _: &mut Context<Self, Self::Reply>) {
        self.transport
            .set_position(msg.frame, msg.beats, msg.rolling);
        self.transport.sample_rate = msg.sample_rate;
        self.published.send_replace(self.transport.clone());
    }
}
