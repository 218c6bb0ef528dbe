//! `fx.*`: the master effects (reverb, delay, EQ, compressor, limiter).

use serde_json::{Value, json};

use super::{ask_error, unavailable};
use crate::Shared;
use crate::rpc::{Params, RpcError};
use djinn_actors::audio::{GetFx, SetFx};

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
    let fx = shared.audio.ask(SetFx(fx)).await.map_err(|e| {
        ask_error("audio", e, |e| {
            RpcError::new(crate::rpc::UNAVAILABLE, e.to_string())
        })
    })?;
    shared
        .health
        .events()
        .publish("fx", json!({ "kind": "changed", "fx": fx.0 }));
    Ok(json!(fx.0))
}
