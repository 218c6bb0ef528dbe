//! `generate.*`: loops for the mix and whole songs, from a prompt or the active style.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{ask_error, session_rate, unavailable};
use crate::Shared;
use crate::rpc::{self, Params, RpcError};
use djinn_actors::generator::{Interpret, StoreBuffer, StoredBuffer};
use djinn_actors::moods::{Interpretation, MoodError};
use djinn_actors::profiles::{ProfileSnapshot, SnapshotProfiles};
use djinn_engine::profile::Profile;
use djinn_engine::synth::render::{MAX_LOOP_BARS, SONG_SECONDS};
use djinn_engine::synth::{Recipe, Role, render_loop, render_song};

/// Longest prompt accepted, in bytes.
const MAX_PROMPT: usize = 2000;

fn mood_error(e: MoodError) -> RpcError {
    RpcError::internal(format!("the mood script failed: {e}"))
}

pub(super) fn seed(params: &Params) -> Result<u64, RpcError> {
    match params.opt_f64("seed")? {
        Some(s) if s >= 0.0 && s.fract() == 0.0 && s <= 9_007_199_254_740_991.0 => Ok(s as u64),
        Some(_) => Err(RpcError::invalid_param(
            "seed",
            "expected a whole number from 0 to 2^53 - 1",
        )),
        // No seed asked for: a fresh one, reported back so the result can be redone.
        None => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 & 0x001f_ffff_ffff_ffff)
            .unwrap_or(1)),
    }
}

async fn snapshot(shared: &Shared, profile: Option<&str>) -> Result<ProfileSnapshot, RpcError> {
    let mut snapshot = shared
        .profiles
        .ask(SnapshotProfiles)
        .await
        .map_err(|e| unavailable("profiles", e))?;
    if let Some(name) = profile {
        snapshot.active = snapshot.set.get(name).cloned().ok_or_else(|| RpcError {
            code: rpc::NOT_FOUND,
            message: format!("no profile named {name:?}"),
            data: Some(json!({ "field": "profile" })),
        })?;
    }
    Ok(snapshot)
}

/// What a prompt (or, without one, the style) asks for, and the profile of the style it
/// chose.
pub(super) async fn interpret(
    shared: &Shared,
    prompt: Option<&str>,
    profile: Option<&str>,
) -> Result<(Interpretation, Profile), RpcError> {
    let snapshot = snapshot(shared, profile).await?;
    let set = snapshot.set.clone();
    let interpretation = match prompt {
        Some(p) if p.len() > MAX_PROMPT => {
            return Err(RpcError::invalid_param(
                "prompt",
                format!("is {} bytes; the limit is {MAX_PROMPT}", p.len()),
            ));
        }
        Some(p) => shared
            .generator
            .ask(Interpret {
                prompt: p.to_owned(),
                profile: snapshot.active,
                profiles: snapshot.set,
            })
            .await
            .map_err(|e| ask_error("generator", e, mood_error))?,
        None => Interpretation {
            prompt: String::new(),
            style: snapshot.active.name.clone(),
            recipe: Recipe::from_profile(&snapshot.active),
            mood: Vec::new(),
            unknown: Vec::new(),
        },
    };
    // NOTE: the mood script only names styles it found in this same set.
    let style = set
        .get(&interpretation.style)
        .cloned()
        .ok_or_else(|| RpcError::internal(format!("style {:?} vanished", interpretation.style)))?;
    Ok((interpretation, style))
}

fn role(params: &Params) -> Result<Option<Role>, RpcError> {
    params
        .opt_str("role")?
        .map(|r| {
            r.parse::<Role>()
                .map_err(|e| RpcError::invalid_param("role", e))
        })
        .transpose()
}

/// The files area, created on first use.
pub(super) fn files_dir(shared: &Shared) -> Result<PathBuf, RpcError> {
    let dir = shared.state_dir.join("files");
    std::fs::create_dir_all(&dir)
        .map_err(|e| RpcError::internal(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// A file name for the files area: letters, digits, `-`, `_` and `.`, ending in `.wav`.
fn file_name(params: &Params, default: String) -> Result<String, RpcError> {
    output_name(params, default, &["wav"])
}

/// The `name` param (or `default`) as a plain file name for the files area, ending in one
/// of `extensions` (the first when it has none of them).
pub(super) fn output_name(
    params: &Params,
    default: String,
    extensions: &[&str],
) -> Result<String, RpcError> {
    let name = params
        .opt_str("name")?
        .map(str::to_owned)
        .unwrap_or(default);
    let (stem, ext) = extensions
        .iter()
        .find_map(|e| name.strip_suffix(&format!(".{e}")).map(|s| (s, *e)))
        .unwrap_or((&name, extensions[0]));
    let ok = !stem.is_empty()
        && stem.len() <= 100
        && !stem.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(RpcError::invalid_param(
            "name",
            "expected a plain file name of letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(format!("{stem}.{ext}"))
}

/// Writes a loop or song made from `recipe` as WAV, with its tempo, length in beats, meter
/// and tonic for the hosts that read them (and djinn's library).
async fn write_wav(
    path: &Path,
    frames: Arc<[[f32; 2]]>,
    rate: u32,
    recipe: &Recipe,
) -> Result<(), RpcError> {
    let path = path.to_owned();
    let info = recipe.loop_info(frames.len() as f64 / f64::from(rate));
    tokio::task::spawn_blocking(move || {
        djinn_engine::wav::write_with(&path, &frames, rate, Some(&info))
    })
    .await
    .map_err(RpcError::internal)?
    .map_err(RpcError::internal)
}

pub async fn generate_loop(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["prompt", "role", "bars", "seed", "save"])?;
    let bars = match params.opt_f64("bars")? {
        None => 4,
        Some(b) if b.fract() == 0.0 && (1.0..=f64::from(MAX_LOOP_BARS)).contains(&b) => b as u32,
        Some(_) => {
            return Err(RpcError::invalid_param(
                "bars",
                format!("expected a whole number of bars from 1 to {MAX_LOOP_BARS}"),
            ));
        }
    };
    let seed = seed(params)?;
    let role = role(params)?;
    let save = params.opt_bool("save")?.unwrap_or(false);
    let (interpretation, _) = interpret(shared, params.opt_str("prompt")?, None).await?;
    let mut recipe = interpretation.recipe.clone();
    // A loop joins the mix: it plays at the transport's tempo, in its meter and key.
    let transport = shared.transport_watch.borrow().clone();
    recipe.tempo = transport.tempo;
    recipe.meter = transport.meter;
    recipe.key = transport.key;
    if let Some(role) = role {
        recipe = recipe.only(role);
    }
    let rate = session_rate(shared).await?;
    let started = Instant::now();
    let rendered = {
        let _slot = shared
            .render_slots
            .acquire()
            .await
            .map_err(RpcError::internal)?;
        let recipe = recipe.clone();
        tokio::task::spawn_blocking(move || render_loop(&recipe, bars, seed, rate))
            .await
            .map_err(RpcError::internal)?
            .map_err(|e| RpcError::invalid_param("bars", e))?
    };
    let render_ms = started.elapsed().as_secs_f64() * 1000.0;
    let frames: Arc<[[f32; 2]]> = rendered.frames.into();
    let seconds = frames.len() as f64 / f64::from(rate);
    let single = (recipe.parts.len() == 1).then(|| recipe.parts[0].role());
    let id = shared
        .generator
        .ask(StoreBuffer {
            buffer: StoredBuffer {
                frames: frames.clone(),
                sample_rate: rate,
                role: single,
                description: interpretation.prompt.clone(),
            },
        })
        .await
        .map_err(|e| unavailable("generator", e))?;
    let file = if save {
        let path = files_dir(shared)?.join(format!("{id}.wav"));
        write_wav(&path, frames.clone(), rate, &recipe).await?;
        shared.health.events().publish(
            "files",
            json!({ "kind": "created", "path": path, "seconds": seconds }),
        );
        Some(path)
    } else {
        None
    };
    tracing::info!(buffer = %id, bars, seed, render_ms, "loop generated");
    let result = json!({
        "buffer": id,
        "bars": bars,
        "frames": frames.len(),
        "seconds": seconds,
        "sample_rate": rate,
        "seed": seed,
        "role": single,
        "style": interpretation.style,
        "recipe": recipe,
        "mood": interpretation.mood,
        "unknown": interpretation.unknown,
        "loudness": rendered.loudness,
        "mastering": rendered.mastering,
        "file": file,
        "render_ms": render_ms,
    });
    shared.health.events().publish(
        "generate",
        json!({ "kind": "loop", "buffer": result["buffer"], "bars": bars, "seed": seed }),
    );
    Ok(result)
}

pub async fn generate_song(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["prompt", "seconds", "seed", "profile", "name"])?;
    let seconds = match params.opt_f64("seconds")? {
        Some(s) if SONG_SECONDS.contains(&s) => s,
        Some(s) => {
            return Err(RpcError::invalid_param(
                "seconds",
                format!("{s} is outside 10 to 3600"),
            ));
        }
        None => return Err(RpcError::invalid_param("seconds", "is required")),
    };
    let seed = seed(params)?;
    let (interpretation, style) = interpret(
        shared,
        params.opt_str("prompt")?,
        params.opt_str("profile")?,
    )
    .await?;
    let phrase_bars = style.phrase_bars;
    let name = file_name(params, format!("song-{}-{seed}", interpretation.style))?;
    let path = files_dir(shared)?.join(&name);
    let rate = session_rate(shared).await?;
    let recipe = interpretation.recipe.clone();
    let job = name.trim_end_matches(".wav").to_owned();
    let events = shared.health.events().clone();
    let started = Instant::now();
    let rendered = {
        let _slot = shared
            .render_slots
            .acquire()
            .await
            .map_err(RpcError::internal)?;
        let recipe = recipe.clone();
        let job = job.clone();
        tokio::task::spawn_blocking(move || {
            let mut reported = 0.0;
            render_song(&recipe, seconds, phrase_bars, seed, rate, &mut |done| {
                if done - reported >= 0.1 || done >= 1.0 {
                    reported = done;
                    events.publish("generate.progress", json!({ "job": job, "fraction": done }));
                }
            })
        })
        .await
        .map_err(RpcError::internal)?
        .map_err(|e| RpcError::invalid_param("seconds", e))?
    };
    let render_ms = started.elapsed().as_secs_f64() * 1000.0;
    let frames: Arc<[[f32; 2]]> = rendered.frames.into();
    write_wav(&path, frames.clone(), rate, &recipe).await?;
    shared.health.events().publish(
        "files",
        json!({ "kind": "created", "path": path, "seconds": seconds }),
    );
    tracing::info!(file = %path.display(), seconds, seed, render_ms, "song generated");
    Ok(json!({
        "file": path,
        "seconds": frames.len() as f64 / f64::from(rate),
        "frames": frames.len(),
        "sample_rate": rate,
        "seed": seed,
        "style": interpretation.style,
        "recipe": recipe,
        "mood": interpretation.mood,
        "unknown": interpretation.unknown,
        "sections": rendered.sections,
        "loudness": rendered.loudness,
        "mastering": rendered.mastering,
        "render_ms": render_ms,
    }))
}
