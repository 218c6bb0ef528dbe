//! The event publisher: owns the PUB socket and stamps every event.
//!
//! Each message is `[topic, JSON]`, the JSON carrying the daemon-wide sequence number, the
//! wall time and the transport position when the event was published. Sequence numbers let
//! a client see that it missed events (PUB drops what a slow or late subscriber did not take).
//! Each subscriber has a bounded queue (`control.events_queue`): one that stops reading
//! loses its oldest events, counted in `daemon.status`, and never grows the daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use djinn_actors::events::Event;
use djinn_engine::transport::Transport;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};
use zeromq::{PubSocket, SocketSend, ZmqMessage};

/// What the publisher tells `daemon.status` about its subscribers.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Events dropped from ZeroMQ subscribers' queues because they did not keep up.
    pub subscriber_dropped: AtomicU64,
    /// Events HTTP event streams missed because they fell too far behind.
    pub stream_dropped: AtomicU64,
    /// ZeroMQ subscribers connected.
    pub subscribers: AtomicUsize,
}

impl PublisherStats {
    /// Events some subscriber lost because it did not keep up, over both transports.
    pub fn dropped(&self) -> u64 {
        self.subscriber_dropped.load(Ordering::Relaxed)
            + self.stream_dropped.load(Ordering::Relaxed)
    }
}

/// One event as published, for the HTTP event streams.
#[derive(Debug)]
pub struct Published {
    pub seq: u64,
    pub topic: String,
    /// The JSON sent on ZeroMQ.
    pub body: String,
}

/// Publishes events until every sender is gone, then returns.
pub async fn publish(
    mut socket: PubSocket,
    mut events: mpsc::Receiver<Event>,
    transport: watch::Receiver<Transport>,
    stats: Arc<PublisherStats>,
    streams: broadcast::Sender<Arc<Published>>,
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
        let body = body.to_string();
        if streams.receiver_count() > 0 {
            // An error only means every stream has just gone.
            let _ = streams.send(Arc::new(Published {
                seq,
                topic: event.topic.clone(),
                body: body.clone(),
            }));
        }
        let mut message = ZmqMessage::from(event.topic);
        message.push_back(body.into());
        if let Err(e) = socket.send(message).await {
            tracing::warn!(error = %e, seq, "event not published");
        }
        let dropped = socket.dropped();
        if dropped > stats.subscriber_dropped.swap(dropped, Ordering::Relaxed) {
            tracing::debug!(
                dropped,
                "a subscriber does not keep up; its oldest events dropped"
            );
        }
        stats
            .subscribers
            .store(socket.subscribers(), Ordering::Relaxed);
    }
}
