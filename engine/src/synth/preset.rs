//! Presets: one instrument with its envelope and tone, rendered for a given duration in a
//! given musical context. This is the render API other programs call to get a sound
//! ("a warm pad in D minor at 90 BPM for 8 seconds") rather than a whole arrangement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::drums::DrumMachine;
use super::instruments::{Tone, Voices};
use super::pattern::{self, Note, Phrase, SectionKind};
use super::render::{Rendered, master};
use super::voice::Adsr;
use super::{Grid, Groove, Instrument, Recipe, Role};
use crate::music::{Key, Meter};

/// Longest render, seconds.
pub const MAX_SECONDS: f64 = 600.0;

/// A named sound: a role, an instrument and how it is shaped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: Parameters,
    #[serde(default)]
    pub constraints: Constraints,
}

/// How a preset sounds. Every field is optional; the role's defaults fill the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameters {
    /// Pitch of the note (or chord root), Hz. Default: the context's tonic.
    pub frequency: Option<f64>,
    /// Note velocity, 0–1: it colours accents and drive; loudness is set by constraints.
    pub amplitude: Option<f64>,
    /// Envelope, seconds (sustain is a level, 0–1). All four or none.
    pub attack: Option<f64>,
    pub decay: Option<f64>,
    pub sustain: Option<f64>,
    pub release: Option<f64>,
    /// The instrument of the role, by name (see `Instrument`).
    pub instrument: Option<String>,
    /// Filter cutoff, Hz: sets how bright the instrument is.
    pub cutoff: Option<f64>,
    /// Rhythm for drum and bass presets: a groove name.
    pub pattern: Option<String>,
    /// Reverb, 0–1.
    pub space: Option<f64>,
}

/// The loudness the render must meet. Defaults come from the current profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    pub lufs_target: Option<f64>,
    pub true_peak_limit: Option<f64>,
}

/// The musical context of a render.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderContext {
    pub tempo: f64,
    pub key: Key,
    pub meter: Meter,
}

/// A preset that cannot be rendered; `field` names the culprit (`parameters.attack`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PresetError {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> PresetError {
    PresetError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn ranged(field: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f64>, PresetError> {
    match v {
        Some(x) if !x.is_finite() || !(lo..=hi).contains(&x) => {
            Err(bad(field, format!("{x} is outside {lo} to {hi}")))
        }
        other => Ok(other),
    }
}

impl Preset {
    /// The instrument this preset plays.
    pub fn instrument(&self, groove: Groove) -> Result<Instrument, PresetError> {
        match &self.parameters.instrument {
            Some(name) => {
                let instrument = name
                    .parse::<Instrument>()
                    .map_err(|e| bad("parameters.instrument", e))?;
                if instrument.role() != self.role {
                    return Err(bad(
                        "parameters.instrument",
                        format!(
                            "{instrument} plays {}, not {}",
                            instrument.role(),
                            self.role
                        ),
                    ));
                }
                Ok(instrument)
            }
            None => Ok(Instrument::default_for(self.role, groove)),
        }
    }

    /// The envelope, when the preset sets one.
    fn shape(&self) -> Result<Option<Adsr>, PresetError> {
        let p = &self.parameters;
        let attack = ranged("parameters.attack", p.attack, 0.0, 30.0)?;
        let decay = ranged("parameters.decay", p.decay, 0.0, 30.0)?;
        let sustain = ranged("parameters.sustain", p.sustain, 0.0, 1.0)?;
        let release = ranged("parameters.release", p.release, 0.0, 30.0)?;
        match (attack, decay, sustain, release) {
            (None, None, None, None) => Ok(None),
            (a, d, s, r) => Ok(Some(Adsr::new(
                a.unwrap_or(0.01) as f32,
                d.unwrap_or(0.3) as f32,
                s.unwrap_or(0.8) as f32,
                r.unwrap_or(0.3) as f32,
            ))),
        }
    }

    /// Checks every field; the first bad one is named.
    pub fn validate(&self) -> Result<(), PresetError> {
        if self.name.trim().is_empty() {
            return Err(bad("name", "is empty"));
        }
        let p = &self.parameters;
        ranged("parameters.frequency", p.frequency, 20.0, 20_000.0)?;
        ranged("parameters.amplitude", p.amplitude, 0.0, 1.0)?;
        ranged("parameters.cutoff", p.cutoff, 20.0, 20_000.0)?;
        ranged("parameters.space", p.space, 0.0, 1.0)?;
        self.shape()?;
        if let Some(g) = &p.pattern {
            g.parse::<Groove>()
                .map_err(|e| bad("parameters.pattern", e))?;
        }
        self.instrument(Groove::default())?;
        ranged(
            "constraints.lufs_target",
            self.constraints.lufs_target,
            -40.0,
            -3.0,
        )?;
        ranged(
            "constraints.true_peak_limit",
            self.constraints.true_peak_limit,
            -12.0,
            0.0,
        )?;
        Ok(())
    }
}

/// Renders `preset` for `seconds` in `context`, mastered to its constraints (or to
/// `default_target` LUFS and `default_ceiling` dBTP where it sets none).
pub fn render_preset(
    preset: &Preset,
    context: RenderContext,
    seconds: f64,
    default_target: f64,
    default_ceiling: f64,
    sample_rate: u32,
) -> Result<Rendered, PresetError> {
    preset.validate()?;
    if !(0.05..=MAX_SECONDS).contains(&seconds) || !seconds.is_finite() {
        return Err(bad(
            "duration",
            format!("{seconds} s is outside 0.05 to {MAX_SECONDS} s"),
        ));
    }
    if !(20.0..=300.0).contains(&context.tempo) {
        return Err(bad(
            "context.tempo",
            format!("{} is outside 20–300 BPM", context.tempo),
        ));
    }
    let p = &preset.parameters;
    let groove = match &p.pattern {
        Some(g) => g
            .parse::<Groove>()
            .map_err(|e| bad("parameters.pattern", e))?,
        None => Groove::FourOnTheFloor,
    };
    let instrument = preset.instrument(groove)?;
    let brightness = p
        .cutoff
        .map(|hz| ((hz / 200.0).log2() / 60f64.log2()).clamp(0.0, 1.0) as f32)
        .unwrap_or(0.5);
    let tone = Tone {
        brightness,
        shape: preset.shape()?,
    };
    let velocity = p.amplitude.unwrap_or(0.8) as f32;
    let recipe = Recipe {
        tempo: context.tempo,
        key: context.key,
        meter: context.meter,
        groove,
        swing: 0.0,
        parts: vec![instrument],
        intensity: 0.6,
        brightness,
        space: p.space.unwrap_or(0.2) as f32,
        target_lufs: preset.constraints.lufs_target.unwrap_or(default_target),
        ceiling_dbtp: preset
            .constraints
            .true_peak_limit
            .unwrap_or(default_ceiling),
    };
    let grid = Grid::new(sample_rate, context.tempo, context.meter);
    let fpb = grid.frames_per_beat();
    let total = (seconds * f64::from(sample_rate)).round() as usize;
    let beats = seconds * context.tempo / 60.0;
    let beats_per_bar = f64::from(context.meter.beats_per_bar.max(1));
    let bars = (beats / beats_per_bar).ceil().max(1.0) as u32;
    // The pitch the preset asks for, or the tonic in the role's register.
    let octave = match preset.role {
        Role::Bass => 1,
        Role::Pad | Role::Fx => 3,
        Role::Lead | Role::Drum => 4,
    };
    let root = p
        .frequency
        .map(|hz| (69.0 + 12.0 * (hz / 440.0).log2()) as f32)
        .unwrap_or(context.key.note(0, octave) as f32);
    let note = |beat: f64, length: f64, pitch: f32| Note {
        instrument,
        beat,
        length,
        pitch,
        velocity,
        slide_from: None,
        pan: 0.0,
    };
    // Leave room for the release inside the duration.
    let release_beats = f64::from(tone.shape.map_or(0.3, |s| s.release)) * context.tempo / 60.0;
    let held = (beats - release_beats).max(beats * 0.5);
    let mut out = vec![[0.0f32; 2]; total];
    match preset.role {
        Role::Drum => {
            let phrase = Phrase {
                kind: SectionKind::Loop,
                bars,
                intensity: 0.6,
                fill: false,
            };
            let score = pattern::drums(&recipe, phrase, 1);
            DrumMachine::new(1, pattern::kick_hz(context.key), sample_rate).render(
                instrument,
                &score.hits,
                fpb,
                &mut out,
            );
        }
        role => {
            let notes: Vec<Note> = match role {
                // A chord on the root, from the key.
                Role::Pad => {
                    let offset = root - context.key.note(0, octave) as f32;
                    context
                        .key
                        .chord(0, 3, octave)
                        .notes
                        .iter()
                        .map(|&n| note(0.0, held, n as f32 + offset))
                        .collect()
                }
                // The root on every beat.
                Role::Bass => (0..beats.floor().max(1.0) as u32)
                    .map(|b| note(f64::from(b), 0.9, root))
                    .collect(),
                // Up the scale in eighths from the root.
                Role::Lead => (0..(beats * 2.0).floor().max(1.0) as u32)
                    .map(|i| {
                        let step = (i % 8) as i32;
                        let degree_note =
                            context.key.note(step, octave) - context.key.note(0, octave);
                        note(f64::from(i) * 0.5, 0.45, root + degree_note as f32)
                    })
                    .collect(),
                _ => vec![note(0.0, beats, root)],
            };
            Voices::new(1, tone, sample_rate).render(instrument, &notes, fpb, &mut out);
        }
    }
    // A short fade at the very end, so a cut note does not click.
    let fade = (sample_rate as usize / 100).min(total / 2);
    for (i, f) in out[total - fade..].iter_mut().enumerate() {
        let g = 1.0 - i as f32 / fade as f32;
        f[0] *= g;
        f[1] *= g;
    }
    let mastered = master(&mut out, &recipe, sample_rate, false)
        .map_err(|e| bad("duration", e.to_string()))?;
    Ok(Rendered {
        frames: out,
        sample_rate,
        loudness: mastered.loudness,
        mastering: mastered.mastering,
        sections: Vec::new(),
    })
}

/// The presets shipped with djinn, compiled in: (name, TOML text).
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "warm_pad",
        include_str!("../../../profiles/presets/warm_pad.toml"),
    ),
    (
        "supersaw_pad",
        include_str!("../../../profiles/presets/supersaw_pad.toml"),
    ),
    (
        "choir_pad",
        include_str!("../../../profiles/presets/choir_pad.toml"),
    ),
    (
        "sub_bass",
        include_str!("../../../profiles/presets/sub_bass.toml"),
    ),
    (
        "acid_bass",
        include_str!("../../../profiles/presets/acid_bass.toml"),
    ),
    (
        "drill_808",
        include_str!("../../../profiles/presets/drill_808.toml"),
    ),
    (
        "pluck_lead",
        include_str!("../../../profiles/presets/pluck_lead.toml"),
    ),
    (
        "felt_piano",
        include_str!("../../../profiles/presets/felt_piano.toml"),
    ),
    (
        "glass_bell",
        include_str!("../../../profiles/presets/glass_bell.toml"),
    ),
    (
        "house_drums",
        include_str!("../../../profiles/presets/house_drums.toml"),
    ),
    (
        "drill_drums",
        include_str!("../../../profiles/presets/drill_drums.toml"),
    ),
    (
        "riser",
        include_str!("../../../profiles/presets/riser.toml"),
    ),
];

/// A preset file that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PresetFileError {
    pub path: PathBuf,
    pub message: String,
}

/// Parses one preset file; its name is the file stem.
pub fn parse_preset(name: &str, path: &Path, text: &str) -> Result<Preset, PresetFileError> {
    let err = |message: String| PresetFileError {
        path: path.to_owned(),
        message,
    };
    let mut preset: Preset = toml::from_str(&format!("name = {name:?}\n{text}"))
        .map_err(|e| err(e.message().to_owned()))?;
    preset.name = name.to_owned();
    preset.validate().map_err(|e| err(e.to_string()))?;
    Ok(preset)
}

/// The built-in presets, overlaid by `*.toml` files in `presets` directories.
pub fn load_presets(dirs: &[PathBuf]) -> (BTreeMap<String, Preset>, Vec<PresetFileError>) {
    let mut presets = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, text) in BUILT_IN {
        let path = PathBuf::from(format!("<built-in>/presets/{name}.toml"));
        match parse_preset(name, &path, text) {
            Ok(p) => {
                presets.insert(p.name.clone(), p);
            }
            Err(e) => errors.push(e),
        }
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| PresetFileError {
                    path: path.clone(),
                    message: e.to_string(),
                })
                .and_then(|text| parse_preset(&name, &path, &text));
            match parsed {
                Ok(p) => {
                    presets.insert(p.name.clone(), p);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    (presets, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> RenderContext {
        RenderContext {
            tempo: 120.0,
            key: "D minor".parse().unwrap(),
            meter: Meter::FOUR_FOUR,
        }
    }

    #[test]
    fn every_shipped_preset_parses_and_renders_to_the_contract() {
        let (presets, errors) = load_presets(&[]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(presets.len(), BUILT_IN.len());
        for preset in presets.values() {
            let r = render_preset(preset, context(), 4.0, -14.0, -1.0, 48_000).unwrap();
            assert_eq!(r.frames.len(), 192_000, "{}", preset.name);
            let target = preset.constraints.lufs_target.unwrap_or(-14.0);
            let ceiling = preset.constraints.true_peak_limit.unwrap_or(-1.0);
            assert!(
                (r.loudness.integrated_lufs - target).abs() <= 1.0,
                "{}: {:?}",
                preset.name,
                r.loudness
            );
            assert!(
                r.loudness.true_peak_dbtp <= ceiling,
                "{}: {:?}",
                preset.name,
                r.loudness
            );
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut preset = load_presets(&[]).0.remove("warm_pad").unwrap();
        preset.parameters.attack = Some(-1.0);
        assert_eq!(preset.validate().unwrap_err().field, "parameters.attack");
        preset.parameters.attack = None;
        preset.parameters.instrument = Some("acid".into());
        assert_eq!(
            preset.validate().unwrap_err().field,
            "parameters.instrument"
        );
        preset.parameters.instrument = None;
        preset.constraints.true_peak_limit = Some(3.0);
        assert_eq!(
            preset.validate().unwrap_err().field,
            "constraints.true_peak_limit"
        );
    }
}
