//! `daemon.*`: ping, status and shutdown.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::unavailable;
use crate::Shared;
use crate::config::AudioBackend;
use crate::rpc::{Params, RpcError};
use djinn_actors::audio::AudioStatus;
use djinn_actors::generator::GetGeneratorStatus;
use djinn_actors::transport::GetTransport;

pub fn ping(params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    Ok(json!("pong"))
}

pub async fn status(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let config = shared.config();
    let transport = shared
        .transport
        .ask(GetTransport)
        .await
        .map_err(|e| unavailable("transport", e))?
        .0;
    let report = shared
        .audio
        .ask(AudioStatus)
        .await
        .map_err(|e| unavailable("audio", e))?;
    let mut audio = json!(report);
    audio["backend"] = json!(match config.audio.backend {
        Some(AudioBackend::Jack) => "jack",
        Some(AudioBackend::Offline) => "offline",
        Some(AudioBackend::None) => "none",
        None => "auto",
    });
    audio["jack_name"] = json!(config.audio.jack_name);
    let actors: serde_json::Map<String, Value> = shared
        .health
        .snapshot()
        .into_iter()
        .map(|(name, health)| (name.to_owned(), json!(health)))
        .collect();
    // The generator is reported when it answers; a restarting one shows in `actors`.
    let generator = shared
        .generator
        .ask(GetGeneratorStatus)
        .await
        .map(|g| json!(g))
        .unwrap_or(Value::Null);
    let director = shared
        .director
        .ask(djinn_actors::director::GetDirectorStatus)
        .await
        .map(|d| json!(d))
        .unwrap_or(Value::Null);
    // Profile files that did not load: a typo in the active profile shows here, not only in
    // the log (its last good version plays on).
    let profile_errors = shared
        .profiles
        .ask(djinn_actors::profiles::ListProfiles)
        .await
        .map(|list| json!(list.errors))
        .unwrap_or(Value::Null);
    let backends = tokio::task::spawn_blocking({
        let probe = shared.backends.clone();
        move || probe.probe()
    })
    .await
    .map_err(RpcError::internal)?;
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_s": (shared.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "started_at": humantime::format_rfc3339_millis(shared.started_at).to_string(),
        "state_dir": shared.state_dir,
        "profile": shared.selection.borrow().active,
        "profile_errors": profile_errors,
        "state": shared.state_report(),
        "audio": audio,
        "transport": super::transport::describe(&transport),
        "actors": actors,
        "generator": generator,
        "director": director,
        "backends": backends,
        "control": {
            "endpoint": shared.control_endpoint,
            "events": shared.events_endpoint,
            "auth": if config.control.token.is_some() { "token" } else { "none" },
            "requests": shared.stats.requests.load(Ordering::Relaxed),
            "rejected": shared.stats.rejected.load(Ordering::Relaxed),
            "events_dropped": shared.health.events().dropped() + shared.publisher.dropped(),
            "http": shared.http_endpoint,
            "subscribers": shared.publisher.subscribers.load(Ordering::Relaxed),
        },
    }))
}

pub fn shutdown(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    tracing::info!("shutdown requested over the control socket");
    shared
        .health
        .events()
        .publish("daemon", json!({ "kind": "stopping" }));
    // NOTE: trigger after this reply is queued: the server drains in-flight requests,
    // this one included, before it stops.
    shared.shutdown.trigger();
    Ok(json!({ "stopping": true }))
}
