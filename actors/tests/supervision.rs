//! An actor that panics is restarted by its supervisor, resumes from its published state,
//! and the restart is reported as `health` events.

use std::time::Duration;

use djinn_actors::InjectPanic;
use djinn_actors::events::EventSink;
use djinn_actors::supervisor::{ActorState, Health, RESTART_LIMIT, RESTART_WINDOW, Supervisor};
use djinn_actors::transport::{GetTransport, SetTransport, TransportActor, TransportArgs};
use djinn_engine::transport::{Transport, TransportChange};
use kameo::actor::Spawn;
use tokio::sync::watch;

#[tokio::test]
async fn a_panicking_actor_is_restarted_with_its_state_and_reported() {
    let (events, mut rx) = EventSink::channel(64);
    let health = Health::new(events);
    let supervisor = Supervisor::spawn(());
    let (published, _) = watch::channel(Transport::default());
    let transport = TransportActor::supervise(
        &supervisor,
        TransportArgs {
            published,
            health: health.clone(),
        },
    )
    .restart_limit(RESTART_LIMIT, RESTART_WINDOW)
    .spawn()
    .await;

    let change = TransportChange {
        tempo: Some(133.0),
        ..Default::default()
    };
    let source = "test".to_owned();
    transport
        .ask(SetTransport { change, source })
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap().topic, "transport");

    assert!(
        transport.ask(InjectPanic).await.is_err(),
        "the ask sees the panic"
    );

    let panicked = rx.recv().await.unwrap();
    assert_eq!(panicked.topic, "health");
    assert_eq!(panicked.data["kind"], "actor_panicked");
    assert_eq!(panicked.data["actor"], "transport");
    let restarted = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("restart reported within 2 s")
        .unwrap();
    assert_eq!(restarted.data["kind"], "actor_restarted");
    assert_eq!(restarted.data["restarts"], 1);
    assert!(
        restarted.data["error"]
            .as_str()
            .unwrap()
            .contains("told to panic"),
        "{restarted:?}"
    );

    // The same reference reaches the new instance, which resumed at 133 BPM.
    let snapshot = transport.ask(GetTransport).await.unwrap();
    assert_eq!(snapshot.0.tempo, 133.0);
    let board = health.snapshot();
    assert_eq!(board["transport"].state, ActorState::Running);
    assert_eq!(board["transport"].restarts, 1);
}
