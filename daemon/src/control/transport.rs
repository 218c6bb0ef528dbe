//! `transport.*`: tempo, meter, key and scale.

use serde_json::{Value, json};

use super::{ask_error, unavailable};
use crate::Shared;
use crate::rpc::{Params, RpcError};
use djinn_actors::audio::{RampTempo, SetClock, SetRolling};
use djinn_actors::transport::{GetTransport, SetTransport};
use djinn_engine::mix::ClockSource;
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
    params.only(&[
        "tempo",
        "meter",
        "key",
        "scale",
        "ramp_beats",
        "source",
        "master_clock",
    ])?;
    let clock = clock_change(params)?;
    let ramp_beats = params.opt_f64("ramp_beats")?;
    if let Some(beats) = ramp_beats
        && !(0.0..=64.0).contains(&beats)
    {
        return Err(RpcError::invalid_param(
            "ramp_beats",
            "a tempo ramp lasts 0 to 64 beats",
        ));
    }
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
    let clock_changes = clock.source.is_some() || clock.master.is_some();
    if change == TransportChange::default() && !clock_changes {
        return Err(RpcError::invalid_param(
            "params",
            "give at least one of tempo, meter, key, scale, source, master_clock",
        ));
    }
    if clock_changes {
        shared
            .audio
            .ask(clock)
            .await
            .map_err(|e| unavailable("audio", e))?;
    }
    let mut transport = if change == TransportChange::default() {
        shared
            .transport
            .ask(GetTransport)
            .await
            .map_err(|e| unavailable("transport", e))?
            .0
    } else {
        if let (Some(tempo), Some(beats)) = (change.tempo, ramp_beats.filter(|b| *b > 0.0))
            && djinn_engine::transport::TEMPO_RANGE.contains(&tempo)
        {
            // The mixer starts gliding first; the transport actor's new tempo then reaches
            // it as the glide's own target and leaves the glide alone.
            let _ = shared.audio.ask(RampTempo { tempo, beats }).await;
        }
        let source = "transport.set".to_owned();
        shared
            .transport
            .ask(SetTransport { change, source })
            .await
            .map_err(|e| ask_error("transport", e, |e| RpcError::invalid_param(e.field(), e)))?
    };
    let clock = shared
        .audio
        .ask(djinn_actors::audio::AudioStatus)
        .await
        .map_err(|e| unavailable("audio", e))?
        .clock;
    transport.tempo = if clock.lock == djinn_engine::clock::LockState::Idle {
        transport.tempo
    } else {
        clock.tempo
    };
    let mut reply = describe(&transport);
    reply["clock"] = serde_json::to_value(&clock).unwrap_or(Value::Null);
    Ok(reply)
}

/// The `source` and `master_clock` params of `transport.set`.
fn clock_change(params: &Params) -> Result<SetClock, RpcError> {
    let source = match params.opt_str("source")? {
        None => None,
        Some("internal") => Some(ClockSource::Internal),
        Some("midi") => Some(ClockSource::Midi),
        Some("jack") => Some(ClockSource::Jack),
        Some(other) => {
            return Err(RpcError::invalid_param(
                "source",
                format!("unknown source {other:?}: expected internal, midi or jack"),
            ));
        }
    };
    let master = match params.0.get("master_clock") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(on)) => Some(*on),
        Some(Value::String(text)) if text == "on" => Some(true),
        Some(Value::String(text)) if text == "off" => Some(false),
        Some(other) => {
            return Err(RpcError::invalid_param(
                "master_clock",
                format!("{other} is not a switch: expected on, off, true or false"),
            ));
        }
    };
    Ok(SetClock { source, master })
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
