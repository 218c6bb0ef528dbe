//! `profile.*`: list, get and set the style profile.

use serde_json::{Value, json};

use super::{ask_error, unavailable};
use crate::Shared;
use crate::rpc::{self, Params, RpcError};
use djinn_actors::audio::SetFx;
use djinn_actors::profiles::{GetProfile, ListProfiles, SetProfile, UnknownProfile};

fn not_found(e: UnknownProfile) -> RpcError {
    RpcError {
        code: rpc::NOT_FOUND,
        message: e.to_string(),
        data: Some(json!({ "field": "name" })),
    }
}

pub async fn list(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let list = shared
        .profiles
        .ask(ListProfiles)
        .await
        .map_err(|e| unavailable("profiles", e))?;
    Ok(json!(list))
}

pub async fn get(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["name"])?;
    let name = params.opt_str("name")?.map(str::to_owned);
    let profile = shared
        .profiles
        .ask(GetProfile { name })
        .await
        .map_err(|e| ask_error("profiles", e, not_found))?;
    Ok(json!(profile))
}

pub async fn set(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["name"])?;
    let name = params.str("name")?.to_owned();
    let profile = shared
        .profiles
        .ask(SetProfile { name })
        .await
        .map_err(|e| ask_error("profiles", e, not_found))?;
    // The style's effect defaults and loudness ceiling come with it.
    if let Err(e) = shared.audio.ask(SetFx(crate::master_fx(&profile))).await {
        tracing::debug!(error = %e, "profile effects not applied (audio is off)");
    }
    Ok(json!({
        "profile": profile.name,
        "tempo": profile.tempo.default,
        "meter": profile.meter,
        "key": profile.key.tonic,
        "scale": profile.key.scale,
    }))
}
