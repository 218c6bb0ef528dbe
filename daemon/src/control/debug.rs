//! `debug.*`: fault injection, answered only when `[debug] fault_injection = true`.

use serde_json::{Value, json};

use super::unavailable;
use crate::Shared;
use crate::rpc::{Params, RpcError};
use djinn_actors::InjectPanic;

/// Makes one actor panic, to show that its supervisor restarts it.
pub async fn panic(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["actor"])?;
    let actor = params.str("actor")?;
    tracing::warn!(actor, "fault injection: making an actor panic");
    // The ask fails by design: the handler panics instead of replying.
    let outcome = match actor {
        "transport" => shared
            .transport
            .ask(InjectPanic)
            .await
            .map_err(|e| e.to_string()),
        "profiles" => shared
            .profiles
            .ask(InjectPanic)
            .await
            .map_err(|e| e.to_string()),
        other => {
            return Err(RpcError::invalid_param(
                "actor",
                format!("no actor named {other:?}; expected transport, profiles or audio"),
            ));
        }
    };
    match outcome {
        Ok(()) => Err(unavailable(actor, "it did not panic")),
        Err(error) => Ok(json!({ "actor": actor, "panicked": true, "error": error })),
    }
}
