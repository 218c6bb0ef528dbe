//! Events on their way out of the actors.
//!
//! An actor that has news builds an [`Event`] (a topic and a JSON body) and hands it to the
//! [`EventSink`]. The sink never blocks: when the publisher falls behind, events are counted
//! as dropped rather than slowing the actor down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::mpsc;

/// One event: published as `[topic, JSON]`, with `data` under the envelope the publisher adds.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub topic: String,
    pub data: Value,
}

impl Event {
    pub fn new(topic: impl Into<String>, data: Value) -> Self {
        Self {
            topic: topic.into(),
            data,
        }
    }
}

/// The sending side of the event stream, cheap to clone into every actor.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink and the receiver the publisher drains; `capacity` events may wait in between.
    pub fn channel(capacity: usize) -> (EventSink, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity);
        let sink = EventSink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (sink, rx)
    }

    /// Queues an event for publishing; drops it (and counts it) if the queue is full.
    pub fn publish(&self, topic: &str, data: Value) {
        if self.tx.try_send(Event::new(topic, data)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the publisher could not keep up (or is gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
