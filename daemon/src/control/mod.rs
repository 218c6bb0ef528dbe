//! The ZeroMQ control server: a ROUTER socket answering JSON-RPC 2.0, one file per method
//! group.
//!
//! Each request is answered on its own task, so a slow method or a client that does not
//! read its replies never holds up the others. Bad input of any kind (not JSON, not
//! JSON-RPC, too large, wrong token, unknown method, wrong params) gets its JSON-RPC error
//! and a log line; nothing a client sends can stop the server.

mod daemon;
mod debug;
mod dj;
mod fx;
mod generate;
mod layer;
mod library;
mod profile;
mod render;
mod transport;

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use kameo::error::SendError;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use zeromq::{RouterSendHalf, RouterSocket, SocketRecv, SocketSend, ZmqMessage};

use crate::rpc::{self, Params, Request, Response, RpcError};
use crate::{DRAIN_TIMEOUT, Shared};

/// How long a reply may wait for a client that does not read before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves requests until shutdown, then answers those in flight (for up to
/// [`DRAIN_TIMEOUT`]) and returns.
pub async fn serve(socket: RouterSocket, shared: Arc<Shared>) {
    let (sender, mut receiver) = socket.split();
    let limit = shared.config().control;
    let in_flight = Arc::new(Semaphore::new(limit.max_in_flight));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.wait() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            received = receiver.recv() => {
                let message = match received {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket receive failed");
                        continue;
                    }
                };
                let Some(envelope) = Envelope::split(message) else { continue };
                let permit = in_flight.clone().try_acquire_owned();
                let shared = shared.clone();
                let sender = sender.clone();
                let max_bytes = limit.max_frame_bytes;
                tasks.spawn(async move {
                    let reply = match permit {
                        Ok(_permit) => answer(&shared, &envelope, max_bytes).await,
                        Err(_) => {
                            let error = RpcError::new(rpc::BUSY, "busy: too many requests in flight; retry shortly");
                            (reject(&shared, &envelope, Value::Null, error), Vec::new())
                        }
                    };
                    envelope.reply(sender, reply).await;
                });
            }
        }
    }
    drop(receiver);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            abandoned = tasks.len(),
            "requests still running at shutdown"
        );
        tasks.abort_all();
    }
}

/// A received message split into the routing envelope and the request frames.
struct Envelope {
    /// Peer identity, plus the empty delimiter frame REQ clients add.
    routing: Vec<Bytes>,
    frames: Vec<Bytes>,
}

impl Envelope {
    fn split(message: ZmqMessage) -> Option<Envelope> {
        let mut frames = message.into_vec();
        if frames.is_empty() {
            return None;
        }
        // ROUTER puts the peer identity first; REQ clients then send an empty delimiter.
        let routing_len = if frames.get(1).is_some_and(|f| f.is_empty()) {
            2
        } else {
            1
        };
        let rest = frames.split_off(routing_len.min(frames.len()));
        Some(Envelope {
            routing: frames,
            frames: rest,
        })
    }

    fn peer(&self) -> String {
        self.routing
            .first()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default()
    }

    async fn reply(self, mut sender: RouterSendHalf, (response, payload): (Response, Vec<Bytes>)) {
        let mut frames = self.routing;
        frames.push(Bytes::from(response.to_bytes()));
        frames.extend(payload);
        let Ok(message) = ZmqMessage::try_from(frames) else {
            return;
        };
        match tokio::time::timeout(SEND_TIMEOUT, sender.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "reply not delivered"),
            Err(_) => tracing::warn!("reply dropped: the client does not read its replies"),
        }
    }
}

/// A result and the binary frames that follow it (rendered audio).
pub struct Reply {
    pub result: Value,
    pub payload: Vec<Bytes>,
}

impl From<Value> for Reply {
    fn from(result: Value) -> Self {
        Reply {
            result,
            payload: Vec::new(),
        }
    }
}

/// Validates and answers one request.
async fn answer(shared: &Shared, envelope: &Envelope, max_bytes: usize) -> (Response, Vec<Bytes>) {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let size: usize = envelope.frames.iter().map(Bytes::len).sum();
    if size > max_bytes {
        let error = RpcError::new(
            rpc::INVALID_REQUEST,
            format!("invalid request: {size} bytes is over the {max_bytes}-byte limit"),
        );
        return (reject(shared, envelope, Value::Null, error), Vec::new());
    }
    let Some(first) = envelope.frames.first() else {
        let error = RpcError::new(rpc::INVALID_REQUEST, "invalid request: empty message");
        return (reject(shared, envelope, Value::Null, error), Vec::new());
    };
    let request = match Request::parse(first) {
        Ok(request) => request,
        Err(rejected) => {
            return (
                reject(shared, envelope, rejected.id, rejected.error),
                Vec::new(),
            );
        }
    };
    let token = shared.config().control.token;
    if let Some(expected) = token {
        let given = request.token.as_deref().unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            let message = if request.token.is_none() {
                "unauthorized: this daemon requires a \"token\" member in every request"
            } else {
                "unauthorized: wrong token"
            };
            let error = RpcError::new(rpc::UNAUTHORIZED, message);
            return (reject(shared, envelope, request.id, error), Vec::new());
        }
    }
    let payload = &envelope.frames[1..];
    let outcome = dispatch(shared, &request.method, &request.params, payload).await;
    if let Err(error) = &outcome {
        shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %envelope.peer(), method = %request.method, code = error.code, error = %error.message, "request failed");
    }
    match outcome {
        Ok(reply) => (Response::new(request.id, Ok(reply.result)), reply.payload),
        Err(error) => (Response::new(request.id, Err(error)), Vec::new()),
    }
}

fn reject(shared: &Shared, envelope: &Envelope, id: Value, error: RpcError) -> Response {
    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(peer = %envelope.peer(), code = error.code, error = %error.message, "request rejected");
    Response::new(id, Err(error))
}

/// Routes a method to its group.
async fn dispatch(
    shared: &Shared,
    method: &str,
    params: &Params,
    payload: &[Bytes],
) -> Result<Reply, RpcError> {
    if shared.shutdown.is_triggered() {
        return Err(RpcError::new(
            rpc::SHUTTING_DOWN,
            "shutting down: no new requests are taken",
        ));
    }
    if method == "render.audio" {
        return render::audio(shared, params).await;
    }
    let result = match method {
        "daemon.ping" => daemon::ping(params),
        "daemon.status" => daemon::status(shared, params).await,
        "daemon.shutdown" => daemon::shutdown(shared, params),
        "profile.list" => profile::list(shared, params).await,
        "profile.get" => profile::get(shared, params).await,
        "profile.set" => profile::set(shared, params).await,
        "transport.get" => transport::get(shared, params).await,
        "transport.set" => transport::set(shared, params).await,
        "transport.start" => transport::roll(shared, params, true).await,
        "transport.stop" => transport::roll(shared, params, false).await,
        "layer.add" => layer::add(shared, params, payload).await,
        "layer.replace" => layer::replace(shared, params, payload).await,
        "layer.remove" => layer::remove(shared, params).await,
        "layer.set" => layer::set(shared, params).await,
        "layer.list" => layer::list(shared, params).await,
        "fx.get" => fx::get(shared, params).await,
        "fx.chain.get" => fx::chain_get(shared, params).await,
        "fx.chain.set" => fx::chain_set(shared, params).await,
        "fx.pipe.get" => fx::pipe_get(shared, params).await,
        "fx.pipe.set" => fx::pipe_set(shared, params).await,
        "fx.set" => fx::set(shared, params).await,
        "dj.start" => dj::start(shared, params).await,
        "dj.stop" => dj::stop(shared, params).await,
        "dj.command" => dj::command(shared, params).await,
        "dj.set" => dj::set(shared, params).await,
        "script.reload" => dj::reload(shared, params).await,
        "script.status" => dj::status(shared, params).await,
        "rate" => dj::rate(shared, params).await,
        "generate.loop" => generate::generate_loop(shared, params).await,
        "generate.song" => generate::generate_song(shared, params).await,
        "render.presets" => render::presets(shared, params).await,
        "render.file" => render::file(shared, params).await,
        "library.build" => library::build(shared, params).await,
        "library.search" => library::search(shared, params).await,
        "quality.assess" => render::assess(shared, params, payload).await,
        "debug.panic" if shared.config().debug.fault_injection => {
            debug::panic(shared, params).await
        }
        _ => Err(RpcError::new(
            rpc::METHOD_NOT_FOUND,
            format!("unknown method: {method}"),
        )),
    };
    result.map(Reply::from)
}

/// Turns a failed ask into the reply the client should see: the handler's own error
/// through `handler`, anything else as "actor unavailable".
fn ask_error<M, E: Display>(
    actor: &str,
    error: SendError<M, E>,
    handler: impl FnOnce(E) -> RpcError,
) -> RpcError {
    match error {
        SendError::HandlerError(e) => handler(e),
        other => unavailable(actor, other),
    }
}

fn unavailable(actor: &str, error: impl Display) -> RpcError {
    RpcError::new(
        rpc::UNAVAILABLE,
        format!("the {actor} actor is unavailable ({error}); retry shortly"),
    )
}

/// The mixer's sample rate: what every buffer handed to it must be at.
async fn session_rate(shared: &Shared) -> Result<u32, RpcError> {
    Ok(shared
        .audio
        .ask(djinn_actors::audio::AudioStatus)
        .await
        .map_err(|e| unavailable("audio", e))?
        .sample_rate)
}

/// Resolves the file or folder a client names in `field` under the media roots (the files
/// area and `media.roots`).
fn media_path(
    shared: &Shared,
    field: &str,
    requested: &str,
    kind: crate::media::Kind,
) -> Result<std::path::PathBuf, RpcError> {
    let area = generate::files_dir(shared)?;
    crate::media::MediaRoots::new(&area, &shared.config().media.roots)
        .resolve(requested, kind)
        .map_err(|e| {
            tracing::debug!(field, requested, error = %e, "path refused");
            e.rpc(field)
        })
}

/// The `channels` param of a request with an audio payload: 1 or 2 (the default).
fn payload_channels(params: &Params) -> Result<usize, RpcError> {
    match params.opt_f64("channels")? {
        None | Some(2.0) => Ok(2),
        Some(1.0) => Ok(1),
        Some(_) => Err(RpcError::invalid_param("channels", "expected 1 or 2")),
    }
}

/// The `rate` param of a request with an audio payload, when given: 8000–384000 Hz.
fn payload_rate(params: &Params) -> Result<Option<u32>, RpcError> {
    match params.opt_f64("rate")? {
        Some(r) if (8_000.0..=384_000.0).contains(&r) => Ok(Some(r as u32)),
        Some(_) => Err(RpcError::invalid_param(
            "rate",
            "expected 8000 to 384000 Hz",
        )),
        None => Ok(None),
    }
}

/// Payload frames of interleaved little-endian f32 samples as stereo frames (mono doubled).
fn payload_frames(payload: &[Bytes], channels: usize) -> Result<Vec<[f32; 2]>, RpcError> {
    let bytes: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4 * channels) {
        return Err(RpcError::invalid_param(
            "frames",
            format!("the payload must be whole frames of {channels} little-endian f32 samples"),
        ));
    }
    let samples: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(if channels == 1 {
        samples.iter().map(|s| [*s, *s]).collect()
    } else {
        samples.chunks_exact(2).map(|f| [f[0], f[1]]).collect()
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Threads for a long analysis job: every core but one, which the audio keeps.
fn render_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}
