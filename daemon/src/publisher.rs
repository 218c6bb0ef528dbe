//! The event publisher: owns the PUB socket and stamps every event.
//!
//! Each message is `[topic, JSON]`, the JSON carrying the daemon-wide sequence number, the
//! wall time and the transport position when the event was published. Sequence numbers let
//! a client see that it missed events (PUB drops what a slow or late subscriber did not take).

use djinn_actors::events::Event;
use djinn_engine::transport::Transport;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use zeromq::{PubSocket, SocketSend, ZmqMessage};

/// Publishes events until every sender is gone, then returns.
pub async fn publish(
    mut socket: PubSocket,
    mut events: mpsc::Receiver<Event>,
    transport: watch::Receiver<Transport>,
) {
    let mut seq: u64 = 0;
    while let Some(event) = events.recv().await {
        seq += 1;
        let body = json!({
            "seq": seq,
            "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "topic": event.topic,
            "position": transport.borrow().position(),
            "data": event.data,
        });
        let mut message = ZmqMessage::from(event.topic);
        message.push_back(body.to_string().into());
        if let Err(e) = socket.send(message).await {
            tracing::warn!(error = %e, seq, "event not published");
        }
    }
}
