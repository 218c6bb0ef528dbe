//! `dj.*`, `script.*` and `rate`: the DJ set, its script and what listeners think of it.

use serde_json::{Value, json};

use super::{ask_error, unavailable};
use crate::Shared;
use crate::rpc::{self, Params, RpcError};
use djinn_actors::director::{
    DirectorError, DjCommand, DjSet, DjStart, DjStop, GetScriptStatus, Rate, ReloadScript,
};
use djinn_engine::synth::Role;

fn director_error(e: DirectorError) -> RpcError {
    match &e {
        DirectorError::AlreadyPlaying | DirectorError::NotPlaying => {
            RpcError::new(rpc::CONFLICT, e.to_string())
        }
        DirectorError::Invalid { field, message } => RpcError::invalid_param(field, message),
        DirectorError::Unavailable(_) => RpcError::new(rpc::UNAVAILABLE, e.to_string()),
        DirectorError::Script(s) => RpcError {
            code: rpc::INVALID_PARAMS,
            message: e.to_string(),
            data: Some(s.event()),
        },
    }
}

pub async fn start(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["seed"])?;
    // Without a seed, a fresh one; reported back so the set can be played again.
    let seed = super::generate::seed(params)?;
    let report = shared
        .director
        .ask(DjStart { seed })
        .await
        .map_err(|e| ask_error("director", e, director_error))?;
    Ok(json!(report))
}

pub async fn stop(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let report = shared
        .director
        .ask(DjStop)
        .await
        .map_err(|e| ask_error("director", e, director_error))?;
    Ok(json!(report))
}

pub async fn command(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["text"])?;
    let text = params.opt_str("text")?.unwrap_or_default().to_owned();
    let decision = shared
        .director
        .ask(DjCommand { text })
        .await
        .map_err(|e| ask_error("director", e, director_error))?;
    Ok(json!(decision))
}

/// Reads `stems`: a list (or a comma-separated string) of roles; plurals as a DJ says
/// them ("drums", "pads", "leads") are accepted.
fn stems(params: &Params) -> Result<Option<Vec<Role>>, RpcError> {
    let words: Vec<String> = match params.0.get("stems") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.split(',').map(|w| w.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| RpcError::invalid_param("stems", "expected role names"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(RpcError::invalid_param(
                "stems",
                "expected a list of roles or \"drums,bass\"",
            ));
        }
    };
    words
        .iter()
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_lowercase();
            let singular = match w.as_str() {
                "drums" => "drum",
                "pads" => "pad",
                "leads" => "lead",
                other => other,
            };
            singular
                .parse::<Role>()
                .map_err(|e| RpcError::invalid_param("stems", e))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

pub async fn set(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["stems", "bpm", "key", "style"])?;
    let msg = DjSet {
        stems: stems(params)?,
        bpm: params.opt_f64("bpm")?,
        key: params.opt_str("key")?.map(str::to_owned),
        style: params.opt_str("style")?.map(str::to_owned),
    };
    let report = shared
        .director
        .ask(msg)
        .await
        .map_err(|e| ask_error("director", e, director_error))?;
    Ok(json!(report))
}

pub async fn reload(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let status = shared
        .director
        .ask(ReloadScript)
        .await
        .map_err(|e| ask_error("director", e, director_error))?;
    Ok(json!(status))
}

pub async fn status(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let status = shared
        .director
        .ask(GetScriptStatus)
        .await
        .map_err(|e| unavailable("director", e))?;
    Ok(json!(status))
}

pub async fn rate(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["score", "comment"])?;
    let score = params
        .opt_f64("score")?
        .ok_or_else(|| RpcError::invalid_param("score", "is required (1 to 5)"))?;
    let comment = match params.opt_str("comment")? {
        Some(c) if c.len() > 500 => {
            return Err(RpcError::invalid_param("comment", "is over 500 bytes"));
        }
        c => c.map(str::to_owned),
    };
    let report = shared
        .director
        .ask(Rate { score, comment })
        .await
        .map_err(|e| ask_error("director", e, director_error))?;
    Ok(json!(report))
}
