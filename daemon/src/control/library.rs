//! `library.*`: the loop library, built from a folder and searched.

use serde_json::{Value, json};

use super::unavailable;
use crate::Shared;
use crate::rpc::{Params, RpcError};
use djinn_actors::library::{self, LibraryStatus, Query, ReplaceEntries, Search};

/// `library.build`: analyses the audio under `dir` into the daemon's library, re-analysing
/// only what changed since the last build.
pub async fn build(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["dir"])?;
    let dir = params
        .opt_str("dir")?
        .ok_or_else(|| RpcError::invalid_param("dir", "is required"))?;
    let dir = super::media_path(shared, "dir", dir, crate::media::Kind::Folder)?;
    let output = crate::library_file(&shared.state_dir);
    let events = shared.health.events().clone();
    let _slot = shared
        .render_slots
        .acquire()
        .await
        .map_err(RpcError::internal)?;
    let jobs = super::render_jobs();
    let report = tokio::task::spawn_blocking(move || {
        let reported = std::sync::Mutex::new(0usize);
        library::build(
            &dir,
            &output,
            jobs,
            &|done, total| {
                let mut last = reported
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // A tenth at a time, and the end.
                if done == total || (done - *last) * 10 >= total.max(1) {
                    *last = done;
                    events.publish("library.progress", json!({ "done": done, "total": total }));
                }
            },
            &|skipped| {
                tracing::warn!(path = %skipped.path.display(), reason = %skipped.reason, "library: file skipped");
                events.publish(
                    "library.skipped",
                    json!({ "path": skipped.path, "reason": skipped.reason }),
                );
            },
        )
    })
    .await
    .map_err(RpcError::internal)?
    .map_err(|e| RpcError::invalid_param("dir", e.to_string()))?;
    let entries = shared
        .library
        .ask(ReplaceEntries(report.entries.clone()))
        .await
        .map_err(|e| unavailable("library", e))?;
    tracing::info!(file = %report.output.display(), entries, analysed = report.analysed, "loop library built");
    let mut result = json!(report);
    result["entries"] = json!(entries);
    Ok(result)
}

/// `library.search`: entries matching a tempo range, key, role and words.
pub async fn search(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["bpm", "key", "role", "text", "limit"])?;
    let query: Query =
        serde_path_to_error::deserialize(Value::Object(params.0.clone())).map_err(|e| {
            let field = e.path().to_string();
            RpcError::invalid_param(&field, e.into_inner().to_string())
        })?;
    query
        .validate()
        .map_err(|(field, message)| RpcError::invalid_param(field, message))?;
    let results = shared
        .library
        .ask(Search(query))
        .await
        .map_err(|e| unavailable("library", e))?;
    let info = shared
        .library
        .ask(LibraryStatus)
        .await
        .map_err(|e| unavailable("library", e))?;
    Ok(json!({ "results": results, "count": results.len(), "library": info }))
}
