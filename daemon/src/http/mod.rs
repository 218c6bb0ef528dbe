//! The HTTP server: the same JSON-RPC as the ZeroMQ socket on `POST /rpc`, and the event
//! stream as Server-Sent Events on `GET /events`, for clients that speak only HTTP and for
//! remote clients (the ZeroMQ event socket stays on this machine: it cannot authenticate).
//!
//! Handlers are thin: `/rpc` goes through the control server's own validation and
//! dispatch. Everything is bounded by the `[control]` limits: a body by
//! `max_frame_bytes`, requests in flight by `max_in_flight` and `max_in_flight_bytes`
//! (shared with ZeroMQ), connections by `max_connections`, and each event stream by
//! `events_queue` (a client that falls behind loses its oldest events, and is told how
//! many). With a token configured, both routes require it.

mod listener;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::Shared;
use crate::control::{self, Incoming};
use crate::publisher::Published;
use crate::rpc::{self, RpcError};
pub use listener::BoundedListener;

/// How often an idle event stream sends a comment line, so proxies keep it open and a
/// client sees a dead connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the handlers share.
#[derive(Clone)]
struct HttpState {
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Published>>,
}

/// Serves until shutdown, then closes every event stream and returns.
pub async fn serve(
    listener: BoundedListener,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Published>>,
) {
    let max_body = shared
        .config()
        .control
        .max_frame_bytes
        .saturating_add(crate::OVERSIZE_GRACE);
    let shutdown = shared.shutdown.clone();
    let app = Router::new()
        .route("/rpc", post(rpc_over_http))
        .route("/events", get(event_stream))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(HttpState { shared, events });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

/// The token an HTTP client sent in `Authorization: Bearer …`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `POST /rpc`: one JSON-RPC request in the body, its reply in the response (always 200
/// with a JSON-RPC result or error, as over ZeroMQ).
async fn rpc_over_http(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &state.shared;
    let peer = "http";
    let Some(_admitted) = shared.in_flight.admit(body.len()) else {
        let response = control::reject(shared, peer, rpc::peek_id(&body), control::busy());
        return json_reply(response.to_bytes());
    };
    if rpc::peek_method(&body).as_deref() == Some("render.audio") {
        let error = RpcError::new(
            rpc::INVALID_REQUEST,
            "invalid request: render.audio replies with binary audio frames; call it over ZeroMQ",
        );
        let response = control::reject(shared, peer, rpc::peek_id(&body), error);
        return json_reply(response.to_bytes());
    }
    let max_bytes = shared.config().control.max_frame_bytes;
    let frames = [body];
    let incoming = Incoming {
        frames: &frames,
        peer,
        bearer: bearer(&headers),
    };
    let (response, _payload) = control::answer(shared, incoming, max_bytes).await;
    json_reply(response.to_bytes())
}

fn json_reply(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize)]
struct EventQuery {
    /// Comma-separated topic prefixes; none: every event.
    topics: Option<String>,
}

/// `GET /events?topics=a,b`: every event whose topic starts with one of the prefixes, as
/// Server-Sent Events (`event:` the topic, `data:` the JSON djinn publishes on ZeroMQ).
async fn event_stream(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> Response {
    let shared = state.shared.clone();
    if let Some(expected) = shared.config().control.token {
        let given = bearer(&headers).unwrap_or_default();
        if !control::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            let message = if bearer(&headers).is_none() {
                "unauthorized: send the token as \"Authorization: Bearer TOKEN\"\n"
            } else {
                "unauthorized: wrong token\n"
            };
            return (StatusCode::UNAUTHORIZED, message).into_response();
        }
    }
    let prefixes: Vec<String> = query
        .topics
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let receiver = state.events.subscribe();
    let shutdown = shared.shutdown.clone();
    let events =
        follow(receiver, prefixes, shared).take_until(async move { shutdown.wait().await });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// The events one client asked for. A client that falls more than `events_queue` events
/// behind gets a `dropped` event saying how many it missed, and they are counted in
/// `daemon.status` as for ZeroMQ subscribers.
fn follow(
    receiver: broadcast::Receiver<Arc<Published>>,
    prefixes: Vec<String>,
    shared: Arc<Shared>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(receiver, move |mut receiver| {
        let prefixes = prefixes.clone();
        let shared = shared.clone();
        async move {
            loop {
                match receiver.recv().await {
                    Ok(published) => {
                        let wanted = prefixes.is_empty()
                            || prefixes.iter().any(|p| published.topic.starts_with(p));
                        if wanted {
                            let event = SseEvent::default()
                                .event(published.topic.as_str())
                                .id(published.seq.to_string())
                                .data(published.body.as_str());
                            return Some((Ok(event), receiver));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        shared
                            .publisher
                            .stream_dropped
                            .fetch_add(missed, std::sync::atomic::Ordering::Relaxed);
                        let event = SseEvent::default()
                            .event("dropped")
                            .data(format!("{{\"missed\":{missed}}}"));
                        return Some((Ok(event), receiver));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
}
