//! `layer.*`: add, replace, remove, list and set layers of the mix.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::{ask_error, payload_audio, payload_channels, payload_rate, session_rate, unavailable};
use crate::Shared;
use crate::rpc::{self, Params, RpcError};
use djinn_actors::audio::memory::FRAME_BYTES;
use djinn_actors::audio::{
    AddLayer, AudioError, LayerLimitError, LayerMemory, LayerPatch, ListLayers, NonFiniteZeroed,
    RemoveLayer, ReplaceLayer, Reservation, SetLayer,
};
use djinn_actors::generator::GetBuffer;
use djinn_actors::profiles::GetProfile;
use djinn_actors::transport::GetTransport;
use djinn_engine::analysis::tempo;
use djinn_engine::decode::{self, DecodeError, NonFinite, zero_nonfinite_shared};
use djinn_engine::dsp::FilterMode;
use djinn_engine::mix::{Group, LayerParams, Quantize};
use djinn_engine::music::Key;
use djinn_engine::stretch::{Stretch, nearest_transposition, stretch};
use djinn_engine::synth::Role;
use djinn_engine::transport::TEMPO_RANGE;
use djinn_engine::wav::LoopInfo;

/// The mix-setting params every layer method reads.
const MIX_PARAMS: [&str; 9] = [
    "gain",
    "pan",
    "mute",
    "solo",
    "filter",
    "cutoff_hz",
    "resonance",
    "reverb_send",
    "delay_send",
];

fn audio_error(e: AudioError) -> RpcError {
    match e {
        AudioError::UnknownLayer(_) => RpcError {
            code: rpc::NOT_FOUND,
            message: e.to_string(),
            data: Some(json!({ "field": "id" })),
        },
        AudioError::NoFreeSlot | AudioError::QueueFull => RpcError::new(rpc::BUSY, e.to_string()),
        AudioError::Off(_) => RpcError::new(rpc::UNAVAILABLE, e.to_string()),
        AudioError::Limit(e) => limit_error("source", e),
    }
}

/// A layer over a limit: a bad param when it is too long, a conflict with the layers in
/// place when memory is full. Either names the setting that decides it.
fn limit_error(field: &str, e: LayerLimitError) -> RpcError {
    match e {
        LayerLimitError::TooLong { .. } => RpcError {
            data: Some(json!({ "field": field, "limit": "audio.max_layer_seconds" })),
            ..RpcError::invalid_param(field, &e)
        },
        LayerLimitError::MemoryFull { .. } => RpcError {
            code: rpc::CONFLICT,
            message: e.to_string(),
            data: Some(json!({ "limit": "audio.max_layer_memory_mb" })),
        },
    }
}

fn ranged(params: &Params, field: &str, lo: f64, hi: f64) -> Result<Option<f32>, RpcError> {
    match params.opt_f64(field)? {
        Some(v) if !(lo..=hi).contains(&v) => Err(RpcError::invalid_param(
            field,
            format!("{v} is out of range {lo} to {hi}"),
        )),
        v => Ok(v.map(|v| v as f32)),
    }
}

/// Reads the mix settings present in `params`.
fn patch(params: &Params) -> Result<LayerPatch, RpcError> {
    let filter = params
        .opt_str("filter")?
        .map(|f| match f {
            "off" => Ok(FilterMode::Off),
            "lowpass" => Ok(FilterMode::LowPass),
            "highpass" => Ok(FilterMode::HighPass),
            "bandpass" => Ok(FilterMode::BandPass),
            other => Err(RpcError::invalid_param(
                "filter",
                format!("{other:?} is not off, lowpass, highpass or bandpass"),
            )),
        })
        .transpose()?;
    Ok(LayerPatch {
        gain: ranged(params, "gain", 0.0, 4.0)?,
        pan: ranged(params, "pan", -1.0, 1.0)?,
        mute: params.opt_bool("mute")?,
        solo: params.opt_bool("solo")?,
        filter,
        cutoff_hz: ranged(params, "cutoff_hz", 20.0, 20_000.0)?,
        resonance: ranged(params, "resonance", 0.0, 1.0)?,
        reverb_send: ranged(params, "reverb_send", 0.0, 1.0)?,
        delay_send: ranged(params, "delay_send", 0.0, 1.0)?,
    })
}

fn id(params: &Params) -> Result<u64, RpcError> {
    match params.opt_f64("id")? {
        Some(id) if id >= 1.0 && id.fract() == 0.0 => Ok(id as u64),
        Some(_) => Err(RpcError::invalid_param(
            "id",
            "expected a layer id (a positive integer)",
        )),
        None => Err(RpcError::invalid_param("id", "is required")),
    }
}

async fn quantize(shared: &Shared, params: &Params) -> Result<Quantize, RpcError> {
    match params.opt_f64("at_bar")? {
        Some(bar) if bar >= 0.0 && bar.fract() == 0.0 => {
            if params.opt_str("quantize")?.is_some() {
                return Err(RpcError::invalid_param(
                    "at_bar",
                    "give quantize or at_bar, not both",
                ));
            }
            return Ok(Quantize::AtBar(bar as u64));
        }
        Some(_) => {
            return Err(RpcError::invalid_param(
                "at_bar",
                "expected a bar number (a whole number from 0)",
            ));
        }
        None => {}
    }
    Ok(match params.opt_str("quantize")?.unwrap_or("bar") {
        "now" => Quantize::Now,
        "beat" => Quantize::Beat,
        "bar" => Quantize::Bar,
        "phrase" => {
            let profile = shared
                .profiles
                .ask(GetProfile { name: None })
                .await
                .map_err(|e| unavailable("profiles", e))?;
            Quantize::Phrase(profile.phrase_bars)
        }
        other => {
            return Err(RpcError::invalid_param(
                "quantize",
                format!("{other:?} is not now, beat, bar or phrase"),
            ));
        }
    })
}

/// A layer's audio, as [`source`] found it.
struct Source {
    /// At the mixer's rate.
    frames: Arc<[[f32; 2]]>,
    /// Where it came from, as the layer list shows it.
    shown: String,
    /// A generated single-role loop's role.
    role: Option<Role>,
    /// The tempo and root a file says it has.
    tagged: Option<LoopInfo>,
    /// The layer memory the frames hold.
    reservation: Reservation,
    /// The mixer's rate.
    rate: u32,
    /// Non-finite samples zeroed in it, and where the first was (seconds into it).
    zeroed: NonFinite,
    first_zeroed_s: Option<f64>,
}

/// A layer's file decoded at the mixer's rate, with the memory it holds.
struct DecodedLayer {
    frames: Vec<[f32; 2]>,
    reservation: Reservation,
    /// Non-finite samples zeroed as it was decoded.
    zeroed: NonFinite,
    /// The file's own rate, which `zeroed` counts frames at.
    file_rate: u32,
}

/// Decodes a layer's file within the layer limits: one whose container says it is too long
/// is refused before any of it is decoded, its memory is reserved before it is spent, and
/// decoding stops at whichever limit it reaches first, so an hour-long file costs nothing.
fn decode_layer(
    path: &Path,
    rate: u32,
    memory: &Arc<LayerMemory>,
) -> Result<DecodedLayer, RpcError> {
    let path_error = |e: DecodeError| RpcError::invalid_param("path", e);
    let max_seconds = memory.max_seconds();
    let header = decode::probe(path).map_err(path_error)?;
    if let Some(seconds) = header.seconds
        && seconds > max_seconds
    {
        let e = LayerLimitError::TooLong {
            seconds: Some(seconds),
            max_seconds,
        };
        return Err(limit_error("path", e));
    }
    // A frame more than the length, for the resampler's rounding.
    let bytes_for = |seconds: f64| ((seconds * f64::from(rate)).ceil() as u64 + 1) * FRAME_BYTES;
    let reservation = match header.seconds {
        Some(seconds) => memory.reserve(bytes_for(seconds)),
        // NOTE: with no length to go by, what is left (up to a whole layer) is held while
        // decoding and the rest given back after.
        None => memory.reserve_up_to(bytes_for(max_seconds)),
    };
    let mut reservation = reservation.map_err(|e| limit_error("path", e))?;
    let room = (reservation.bytes() / FRAME_BYTES) as f64 / f64::from(rate);
    let decoded = match decode::read_capped(path, room.min(max_seconds)) {
        Ok(decoded) => decoded,
        Err(DecodeError::TooLong { .. }) if header.seconds.is_some() => {
            return Err(RpcError::invalid_param(
                "path",
                "the file holds more audio than its header says",
            ));
        }
        Err(DecodeError::TooLong { .. }) if room < max_seconds => {
            return Err(limit_error("path", memory.full(bytes_for(max_seconds))));
        }
        Err(DecodeError::TooLong { seconds, .. }) => {
            let e = LayerLimitError::TooLong {
                seconds,
                max_seconds,
            };
            return Err(limit_error("path", e));
        }
        Err(e) => return Err(path_error(e)),
    };
    // Decoding zeroed non-finite samples before the resampler could spread them.
    let (zeroed, file_rate) = (decoded.nonfinite, decoded.sample_rate);
    let frames =
        decode::resample(&decoded.frames, decoded.sample_rate, rate).map_err(path_error)?;
    drop(decoded);
    admit(memory, "path", &frames, rate, &mut reservation)?;
    Ok(DecodedLayer {
        frames,
        reservation,
        zeroed,
        file_rate,
    })
}

/// Checks `frames` against the length limit and makes `reservation` exactly their size.
fn admit(
    memory: &LayerMemory,
    field: &str,
    frames: &[[f32; 2]],
    rate: u32,
    reservation: &mut Reservation,
) -> Result<(), RpcError> {
    memory
        .check_length(frames.len(), rate)
        .and_then(|()| reservation.resize(frames.len() as u64 * FRAME_BYTES))
        .map_err(|e| limit_error(field, e))
}

/// The layer's audio from `path`, `buffer` or a payload frame, at the mixer's rate.
async fn source(shared: &Shared, params: &Params, payload: &[Bytes]) -> Result<Source, RpcError> {
    let rate = session_rate(shared).await?;
    let path = params.opt_str("path")?;
    let buffer = params.opt_str("buffer")?;
    let given = usize::from(path.is_some())
        + usize::from(buffer.is_some())
        + usize::from(!payload.is_empty());
    if given != 1 {
        return Err(RpcError::invalid_param(
            "path",
            "give exactly one source: path, buffer, or interleaved f32 frames in a second frame",
        ));
    }
    let memory = shared.layer_memory.clone();
    if let Some(path) = path {
        let path = super::media_path(shared, "path", path, crate::media::Kind::File)?;
        let shown = path.display().to_string();
        let (decoded, tagged) = tokio::task::spawn_blocking(move || {
            let decoded = decode_layer(&path, rate, &memory)?;
            // Loop information that cannot be read is as good as none: the audio is there.
            Ok::<_, RpcError>((decoded, LoopInfo::read(&path).ok().flatten()))
        })
        .await
        .map_err(RpcError::internal)??;
        let DecodedLayer {
            frames,
            reservation,
            zeroed,
            file_rate,
        } = decoded;
        return Ok(Source {
            frames: frames.into(),
            shown,
            role: None,
            tagged,
            reservation,
            rate,
            zeroed,
            first_zeroed_s: zeroed.first_s(file_rate),
        });
    }
    if let Some(buffer) = buffer {
        let stored = shared
            .generator
            .ask(GetBuffer {
                id: buffer.to_owned(),
            })
            .await
            .map_err(|e| {
                ask_error("generator", e, |e| RpcError {
                    code: rpc::NOT_FOUND,
                    message: e.to_string(),
                    data: Some(json!({ "field": "buffer" })),
                })
            })?;
        let (frames, zeroed) = zero_nonfinite_shared(stored.frames);
        let frames = if stored.sample_rate == rate {
            frames
        } else {
            // The server's rate changed since the loop was made.
            djinn_engine::decode::resample(&frames, stored.sample_rate, rate)
                .map_err(|e| RpcError::invalid_param("buffer", e))?
                .into()
        };
        let mut reservation = memory.reserve(0).map_err(|e| limit_error("buffer", e))?;
        admit(&memory, "buffer", &frames, rate, &mut reservation)?;
        return Ok(Source {
            frames,
            shown: buffer.to_owned(),
            role: stored.role,
            tagged: None,
            reservation,
            rate,
            zeroed,
            first_zeroed_s: zeroed.first_s(stored.sample_rate),
        });
    }
    let channels = payload_channels(params)?;
    let from = payload_rate(params)?.unwrap_or(rate);
    let (frames, zeroed) = payload_audio(payload, channels)?;
    let frames = djinn_engine::decode::resample(&frames, from, rate)
        .map_err(|e| RpcError::invalid_param("rate", e))?;
    // Bounded by control.max_frame_bytes already, but held by the mixer like any layer.
    let mut reservation = memory.reserve(0).map_err(|e| limit_error("frames", e))?;
    admit(&memory, "frames", &frames, rate, &mut reservation)?;
    let shown = format!("frames ({} at {from} Hz)", frames.len());
    Ok(Source {
        frames: frames.into(),
        shown,
        role: None,
        tagged: None,
        reservation,
        rate,
        zeroed,
        first_zeroed_s: zeroed.first_s(from),
    })
}

/// Reports the non-finite samples zeroed in a layer's source to the audio actor (which
/// counts them in `daemon.status` and publishes a `health` event) and adds them to the
/// reply: `nonfinite_zeroed` always, `nonfinite_first_s` where there were any.
async fn report_zeroed(
    shared: &Shared,
    source: &str,
    zeroed: NonFinite,
    first_s: Option<f64>,
    reply: &mut Value,
) -> Result<(), RpcError> {
    reply["nonfinite_zeroed"] = json!(zeroed.samples);
    if zeroed.is_none() {
        return Ok(());
    }
    reply["nonfinite_first_s"] = json!(first_s);
    shared
        .audio
        .ask(NonFiniteZeroed {
            source: source.to_owned(),
            samples: zeroed.samples,
            first_s,
        })
        .await
        .map_err(|e| unavailable("audio", e))
}

/// `base` with the fields of `extra` added.
fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

/// The params that fit a loop made at another tempo or key to the session.
const FIT_PARAMS: [&str; 3] = ["bpm", "fit_tempo", "key"];

/// What the caller says of a loop's own tempo and key.
struct Fit {
    /// The loop's tempo, given.
    bpm: Option<f64>,
    /// Detect the loop's tempo from its onsets.
    detect: bool,
    /// The loop's key: it is transposed to the session's.
    key: Option<Key>,
}

impl Fit {
    fn read(params: &Params) -> Result<Fit, RpcError> {
        let bpm = params.opt_f64("bpm")?;
        if let Some(bpm) = bpm
            && !TEMPO_RANGE.contains(&bpm)
        {
            return Err(RpcError::invalid_param(
                "bpm",
                format!("{bpm} BPM is out of range: a loop's tempo is 20 to 300 BPM"),
            ));
        }
        let key = params
            .opt_str("key")?
            .map(|k| k.parse::<Key>())
            .transpose()
            .map_err(|e| RpcError::invalid_param("key", e))?;
        Ok(Fit {
            bpm,
            detect: params.opt_bool("fit_tempo")?.unwrap_or(false),
            key,
        })
    }

    fn wanted(&self) -> bool {
        self.bpm.is_some() || self.detect || self.key.is_some()
    }
}

/// Stretches a loop to the session's tempo and transposes it to the session's key, off the
/// realtime thread, with Rubber Band's R3 engine; returns the audio and what was done. A
/// tempo to detect is the one the file is `tagged` with, where it has one.
async fn fit(
    shared: &Shared,
    frames: Arc<[[f32; 2]]>,
    fit: Fit,
    tagged: Option<LoopInfo>,
) -> Result<(Arc<[[f32; 2]]>, Option<Value>), RpcError> {
    if !fit.wanted() {
        return Ok((frames, None));
    }
    let rate = session_rate(shared).await?;
    let session = shared
        .transport
        .ask(GetTransport)
        .await
        .map_err(|e| unavailable("transport", e))?
        .0;
    tokio::task::spawn_blocking(move || {
        let (from_bpm, from) = match (fit.bpm, tagged) {
            (Some(bpm), _) => (bpm, "given"),
            (None, Some(info)) if fit.detect => (info.bpm, "file"),
            (None, None) if fit.detect => {
                let estimate = tempo::estimate_music(&frames, rate).ok_or_else(|| {
                    RpcError::invalid_param(
                        "fit_tempo",
                        "no steady tempo found in the audio: give the loop's bpm",
                    )
                })?;
                (estimate.bpm, "audio")
            }
            (None, _) => (session.tempo, "session"),
        };
        // Onto the session key's notes, the nearest way: at most six semitones up or down.
        let semitones = fit
            .key
            .map_or(0, |key| nearest_transposition(key, session.key));
        let report = json!({
            "from_bpm": from_bpm,
            "bpm_detected": from == "audio",
            "bpm_from": from,
            "bpm": session.tempo,
            "semitones": semitones,
        });
        if (from_bpm - session.tempo).abs() < 1e-6 && semitones == 0 {
            return Ok((frames, Some(report)));
        }
        let settings = Stretch::tempo(from_bpm, session.tempo, f64::from(semitones));
        let stretched = stretch(&frames, rate, settings, |_| {}).map_err(|e| {
            RpcError::invalid_param(if fit.bpm.is_some() { "bpm" } else { "key" }, e)
        })?;
        Ok((stretched.into(), Some(report)))
    })
    .await
    .map_err(RpcError::internal)?
}

pub async fn add(shared: &Shared, params: &Params, payload: &[Bytes]) -> Result<Value, RpcError> {
    let mut known = vec![
        "path", "buffer", "channels", "rate", "quantize", "at_bar", "group", "loop",
    ];
    known.extend(FIT_PARAMS);
    known.extend(MIX_PARAMS);
    params.only(&known)?;
    let group = match params.opt_str("group")? {
        None => None,
        Some("drums") => Some(Group::Drums),
        Some("bass") => Some(Group::Bass),
        Some("music") => Some(Group::Music),
        Some("voice") => Some(Group::Voice),
        Some(other) => {
            return Err(RpcError::invalid_param(
                "group",
                format!("{other:?} is not drums, bass, music or voice"),
            ));
        }
    };
    let params_patch = patch(params)?;
    let at = quantize(shared, params).await?;
    let looped = params.opt_bool("loop")?.unwrap_or(true);
    let fitting = Fit::read(params)?;
    let Source {
        frames,
        shown: source,
        role,
        tagged,
        mut reservation,
        rate,
        zeroed,
        first_zeroed_s,
    } = source(shared, params, payload).await?;
    let (frames, fitted) = fit(shared, frames, fitting, tagged).await?;
    // A loop slowed down to the session's tempo grows.
    admit(&shared.layer_memory, "bpm", &frames, rate, &mut reservation)?;
    // A generated single-role loop goes to its role's group unless told otherwise.
    let group = group.unwrap_or_else(|| role.map_or(Group::Music, Group::for_role));
    let mut reply = json!({});
    report_zeroed(shared, &source, zeroed, first_zeroed_s, &mut reply).await?;
    let info = shared
        .audio
        .ask(AddLayer {
            frames,
            looped,
            group,
            params: params_patch.apply(LayerParams::default()),
            at,
            source,
            reservation: Some(Arc::new(reservation)),
        })
        .await
        .map_err(|e| ask_error("audio", e, audio_error))?;
    let mut reply = merged(json!(info), reply);
    if let Some(fitted) = fitted {
        reply["fit"] = fitted;
    }
    Ok(reply)
}

pub async fn replace(
    shared: &Shared,
    params: &Params,
    payload: &[Bytes],
) -> Result<Value, RpcError> {
    let mut known = vec![
        "id",
        "path",
        "buffer",
        "channels",
        "rate",
        "quantize",
        "at_bar",
        "crossfade_beats",
    ];
    known.extend(FIT_PARAMS);
    params.only(&known)?;
    let id = id(params)?;
    let at = quantize(shared, params).await?;
    let crossfade_beats = ranged(params, "crossfade_beats", 0.0, 64.0)?.unwrap_or(1.0);
    let fitting = Fit::read(params)?;
    let Source {
        frames,
        shown: source,
        tagged,
        mut reservation,
        rate,
        zeroed,
        first_zeroed_s,
        ..
    } = source(shared, params, payload).await?;
    let (frames, fitted) = fit(shared, frames, fitting, tagged).await?;
    admit(&shared.layer_memory, "bpm", &frames, rate, &mut reservation)?;
    let mut reply = json!({});
    report_zeroed(shared, &source, zeroed, first_zeroed_s, &mut reply).await?;
    let info = shared
        .audio
        .ask(ReplaceLayer {
            id,
            frames,
            at,
            crossfade_beats,
            source,
            reservation: Some(Arc::new(reservation)),
        })
        .await
        .map_err(|e| ask_error("audio", e, audio_error))?;
    let mut reply = merged(json!(info), reply);
    if let Some(fitted) = fitted {
        reply["fit"] = fitted;
    }
    Ok(reply)
}

pub async fn remove(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&["id", "quantize", "at_bar"])?;
    let id = id(params)?;
    let at = quantize(shared, params).await?;
    let info = shared
        .audio
        .ask(RemoveLayer { id, at })
        .await
        .map_err(|e| ask_error("audio", e, audio_error))?;
    Ok(json!(info))
}

pub async fn set(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    let mut known = vec!["id"];
    known.extend(MIX_PARAMS);
    params.only(&known)?;
    let id = id(params)?;
    let patch = patch(params)?;
    let info = shared
        .audio
        .ask(SetLayer { id, patch })
        .await
        .map_err(|e| ask_error("audio", e, audio_error))?;
    Ok(json!(info))
}

pub async fn list(shared: &Shared, params: &Params) -> Result<Value, RpcError> {
    params.only(&[])?;
    let layers = shared
        .audio
        .ask(ListLayers)
        .await
        .map_err(|e| unavailable("audio", e))?;
    Ok(json!({ "layers": layers.0 }))
}
