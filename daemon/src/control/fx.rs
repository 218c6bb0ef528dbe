//! `fx.*`: the master effects (reverb, delay, EQ, compressor, limiter).

use serde_json::{Value, json};

use super::{ask_error, unavailable};
use crate::Shared;
use crate::rpc::{Params, RpcError};
use djinn_actors::audio::{
    GetFx, GetLiveChain, GetPipe, LiveChainSettings, PipeCommand, SetFx, SetLiveChain, SetPipe,
};
use djinn_actors::generator::ChooseChain;
use djinn_actors::moods::ChainHints;
use djinn_engine::chain::ChainSettings;

/// Each setting with its range.
const FIELDS: [(&str, f64, f64); 14] = [
    ("reverb_size", 0.0, 1.0),
    ("reverb_damping", 0.0, 1.0),
    ("reverb_mix", 0.0, 1.0),
    ("delay_beats", 0.0, 16.0),
    ("delay_feedback", 0.0, 0.95),
    ("delay_mix", 0.0, 1.0),
    ("eq_low_db", -18.0, 18.0),
    ("eq_high_db", -18.0, 18.0),
    ("comp_threshold_db", -60.0, 0.0),
    ("comp_ratio", 1.0, 20.0),
    ("comp_attack_ms", 0.1, 500.0),
    ("comp_release_ms", 1.0, 5000.0),
    ("comp_makeup_db", 0.0, 24.0),
    ("limiter_ceiling_db", -12.0, 0.0),
];

/// The audio actor failed to answer, or refused for want of a driver.
fn audio_error<M>(e: kameo::error::SendError<M, djinn_actors::audio::AudioError>) -> RpcError {
    ask_error("audio", e, |e| {
        RpcError::new(crate::rpc::UNAVAILABLE, e.to_string())
    })
}

pub async fn get(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let fx = shared
        .audio
        .ask(GetFx)
        .await
        .map_err(|e| unavailable("audio", e))?;
    Ok(json!(fx.0))
}

pub async fn set(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    let names: Vec<&str> = FIELDS.iter().map(|(name, _, _)| *name).collect();
    params.only(&names)?;
    if params.0.is_empty() {
        return Err(RpcError::invalid_param(
            "params",
            format!("give at least one of {}", names.join(", ")),
        ));
    }
    let current = shared
        .audio
        .ask(GetFx)
        .await
        .map_err(|e| unavailable("audio", e))?
        .0;
    let mut merged = json!(current);
    for (name, lo, hi) in FIELDS {
        if let Some(v) = params.opt_f64(name)? {
            if !(lo..=hi).contains(&v) {
                return Err(RpcError::invalid_param(
                    name,
                    format!("{v} is out of range {lo} to {hi}"),
                ));
            }
            merged[name] = json!(v);
        }
    }
    let fx = serde_json::from_value(merged).map_err(RpcError::internal)?;
    let fx = shared.audio.ask(SetFx(fx)).await.map_err(audio_error)?;
    shared
        .health
        .events()
        .publish("fx", json!({ "kind": "changed", "fx": fx.0 }));
    Ok(json!(fx.0))
}

/// The chain settings `fx.chain.set` takes one by one.
const CHAIN_FIELDS: [&str; 8] = [
    "tilt_db",
    "low_cut_hz",
    "low_db",
    "high_db",
    "drive",
    "compress",
    "width",
    "ceiling_dbtp",
];

pub async fn chain_get(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let live = shared
        .audio
        .ask(GetLiveChain)
        .await
        .map_err(|e| unavailable("audio", e))?;
    Ok(json!(live))
}

/// `fx.chain.set`: the live effect chain on the JACK inputs, from a prompt (through the
/// render script), settings one by one over it (or over the chain in force), and `on`.
pub async fn chain_set(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    let mut known = vec!["prompt", "on"];
    known.extend(CHAIN_FIELDS);
    params.only(&known)?;
    let current = shared
        .audio
        .ask(GetLiveChain)
        .await
        .map_err(|e| unavailable("audio", e))?;
    let (mut settings, words, unknown) = match params.opt_str("prompt")? {
        Some(prompt) => {
            let choice = shared
                .generator
                .ask(ChooseChain {
                    prompt: prompt.to_owned(),
                    hints: ChainHints::default(),
                })
                .await
                .map_err(|e| {
                    ask_error("generator", e, |e| {
                        RpcError::internal(format!("the render script failed: {e}"))
                    })
                })?;
            (json!(choice.settings), choice.words, choice.unknown)
        }
        None => (json!(current.settings), Vec::new(), Vec::new()),
    };
    for name in CHAIN_FIELDS {
        if let Some(v) = params.opt_f64(name)? {
            settings[name] = json!(v);
        }
    }
    // A loudness target needs the whole piece; live, the limiter's ceiling is what holds.
    settings["target_lufs"] = Value::Null;
    let settings: ChainSettings = serde_json::from_value(settings).map_err(RpcError::internal)?;
    settings
        .validate()
        .map_err(|e| RpcError::invalid_param(e.field, e.message))?;
    let on = params.opt_bool("on")?.unwrap_or(true);
    let live = shared
        .audio
        .ask(SetLiveChain(LiveChainSettings { settings, on }))
        .await
        .map_err(audio_error)?;
    shared
        .health
        .events()
        .publish("fx", json!({ "kind": "chain", "chain": live }));
    let mut result = json!(live);
    result["words"] = json!(words);
    result["unknown"] = json!(unknown);
    Ok(result)
}

/// The names of the allow-listed pipe commands.
fn available(shared: &Shared) -> Vec<String> {
    shared.config().pipe.commands.into_keys().collect()
}

pub async fn pipe_get(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let pipe = shared
        .audio
        .ask(GetPipe)
        .await
        .map_err(|e| unavailable("audio", e))?;
    let mut result = json!(pipe);
    result["available"] = json!(available(shared));
    Ok(result)
}

/// `fx.pipe.set`: pipe mode on with the allow-listed command `name`, or off (`name: null`).
/// Clients never send a command line: whoever can reach the socket could run anything as
/// djinnd's user.
pub async fn pipe_set(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    if params.0.contains_key("command") {
        return Err(RpcError::invalid_param(
            "command",
            "command lines are not taken from clients: give the name of one of the commands \
             the operator allows in [pipe.commands] in the configuration (fx.pipe.get lists \
             them)",
        ));
    }
    params.only(&["name"])?;
    let commands = shared.config().pipe.commands;
    let command = match params.0.get("name") {
        Some(Value::Null) => None,
        Some(Value::String(name)) => match commands.get(name) {
            Some(line) => Some(PipeCommand {
                name: name.clone(),
                line: line.clone(),
            }),
            None => {
                let known: Vec<&str> = commands.keys().map(String::as_str).collect();
                return Err(RpcError {
                    code: crate::rpc::NOT_FOUND,
                    message: format!(
                        "name: no pipe command {name:?} in [pipe.commands]; allowed: {}",
                        if known.is_empty() {
                            "none (the operator has configured none)".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                    data: Some(json!({ "field": "name" })),
                });
            }
        },
        Some(_) => {
            return Err(RpcError::invalid_param(
                "name",
                "expected the name of a command in [pipe.commands], or null to turn pipe mode off",
            ));
        }
        None => return Err(RpcError::invalid_param("name", "is required")),
    };
    if let Some(command) = &command {
        tracing::info!(name = %command.name, "pipe command chosen");
    }
    let pipe = shared
        .audio
        .ask(SetPipe(command))
        .await
        .map_err(audio_error)?;
    shared.health.events().publish(
        "pipe",
        json!({ "kind": if pipe.command.is_some() { "on" } else { "off" }, "name": pipe.name }),
    );
    let mut result = json!(pipe);
    result["available"] = json!(available(shared));
    Ok(result)
}
