//! `transport.*`: tempo, meter, key and scale.

use serde_json::{Value, json};

use super::{ask_error, unavailable};
use crate::Shared;
use crate::rpc::{Params, RpcError};
use djinn_actors::audio::SetRolling;
use djinn_actors::transport::{GetTransport, SetTransport};
use djinn_engine::music::{Meter, Scale};
use djinn_engine::transport::{Transport, TransportChange};

/// The transport as the protocol shows it.
pub fn describe(t: &Transport) -> Value {
    json!({
        "tempo": t.tempo,
        "meter": t.meter,
        "key": t.key.tonic,
        "scale": t.key.scale,
        "rolling": t.rolling,
        "sample_rate": t.sample_rate,
        "position": t.position(),
    })
}

pub async fn get(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let snapshot = shared
        .transport
        .ask(GetTransport)
        .await
        .map_err(|e| unavailable("transport", e))?;
    Ok(describe(&snapshot.0))
}

pub async fn set(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["tempo", "meter", "key", "scale"])?;
    let meter = params
        .opt_str("meter")?
        .map(|m| m.parse::<Meter>())
        .transpose()
        .map_err(|e| RpcError::invalid_param("meter", e))?;
    let scale = params
        .opt_str("scale")?
        .map(|s| s.parse::<Scale>())
        .transpose()
        .map_err(|e| RpcError::invalid_param("scale", e))?;
    let change = TransportChange {
        tempo: params.opt_f64("tempo")?,
        meter,
        key: params.opt_str("key")?.map(str::to_owned),
        scale,
    };
    if change == TransportChange::default() {
        return Err(RpcError::invalid_param(
            "params",
            "give at least one of tempo, meter, key, scale",
        ));
    }
    let source = "transport.set".to_owned();
    let transport = shared
        .transport
        .ask(SetTransport { change, source })
        .await
        .map_err(|e| ask_error("transport", e, |e| RpcError::invalid_param(e.field(), e)))?;
    Ok(describe(&transport))
}

/// `transport.start` and `transport.stop`.
pub async fn roll(shared: &Shared, params: &Params, rolling: bool) -> Result<Value, RpcError> {
    params.only(&[])?;
    shared.audio.ask(SetRolling(rolling)).await.map_err(|e| {
        ask_error("audio", e, |e| {
            RpcError::new(crate::rpc::UNAVAILABLE, e.to_string())
        })
    })?;
    Ok(json!({ "rolling": rolling }))
}
