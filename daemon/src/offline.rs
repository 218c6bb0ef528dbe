//! The work the `djinn` command does by itself, with no daemon: songs from a prompt, the
//! analysis, stretching and rendering of audio files. It uses the same engine, profiles and mood script as djinnd.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use djinn_actors::moods::{ChainChoice, ChainHints, ChainScript, MoodScript};
use djinn_actors::profiles::DEFAULT_PROFILE;
use djinn_engine::analysis::describe::describe;
use djinn_engine::analysis::quality::{self, Target};
use djinn_engine::analysis::tempo;
use djinn_engine::music::{Meter, PitchClass};
use djinn_engine::profile::{Profile, ProfileSet};
use djinn_engine::synth::render::SONG_SECONDS;
use djinn_engine::synth::{Instrument, Role, render_song};
use djinn_engine::wav::LoopInfo;

/// What `djinn generate` was asked for.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub prompt: Option<String>,
    pub seconds: f64,
    pub output: PathBuf,
    pub seed: u64,
    pub profile: Option<String>,
    pub profiles_dir: Option<PathBuf>,
    pub scripts_dir: Option<PathBuf>,
    pub sample_rate: u32,
    /// Roles that play; empty for all.
    pub roles: Vec<String>,
}

fn profiles(dir: Option<&Path>) -> ProfileSet {
    let dirs: Vec<PathBuf> = dir.into_iter().map(Path::to_path_buf).collect();
    let (set, errors) = ProfileSet::load_over_built_in(&dirs);
    for error in errors {
        eprintln!("djinn: profile skipped: {error}");
    }
    set
}

fn profile<'a>(set: &'a ProfileSet, name: Option<&str>) -> anyhow::Result<&'a Profile> {
    let name = name.unwrap_or(DEFAULT_PROFILE);
    set.get(name).with_context(|| {
        let known: Vec<&str> = set.iter().map(|p| p.name.as_str()).collect();
        format!("no profile named {name:?}; there are {}", known.join(", "))
    })
}

/// Renders a song to `options.output` and returns its report.
pub fn generate(options: &GenerateOptions, progress: &mut dyn FnMut(f64)) -> anyhow::Result<Value> {
    if !SONG_SECONDS.contains(&options.seconds) {
        bail!("--seconds must be 10 to 3600 (got {})", options.seconds);
    }
    let set = profiles(options.profiles_dir.as_deref());
    let base = profile(&set, options.profile.as_deref())?;
    let script = MoodScript::load(options.scripts_dir.as_deref())?;
    let mut interpretation =
        script.interpret(options.prompt.as_deref().unwrap_or(""), base, &set)?;
    if !options.roles.is_empty() {
        let roles = options
            .roles
            .iter()
            .map(|r| r.trim().parse::<Role>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<Role>>>()?;
        let recipe = &mut interpretation.recipe;
        recipe.parts = roles
            .iter()
            .map(|&r| {
                recipe
                    .instrument(r)
                    .unwrap_or_else(|| Instrument::default_for(r, recipe.groove))
            })
            .collect();
    }
    let style = profile(&set, Some(&interpretation.style))?;
    let started = Instant::now();
    let song = render_song(
        &interpretation.recipe,
        options.seconds,
        style.phrase_bars,
        options.seed,
        options.sample_rate,
        progress,
    )?;
    let render_s = started.elapsed().as_secs_f64();
    let info = interpretation.recipe.loop_info(options.seconds);
    djinn_engine::wav::write_with(
        &options.output,
        &song.frames,
        options.sample_rate,
        Some(&info),
    )?;
    Ok(json!({
        "file": options.output,
        "seconds": song.frames.len() as f64 / f64::from(options.sample_rate),
        "frames": song.frames.len(),
        "sample_rate": options.sample_rate,
        "seed": options.seed,
        "style": interpretation.style,
        "recipe": interpretation.recipe,
        "mood": interpretation.mood,
        "unknown": interpretation.unknown,
        "sections": song.sections,
        "loudness": song.loudness,
        "mastering": song.mastering,
        "render_seconds": render_s,
        "realtime_factor": options.seconds / render_s.max(1e-9),
        "mood_script": script.name(),
    }))
}

/// What `djinn analyze` judges against.
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    pub profile: Option<String>,
    pub profiles_dir: Option<PathBuf>,
    pub target_lufs: Option<f64>,
    pub true_peak_limit: Option<f64>,
}

/// The loudness target and ceiling `djinn analyze` judges against, and the profile they
/// come from.
#[derive(Debug, Clone)]
pub struct Judging {
    target: Target,
    profile: String,
}

impl AnalyzeOptions {
    /// The target and ceiling: the options', else their profile's (the profiles are loaded
    /// here, once for any number of files).
    pub fn judging(&self) -> anyhow::Result<Judging> {
        let set = profiles(self.profiles_dir.as_deref());
        let base = profile(&set, self.profile.as_deref())?;
        Ok(Judging {
            target: Target {
                lufs: self.target_lufs.unwrap_or(base.loudness.target_lufs),
                ceiling_dbtp: self.true_peak_limit.unwrap_or(base.loudness.true_peak_dbtp),
            },
            profile: base.name.clone(),
        })
    }
}

/// Decodes `path` and returns the quality assessment with the description: tempo and beats,
/// key, bands, spectral features, brightness and role.
pub fn analyze(path: &Path, judging: &Judging) -> anyhow::Result<Value> {
    let target = judging.target;
    let decoded = djinn_engine::decode::read(path)?;
    let assessment = quality::assess(&decoded.frames, decoded.sample_rate, target)?;
    let description = describe(&decoded.frames, decoded.sample_rate);
    let mut result = json!(assessment);
    result["file"] = json!(path);
    result["loop_info"] = loop_info(path);
    result["sample_rate"] = json!(decoded.sample_rate);
    result["target"] = json!({ "lufs": target.lufs, "true_peak_limit": target.ceiling_dbtp, "profile": judging.profile });
    result["tempo"] = json!(description.tempo);
    result["beats"] = json!(description.beats);
    result["key"] = json!(description.key);
    result["bands"] = json!(description.bands);
    result["spectral"] = json!(description.spectral);
    result["brightness"] = json!(description.spectral.brightness);
    result["role"] = json!(description.role);
    Ok(result)
}

/// Decodes `path` and finds its tempo, beats and key, nothing else.
pub fn tempo_key(path: &Path) -> anyhow::Result<Value> {
    use djinn_engine::analysis::describe::Listener;
    // Read as it is decoded: the full file is never held, and the reading keeps pace.
    let mut listener: Option<Listener> = None;
    let (rate, frames) = djinn_engine::decode::for_each_mono(path, |rate, mono| {
        listener
            .get_or_insert_with(|| Listener::new(rate))
            .push(mono);
    })?;
    let found = listener
        .ok_or_else(|| anyhow::anyhow!("{} contains no audio", path.display()))?
        .finish();
    Ok(json!({
        "file": path,
        "sample_rate": rate,
        "seconds": frames as f64 / f64::from(rate),
        "tempo": found.tempo,
        "beats": found.beats,
        "key": found.key,
        "loop_info": loop_info(path),
    }))
}

/// The tempo, beats, meter and root `path` says it has (a WAV file's `acid` chunk), beside
/// what analysis hears; null when it says none.
fn loop_info(path: &Path) -> Value {
    match LoopInfo::read(path).ok().flatten() {
        Some(info) => json!({
            "bpm": info.bpm,
            "beats": info.beats,
            "meter": info.meter.to_string(),
            "root": info.root.map(|r| r.name()),
            "one_shot": info.one_shot,
        }),
        None => Value::Null,
    }
}

/// Decodes `path` and measures its loudness with the `ebur128` crate, nothing else.
pub fn loudness(path: &Path) -> anyhow::Result<Value> {
    let decoded = djinn_engine::decode::read(path)?;
    let report = djinn_engine::analysis::loudness::measure(&decoded.frames, decoded.sample_rate)?;
    Ok(json!({
        "file": path,
        "sample_rate": decoded.sample_rate,
        "seconds": decoded.frames.len() as f64 / f64::from(decoded.sample_rate),
        "loudness": report,
    }))
}

/// What `djinn stretch` does.
#[derive(Debug, Clone)]
pub struct StretchOptions {
    pub output: PathBuf,
    /// The tempo to reach.
    pub bpm: f64,
    /// The input's tempo; detected when not given.
    pub from_bpm: Option<f64>,
    pub semitones: f64,
    pub engine: djinn_engine::stretch::Engine,
}

/// Decodes `path`, stretches it to `options.bpm` (and transposes it), writes a WAV at the
/// input's rate and reports what was done.
pub fn stretch(
    path: &Path,
    options: &StretchOptions,
    progress: &mut dyn FnMut(f64),
) -> anyhow::Result<Value> {
    use djinn_engine::stretch::{Stretch, stretch};
    if !djinn_engine::transport::TEMPO_RANGE.contains(&options.bpm) {
        anyhow::bail!("--bpm {} is out of range: use 20 to 300", options.bpm);
    }
    let decoded = djinn_engine::decode::read(path)?;
    let tagged = LoopInfo::read(path)?;
    let (from_bpm, source) = match (options.from_bpm, tagged) {
        (Some(bpm), _) => (bpm, "given"),
        (None, Some(info)) => (info.bpm, "file"),
        (None, None) => {
            let estimate =
                tempo::estimate_music(&decoded.frames, decoded.sample_rate).ok_or_else(|| {
                    anyhow::anyhow!(
                        "no steady tempo found in {}: give it with --from-bpm",
                        path.display()
                    )
                })?;
            (estimate.bpm, "audio")
        }
    };
    // Nothing plays beside the command: R2 may take a second core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings = Stretch {
        engine: options.engine,
        parallel: cores > 1,
        ..Stretch::tempo(from_bpm, options.bpm, options.semitones)
    };
    let started = std::time::Instant::now();
    let frames = stretch(&decoded.frames, decoded.sample_rate, settings, progress)?;
    let took = started.elapsed().as_secs_f64();
    let rate = f64::from(decoded.sample_rate);
    // The result plays at the asked tempo, the same beats in the same meter, its root moved
    // by a whole transposition (a fractional one leaves no root to name).
    let whole = (options.semitones.fract() == 0.0).then_some(options.semitones as i32);
    let root = tagged
        .and_then(|t| t.root)
        .zip(whole)
        .map(|(root, s)| PitchClass::new(i32::from(root.semitones()) + s));
    let meter = tagged.map_or(Meter::FOUR_FOUR, |t| t.meter);
    let info = LoopInfo::lasting(options.bpm, meter, root, frames.len() as f64 / rate);
    djinn_engine::wav::write_with(&options.output, &frames, decoded.sample_rate, Some(&info))?;
    Ok(json!({
        "file": options.output,
        "from_bpm": from_bpm,
        "from_bpm_detected": source == "audio",
        "from_bpm_source": source,
        "bpm": options.bpm,
        "time_ratio": settings.time_ratio,
        "semitones": options.semitones,
        "engine": options.engine,
        "threads": settings.threads(),
        "sample_rate": decoded.sample_rate,
        "input_seconds": decoded.frames.len() as f64 / rate,
        "seconds": frames.len() as f64 / rate,
        "frames": frames.len(),
        "render_seconds": took,
    }))
}

/// What `djinn render` does.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub output: PathBuf,
    pub prompt: String,
    /// Who suggests the chain before the prompt's words adjust it.
    pub backend: String,
    /// Settings a backend (or the caller) suggests; the render script starts from them.
    pub hints: ChainHints,
    pub scripts_dir: Option<PathBuf>,
}

/// The backends that can suggest a chain. Only the local one exists so far; the cloud
/// backends' drive hints enter through [`RenderOptions::hints`].
pub const RENDER_BACKENDS: &[&str] = &["local"];

/// Checks a `--backend` / `backend` name.
pub fn render_backend(name: &str) -> Result<(), String> {
    if RENDER_BACKENDS.contains(&name) {
        Ok(())
    } else if matches!(name, "gemini" | "deepseek") {
        Err(format!(
            "the {name} backend cannot suggest a chain in this build; use --backend local"
        ))
    } else {
        Err(format!(
            "no backend named {name:?}; there is {}",
            RENDER_BACKENDS.join(", ")
        ))
    }
}

/// Decodes `path`, runs it through the chain the render script chose for the prompt,
/// writes WAV or FLAC (by the output's extension) at the input's rate, and reports the
/// chain and the loudness and balance before and after.
pub fn render(
    path: &Path,
    options: &RenderOptions,
    progress: &mut dyn FnMut(f64),
) -> anyhow::Result<Value> {
    render_backend(&options.backend).map_err(anyhow::Error::msg)?;
    djinn_engine::wav::Format::for_path(&options.output)?;
    let script = ChainScript::load(options.scripts_dir.as_deref())?;
    let choice = script.choose(&options.prompt, &options.hints)?;
    Ok(render_file(
        path,
        &options.output,
        &choice,
        &options.backend,
        script.name(),
        progress,
    )?)
}

/// Why a file could not be rendered: its input, the chain's master stage, or its output.
#[derive(Debug, thiserror::Error)]
pub enum RenderFileError {
    #[error(transparent)]
    Input(#[from] djinn_engine::decode::DecodeError),
    #[error(transparent)]
    Master(#[from] djinn_engine::analysis::LoudnessError),
    #[error(transparent)]
    Output(#[from] djinn_engine::wav::WavError),
}

/// Decodes `input`, runs it through the chain `choice` describes, writes `output` (WAV or
/// FLAC by its extension) at the input's rate, and reports: the work of both `djinn render`
/// and `render.file`. `progress` gets the fraction done, 0–1.
pub fn render_file(
    input: &Path,
    output: &Path,
    choice: &ChainChoice,
    backend: &str,
    script: &str,
    progress: &mut dyn FnMut(f64),
) -> Result<Value, RenderFileError> {
    let decoded = djinn_engine::decode::read(input)?;
    progress(0.05);
    let started = Instant::now();
    let rendered = djinn_engine::chain::render(
        &decoded.frames,
        decoded.sample_rate,
        &choice.settings,
        &mut |done| progress(0.05 + 0.9 * done),
    )?;
    let took = started.elapsed().as_secs_f64();
    djinn_engine::wav::write_audio(output, &rendered.frames, decoded.sample_rate)?;
    progress(1.0);
    Ok(render_report(
        input,
        output,
        backend,
        script,
        choice,
        &rendered,
        decoded.sample_rate,
        took,
    ))
}

/// The report of one render.
#[allow(clippy::too_many_arguments)]
fn render_report(
    input: &Path,
    output: &Path,
    backend: &str,
    script: &str,
    choice: &ChainChoice,
    rendered: &djinn_engine::chain::Rendered,
    sample_rate: u32,
    render_seconds: f64,
) -> Value {
    let seconds = rendered.frames.len() as f64 / f64::from(sample_rate);
    let (before, after) = (&rendered.before, &rendered.after);
    json!({
        "input": input,
        "file": output,
        "sample_rate": sample_rate,
        "seconds": seconds,
        "frames": rendered.frames.len(),
        "prompt": choice.prompt,
        "backend": backend,
        "render_script": script,
        "chain": choice.settings,
        "words": choice.words,
        "unknown": choice.unknown,
        "target_lufs": rendered.target_lufs,
        "before": before,
        "after": after,
        "mastering": rendered.mastering,
        "change": {
            "loudness_lu": after.loudness.integrated_lufs - before.loudness.integrated_lufs,
            "true_peak_db": after.loudness.true_peak_dbtp - before.loudness.true_peak_dbtp,
            "high_low_db": after.balance.high_low_db - before.balance.high_low_db,
        },
        "render_seconds": render_seconds,
        "realtime_factor": seconds / render_seconds.max(1e-9),
    })
}
