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
use djinn_engine::decode::{NonFinite, zero_nonfinite};
use kameo::error::SendError;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use zeromq::{RouterSendHalf, RouterSocket, SocketRecv, SocketSend, ZmqMessage};

use crate::rpc::{self, Params, Request, RequestId, Response, RpcError};
use crate::{DRAIN_TIMEOUT, Shared};

/// How long a reply may wait for a client that does not read before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves requests until shutdown, then answers those in flight (for up to
/// [`DRAIN_TIMEOUT`]) and returns.
pub async fn serve(socket: RouterSocket, shared: Arc<Shared>) {
    let (sender, mut receiver) = socket.split();
    let limit = shared.config().control;
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
                let Some(mut envelope) = Envelope::split(message) else { continue };
                let size = envelope.size();
                let admitted = shared.in_flight.admit(size);
                let shared = shared.clone();
                let sender = sender.clone();
                let max_bytes = limit.max_frame_bytes;
                tasks.spawn(async move {
                    let peer = envelope.peer();
                    let reply = match admitted {
                        Some(_admitted) => {
                            let incoming = Incoming { frames: &envelope.frames, peer: &peer, bearer: None };
                            answer(&shared, incoming, max_bytes).await
                        }
                        None => {
                            // Only the id is kept: a busy reply holds no request body.
                            let id = envelope.frames.first().map_or_else(RequestId::null, |f| rpc::peek_id(f));
                            envelope.frames.clear();
                            (reject(&shared, &peer, id, busy()), Vec::new())
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

    /// The request's bytes, routing frames excluded.
    fn size(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
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

/// A transport's view of one request: its frames, who sent it (for logs) and a token
/// the transport carried outside the JSON (an HTTP `Authorization: Bearer` header).
pub(crate) struct Incoming<'a> {
    pub frames: &'a [Bytes],
    pub peer: &'a str,
    pub bearer: Option<&'a str>,
}

/// Validates and answers one request, from whichever transport it came.
pub(crate) async fn answer(
    shared: &Shared,
    incoming: Incoming<'_>,
    max_bytes: usize,
) -> (Response, Vec<Bytes>) {
    let peer = incoming.peer;
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let size: usize = incoming.frames.iter().map(Bytes::len).sum();
    if size > max_bytes {
        let error = RpcError::new(
            rpc::INVALID_REQUEST,
            format!("invalid request: {size} bytes is over the {max_bytes}-byte limit"),
        );
        return (reject(shared, peer, RequestId::null(), error), Vec::new());
    }
    let Some((first, payload)) = incoming.frames.split_first() else {
        let error = RpcError::new(rpc::INVALID_REQUEST, "invalid request: empty message");
        return (reject(shared, peer, RequestId::null(), error), Vec::new());
    };
    let request = match Request::parse(first) {
        Ok(request) => request,
        Err(rejected) => {
            return (
                reject(shared, peer, rejected.id, rejected.error),
                Vec::new(),
            );
        }
    };
    if let Some(expected) = shared.config().control.token {
        let given = request.token.as_deref().or(incoming.bearer);
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())) {
            let message = if given.is_none() {
                "unauthorized: this daemon requires a \"token\" member in every request"
            } else {
                "unauthorized: wrong token"
            };
            let error = RpcError::new(rpc::UNAUTHORIZED, message);
            return (reject(shared, peer, request.id, error), Vec::new());
        }
    }
    let outcome = dispatch(shared, &request.method, &request.params, payload).await;
    if let Err(error) = &outcome {
        shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %peer, method = %request.method, code = error.code, error = %error.message, "request failed");
    }
    match outcome {
        Ok(reply) => (Response::new(request.id, Ok(reply.result)), reply.payload),
        Err(error) => (Response::new(request.id, Err(error)), Vec::new()),
    }
}

pub(crate) fn reject(shared: &Shared, peer: &str, id: RequestId, error: RpcError) -> Response {
    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(peer = %peer, code = error.code, error = %error.message, "request rejected");
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

/// The requests, and their bytes, being answered at once over every transport.
pub struct InFlight {
    requests: Arc<Semaphore>,
    kib: Arc<Semaphore>,
}

/// A request's place within [`InFlight`], given back when dropped.
pub(crate) type Admitted = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl InFlight {
    pub fn new(control: &crate::config::ControlConfig) -> Self {
        Self {
            requests: Arc::new(Semaphore::new(control.max_in_flight)),
            kib: Arc::new(Semaphore::new(kib(control.max_in_flight_bytes) as usize)),
        }
    }

    /// A place for a request of `size` bytes, or `None` when either limit is reached.
    pub(crate) fn admit(&self, size: usize) -> Option<Admitted> {
        let request = self.requests.clone().try_acquire_owned().ok()?;
        let bytes = self.kib.clone().try_acquire_many_owned(kib(size)).ok()?;
        Some((request, bytes))
    }
}

/// The reply to a request over the in-flight limits.
pub(crate) fn busy() -> RpcError {
    RpcError::new(
        rpc::BUSY,
        "busy: too many requests in flight; retry shortly",
    )
}

/// A request's size in whole KiB (at least one), the unit of the in-flight byte budget.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
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

/// Payload frames of interleaved little-endian f32 samples as stereo frames (mono doubled),
/// with every non-finite sample zeroed.
fn payload_frames(payload: &[Bytes], channels: usize) -> Result<Vec<[f32; 2]>, RpcError> {
    payload_audio(payload, channels).map(|(frames, _)| frames)
}

/// [`payload_frames`] and the non-finite samples zeroed in them, counted as the client sent
/// them (a mono NaN is one).
fn payload_audio(
    payload: &[Bytes],
    channels: usize,
) -> Result<(Vec<[f32; 2]>, NonFinite), RpcError> {
    let bytes: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4 * channels) {
        return Err(RpcError::invalid_param(
            "frames",
            format!("the payload must be whole frames of {channels} little-endian f32 samples"),
        ));
    }
    let mut samples: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let zeroed = zero_nonfinite(&mut samples, channels);
    let frames = if channels == 1 {
        samples.iter().map(|s| [*s, *s]).collect()
    } else {
        samples.chunks_exact(2).map(|f| [f[0], f[1]]).collect()
    };
    Ok((frames, zeroed))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Threads for a long analysis job: every core but one, which the audio keeps.
fn render_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}
