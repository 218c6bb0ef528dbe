//! `render.*` and `quality.assess`: one sound from a preset, and the verdict on any audio.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{Reply, payload_channels, payload_frames, payload_rate, session_rate, unavailable};
use crate::Shared;
use crate::offline::RenderFileError;
use crate::rpc::{Params, RpcError};
use djinn_actors::generator::{ChooseChain, GetGeneratorStatus, GetPreset, ListPresets};
use djinn_actors::moods::ChainHints;
use djinn_actors::profiles::GetProfile;
use djinn_engine::analysis::quality::{self, Target};
use djinn_engine::music::{Key, Meter, PitchClass, Scale};
use djinn_engine::synth::preset::{Preset, RenderContext, render_preset};

/// `render.file`: a file through the chain a prompt describes, written to the files area.
pub async fn file(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["path", "prompt", "backend", "hints", "name"])?;
    let input = params
        .opt_str("path")?
        .ok_or_else(|| RpcError::invalid_param("path", "is required"))?;
    let input = super::media_path(shared, "path", input, crate::media::Kind::File)?;
    let prompt = params
        .opt_str("prompt")?
        .ok_or_else(|| RpcError::invalid_param("prompt", "is required"))?
        .to_owned();
    if prompt.len() > 2000 {
        return Err(RpcError::invalid_param("prompt", "is over 2000 bytes"));
    }
    let backend = params.opt_str("backend")?.unwrap_or("local").to_owned();
    crate::offline::render_backend(&backend).map_err(|e| RpcError::invalid_param("backend", e))?;
    let hints = match params.0.get("hints") {
        Some(v) => ChainHints::from_value(v).map_err(|e| RpcError::invalid_param("hints", e))?,
        None => ChainHints::default(),
    };
    let stem = input
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .chars()
                .take(80)
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "audio".into());
    let name =
        super::generate::output_name(params, format!("{stem}-rendered.wav"), &["wav", "flac"])?;
    let output = super::generate::files_dir(shared)?.join(&name);
    let choice = shared
        .generator
        .ask(ChooseChain {
            prompt: prompt.clone(),
            hints,
        })
        .await
        .map_err(|e| {
            super::ask_error("generator", e, |e| {
                RpcError::internal(format!("the render script failed: {e}"))
            })
        })?;
    let status = shared
        .generator
        .ask(GetGeneratorStatus)
        .await
        .map_err(|e| unavailable("generator", e))?;
    let events = shared.health.events().clone();
    let job = name.clone();
    let _slot = shared
        .render_slots
        .acquire()
        .await
        .map_err(RpcError::internal)?;
    let (input_shown, output_done) = (input.clone(), output.clone());
    let report = tokio::task::spawn_blocking(move || {
        let mut reported = 0.0;
        crate::offline::render_file(
            &input,
            &output,
            &choice,
            &backend,
            &status.render_script,
            &mut |done| {
                if done - reported >= 0.1 || done >= 1.0 {
                    reported = done;
                    events.publish("render.progress", json!({ "job": job, "fraction": done }));
                }
            },
        )
        .map_err(|e| match e {
            RenderFileError::Input(e) => RpcError::invalid_param("path", e),
            other => RpcError::internal(other),
        })
    })
    .await
    .map_err(RpcError::internal)??;
    shared.health.events().publish(
        "files",
        json!({ "kind": "created", "path": output_done, "frames": report["frames"] }),
    );
    tracing::info!(input = %input_shown.display(), file = %output_done.display(), "file rendered");
    Ok(report)
}

pub async fn presets(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let list = shared
        .generator
        .ask(ListPresets)
        .await
        .map_err(|e| unavailable("generator", e))?;
    Ok(json!(list))
}

async fn preset(shared: &Shared, params: &Params) -> Result<Preset, RpcError> {
    match params.0.get("preset") {
        Some(Value::String(name)) => shared
            .generator
            .ask(GetPreset { name: name.clone() })
            .await
            .map_err(|e| unavailable("generator", e))?
            .ok_or_else(|| RpcError {
                code: crate::rpc::NOT_FOUND,
                message: format!("no preset named {name:?}; render.presets lists them"),
                data: Some(json!({ "field": "preset" })),
            }),
        Some(object @ Value::Object(_)) => {
            let preset: Preset = serde_path_to_error::deserialize(object).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "preset".to_owned()
                } else {
                    format!("preset.{path}")
                };
                let message = e.into_inner().to_string();
                RpcError::invalid_param(&field, message)
            })?;
            preset
                .validate()
                .map_err(|e| RpcError::invalid_param(&format!("preset.{}", e.field), e.message))?;
            Ok(preset)
        }
        Some(_) => Err(RpcError::invalid_param(
            "preset",
            "expected a preset object or the name of a shipped preset",
        )),
        None => Err(RpcError::invalid_param("preset", "is required")),
    }
}

/// The musical context: the transport's, with what `context` overrides.
fn context(shared: &Shared, params: &Params) -> Result<RenderContext, RpcError> {
    let transport = shared.transport_watch.borrow().clone();
    let mut ctx = RenderContext {
        tempo: transport.tempo,
        key: transport.key,
        meter: transport.meter,
    };
    let Some(given) = params.0.get("context") else {
        return Ok(ctx);
    };
    let Value::Object(map) = given else {
        return Err(RpcError::invalid_param("context", "expected an object"));
    };
    let inner = Params(map.clone());
    inner
        .only(&["tempo", "key", "scale", "time_signature"])
        .map_err(|e| prefix(e, "context"))?;
    if let Some(t) = inner.opt_f64("tempo").map_err(|e| prefix(e, "context"))? {
        if !(20.0..=300.0).contains(&t) {
            return Err(RpcError::invalid_param(
                "context.tempo",
                format!("{t} is outside 20–300 BPM"),
            ));
        }
        ctx.tempo = t;
    }
    if let Some(k) = inner.opt_f64("key").map_err(|e| prefix(e, "context"))? {
        if k.fract() != 0.0 || !(0.0..=11.0).contains(&k) {
            return Err(RpcError::invalid_param(
                "context.key",
                "expected a pitch class 0 (C) to 11 (B)",
            ));
        }
        ctx.key = Key::new(PitchClass::new(k as i32), ctx.key.scale);
    }
    if let Some(s) = inner.opt_str("scale").map_err(|e| prefix(e, "context"))? {
        let scale: Scale = s
            .parse()
            .map_err(|e| RpcError::invalid_param("context.scale", e))?;
        ctx.key = Key::new(ctx.key.tonic, scale);
    }
    match map.get("time_signature") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            ctx.meter = s
                .parse::<Meter>()
                .map_err(|e| RpcError::invalid_param("context.time_signature", e))?;
        }
        Some(Value::Array(a)) if a.len() == 2 => {
            let n = a[0].as_u64().unwrap_or(0);
            let d = a[1].as_u64().unwrap_or(0);
            ctx.meter = u8::try_from(n)
                .ok()
                .zip(u8::try_from(d).ok())
                .and_then(|(n, d)| Meter::new(n, d))
                .ok_or_else(|| {
                    RpcError::invalid_param(
                        "context.time_signature",
                        "expected [beats, unit] like [4, 4]",
                    )
                })?;
        }
        Some(_) => {
            return Err(RpcError::invalid_param(
                "context.time_signature",
                "expected \"4/4\" or [4, 4]",
            ));
        }
    }
    Ok(ctx)
}

fn prefix(mut e: RpcError, outer: &str) -> RpcError {
    if let Some(data) = e.data.as_mut()
        && let Some(Value::String(field)) = data.get_mut("field")
    {
        *field = format!("{outer}.{field}");
    }
    e
}

pub async fn audio(shared: &Shared, params: &Params) -> Result<Reply, RpcError> {
    params.only(&["preset", "context", "duration"])?;
    let preset = preset(shared, params).await?;
    let ctx = context(shared, params)?;
    let duration = params
        .opt_f64("duration")?
        .ok_or_else(|| RpcError::invalid_param("duration", "is required (seconds)"))?;
    let profile = shared
        .profiles
        .ask(GetProfile { name: None })
        .await
        .map_err(|e| unavailable("profiles", e))?;
    let rate = session_rate(shared).await?;
    let rendered = {
        let _slot = shared
            .render_slots
            .acquire()
            .await
            .map_err(RpcError::internal)?;
        let preset = preset.clone();
        let (target, ceiling) = (
            profile.loudness.target_lufs,
            profile.loudness.true_peak_dbtp,
        );
        tokio::task::spawn_blocking(move || {
            render_preset(&preset, ctx, duration, target, ceiling, rate)
        })
        .await
        .map_err(RpcError::internal)?
        .map_err(|e| {
            let field = if e.field == "duration" || e.field.starts_with("context.") {
                e.field
            } else {
                format!("preset.{}", e.field)
            };
            RpcError::invalid_param(&field, e.message)
        })?
    };
    let mut bytes = Vec::with_capacity(rendered.frames.len() * 8);
    for f in &rendered.frames {
        bytes.extend_from_slice(&f[0].to_le_bytes());
        bytes.extend_from_slice(&f[1].to_le_bytes());
    }
    Ok(Reply {
        result: json!({
            "preset": preset.name,
            "role": preset.role,
            "sample_rate": rate,
            "channels": 2,
            "frames": rendered.frames.len(),
            "duration": rendered.frames.len() as f64 / f64::from(rate),
            "format": "f32le interleaved, in the next frame",
            "context": {
                "tempo": ctx.tempo,
                "key": ctx.key.tonic.semitones(),
                "scale": ctx.key.scale,
                "time_signature": ctx.meter,
            },
            "loudness": rendered.loudness,
            "mastering": rendered.mastering,
        }),
        payload: vec![Bytes::from(bytes)],
    })
}

pub async fn assess(
    shared: &Shared,
    params: &Params,
    payload: &[Bytes],
) -> Result<Value, RpcError> {
    params.only(&["path", "channels", "rate", "role", "context"])?;
    let role = params
        .opt_str("role")?
        .map(|r| {
            r.parse::<djinn_engine::synth::Role>()
                .map_err(|e| RpcError::invalid_param("role", e))
        })
        .transpose()?;
    let profile = shared
        .profiles
        .ask(GetProfile { name: None })
        .await
        .map_err(|e| unavailable("profiles", e))?;
    let mut target = Target {
        lufs: profile.loudness.target_lufs,
        ceiling_dbtp: profile.loudness.true_peak_dbtp,
    };
    if let Some(ctx) = params.0.get("context") {
        let Value::Object(map) = ctx else {
            return Err(RpcError::invalid_param("context", "expected an object"));
        };
        let inner = Params(map.clone());
        inner
            .only(&[
                "target_lufs",
                "true_peak_limit",
                "tempo",
                "key",
                "scale",
                "time_signature",
            ])
            .map_err(|e| prefix(e, "context"))?;
        if let Some(t) = inner
            .opt_f64("target_lufs")
            .map_err(|e| prefix(e, "context"))?
        {
            target.lufs = t;
        }
        if let Some(c) = inner
            .opt_f64("true_peak_limit")
            .map_err(|e| prefix(e, "context"))?
        {
            target.ceiling_dbtp = c;
        }
    }
    let (frames, rate, source) = match (params.opt_str("path")?, payload.is_empty()) {
        (Some(path), true) => {
            let path = super::media_path(shared, "path", path, crate::media::Kind::File)?;
            let shown = path.display().to_string();
            let decoded = tokio::task::spawn_blocking(move || djinn_engine::decode::read(&path))
                .await
                .map_err(RpcError::internal)?
                .map_err(|e| RpcError::invalid_param("path", e))?;
            (decoded.frames, decoded.sample_rate, shown)
        }
        (None, false) => {
            let channels = payload_channels(params)?;
            let rate = payload_rate(params)?
                .ok_or_else(|| RpcError::invalid_param("rate", "is required with a payload"))?;
            let frames = payload_frames(payload, channels)?;
            let shown = format!("{} frames at {rate} Hz", frames.len());
            (frames, rate, shown)
        }
        _ => {
            return Err(RpcError::invalid_param(
                "path",
                "give exactly one source: path, or interleaved f32 frames in a second frame",
            ));
        }
    };
    let assessment = tokio::task::spawn_blocking(move || quality::assess(&frames, rate, target))
        .await
        .map_err(RpcError::internal)?
        .map_err(|e| RpcError::invalid_param("rate", e))?;
    let mut result = json!(assessment);
    result["source"] = json!(source);
    result["role"] = json!(role);
    result["target"] = json!({ "lufs": target.lufs, "true_peak_limit": target.ceiling_dbtp });
    Ok(result)
}
