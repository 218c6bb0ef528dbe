//! Checking what a DJ script asked for against the set as it stands, before anything is
//! rendered or sent: unknown roles, a second bass, out-of-range tempi and settings are
//! refused here, each with the action it came from.

use std::collections::BTreeSet;

use serde::Serialize;

use djinn_engine::dsp::FilterMode;
use djinn_engine::music::Key;
use djinn_engine::profile::{Profile, ProfileSet};
use djinn_engine::synth::Role;
use djinn_engine::synth::render::MAX_LOOP_BARS;
use djinn_engine::transport::TEMPO_RANGE;

use super::script::ScriptAction;
use crate::audio::LayerPatch;

/// Where a layer action lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// On the phrase boundary being decided.
    Phrase,
    /// On the next bar line after it is ready.
    Bar,
}

/// Transitions the director performs around a phrase boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// A high-pass rises on every non-drum layer across the phrase; it opens again at the
    /// next boundary.
    FilterSweep,
    /// The layers this decision removes are thrown into the delay for their last bars.
    EchoOut,
    /// Replaces crossfade over the transition's length.
    Crossfade,
    /// Every filter opens at the boundary and an impact hits.
    Drop,
    /// Drums and bass leave at the boundary and the reverb opens for the phrase.
    Breakdown,
}

impl Transition {
    fn parse(kind: &str) -> Result<Transition, String> {
        Ok(match kind {
            "filter_sweep" => Transition::FilterSweep,
            "echo_out" => Transition::EchoOut,
            "crossfade" => Transition::Crossfade,
            "drop" => Transition::Drop,
            "breakdown" => Transition::Breakdown,
            other => {
                return Err(format!(
                    "unknown transition {other:?}: expected filter_sweep, echo_out, crossfade, drop or breakdown"
                ));
            }
        })
    }
}

/// Master effect changes; `None` keeps a setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FxPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverb_mix: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverb_size: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_beats: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_feedback: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_mix: Option<f32>,
}

impl FxPatch {
    pub fn apply(&self, mut fx: djinn_engine::mix::MasterFx) -> djinn_engine::mix::MasterFx {
        fx.reverb_mix = self.reverb_mix.unwrap_or(fx.reverb_mix);
        fx.reverb_size = self.reverb_size.unwrap_or(fx.reverb_size);
        fx.delay_beats = self.delay_beats.unwrap_or(fx.delay_beats);
        fx.delay_feedback = self.delay_feedback.unwrap_or(fx.delay_feedback);
        fx.delay_mix = self.delay_mix.unwrap_or(fx.delay_mix);
        fx
    }
}

/// A loop from a file, for an add or a replace: fitted to the set's tempo and key before it
/// plays.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopFile {
    pub path: std::path::PathBuf,
    /// The file's tempo; detected from its onsets when not given.
    pub bpm: Option<f64>,
    /// The file's key; it is transposed to the set's when given.
    pub key: Option<Key>,
}

fn loop_file(
    file: Option<String>,
    bpm: Option<f64>,
    key: Option<String>,
) -> Result<Option<LoopFile>, String> {
    let Some(file) = file else {
        if bpm.is_some() || key.is_some() {
            return Err("bpm and key describe a file: give file too".into());
        }
        return Ok(None);
    };
    let path = std::path::PathBuf::from(&file);
    if !path.is_file() {
        return Err(format!("file {file:?} is not a readable file"));
    }
    if let Some(b) = bpm
        && !TEMPO_RANGE.contains(&b)
    {
        return Err(format!("bpm {b} is outside 20–300"));
    }
    let key = key
        .map(|k| k.parse::<Key>().map_err(|e| format!("key: {e}")))
        .transpose()?;
    Ok(Some(LoopFile { path, bpm, key }))
}

/// An action that passed every check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Planned {
    Add {
        role: Role,
        prompt: String,
        bars: u32,
        /// None: the role's usual level in a mix.
        gain: Option<f32>,
        when: When,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<LoopFile>,
    },
    Replace {
        role: Role,
        prompt: String,
        bars: u32,
        gain: Option<f32>,
        when: When,
        crossfade_beats: Option<f32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<LoopFile>,
    },
    Remove {
        role: Role,
        when: When,
    },
    SetLayer {
        role: Role,
        #[serde(flatten)]
        patch: LayerPatch,
    },
    Fx {
        patch: FxPatch,
    },
    Tempo {
        bpm: f64,
        ramp_phrases: u32,
    },
    Key {
        key: Key,
    },
    Style {
        style: String,
    },
    Transition {
        kind: Transition,
        bars: u32,
    },
    Say {
        text: String,
    },
    Energy {
        target: f64,
    },
}

/// The gain a layer of `role` gets unless the script says otherwise. Every loop arrives
/// mastered to the style's loudness, so a full mix needs them well below unity.
pub fn role_gain(role: Role) -> f32 {
    match role {
        Role::Drum => 0.7,
        Role::Bass => 0.55,
        Role::Pad => 0.35,
        Role::Lead => 0.4,
        Role::Fx => 0.3,
    }
}

/// An action that did not pass, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    /// Its place in the script's list, from 0.
    pub index: usize,
    /// The constructor (`add`, `tempo`, …), or `?` when the value was not an action.
    pub action: String,
    pub reason: String,
}

/// What the checks need to know about the set.
pub struct Context<'a> {
    pub profile: &'a Profile,
    pub profiles: &'a ProfileSet,
    /// Roles playing now.
    pub playing: BTreeSet<Role>,
    /// Roles the set may use (`dj.set stems`).
    pub stems: &'a BTreeSet<Role>,
}

fn role(name: &str, stems: &BTreeSet<Role>) -> Result<Role, String> {
    let role: Role = name.parse()?;
    if !stems.contains(&role) {
        let allowed: Vec<&str> = stems.iter().map(|r| r.name()).collect();
        return Err(format!(
            "role {role} is not among this set's stems ({})",
            allowed.join(", ")
        ));
    }
    Ok(role)
}

fn ranged(field: &str, value: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, String> {
    match value {
        Some(v) if !(v.is_finite() && (lo..=hi).contains(&v)) => {
            Err(format!("{field} {v} is out of range {lo} to {hi}"))
        }
        v => Ok(v.map(|v| v as f32)),
    }
}

fn bars(value: Option<i64>, default: u32) -> Result<u32, String> {
    match value {
        None => Ok(default),
        Some(b) if (1..=i64::from(MAX_LOOP_BARS)).contains(&b) => Ok(b as u32),
        Some(b) => Err(format!("bars {b} is out of range 1 to {MAX_LOOP_BARS}")),
    }
}

fn when(value: Option<&str>, default: When) -> Result<When, String> {
    match value {
        None => Ok(default),
        Some("phrase") => Ok(When::Phrase),
        Some("bar") => Ok(When::Bar),
        Some(other) => Err(format!("quantize {other:?}: expected phrase or bar")),
    }
}

fn prompt(text: String) -> Result<String, String> {
    match text.trim() {
        "" => Err("the prompt is empty".into()),
        t if t.len() > 500 => Err("the prompt is over 500 bytes".into()),
        t => Ok(t.to_owned()),
    }
}

/// Checks the actions in order, as if each accepted one had already happened (so `remove`
/// then `add` of a bass is fine, two `add`s of a bass are not). `default_when` is where
/// layer actions land unless they say otherwise.
pub fn check(
    actions: Vec<Result<ScriptAction, String>>,
    context: &mut Context<'_>,
    default_when: When,
) -> (Vec<Planned>, Vec<Rejected>) {
    let mut planned = Vec::new();
    let mut rejected = Vec::new();
    let default_bars = context.profile.phrase_bars.clamp(1, 8);
    for (index, action) in actions.into_iter().enumerate() {
        let action = match action {
            Ok(a) => a,
            Err(reason) => {
                rejected.push(Rejected {
                    index,
                    action: "?".into(),
                    reason,
                });
                continue;
            }
        };
        let name = action.name();
        match one(action, context, default_bars, default_when) {
            Ok(p) => planned.push(p),
            Err(reason) => rejected.push(Rejected {
                index,
                action: name.into(),
                reason,
            }),
        }
    }
    (planned, rejected)
}

fn one(
    action: ScriptAction,
    cx: &mut Context<'_>,
    default_bars: u32,
    default_when: When,
) -> Result<Planned, String> {
    Ok(match action {
        ScriptAction::Add {
            role: r,
            prompt: p,
            bars: b,
            gain,
            quantize,
            file,
            bpm,
            key,
        } => {
            let role = role(&r, cx.stems)?;
            if cx.playing.contains(&role) {
                return Err(format!(
                    "a {role} layer already plays: replace it, or remove it first"
                ));
            }
            let planned = Planned::Add {
                role,
                prompt: prompt(p)?,
                bars: bars(b, default_bars)?,
                gain: ranged("gain", gain, 0.0, 4.0)?,
                when: when(quantize.as_deref(), default_when)?,
                file: loop_file(file, bpm, key)?,
            };
            cx.playing.insert(role);
            planned
        }
        ScriptAction::Replace {
            role: r,
            prompt: p,
            bars: b,
            gain,
            quantize,
            crossfade_beats,
            file,
            bpm,
            key,
        } => {
            let role = role(&r, cx.stems)?;
            if !cx.playing.contains(&role) {
                return Err(format!("no {role} layer plays: add one instead"));
            }
            Planned::Replace {
                role,
                prompt: prompt(p)?,
                bars: bars(b, default_bars)?,
                gain: ranged("gain", gain, 0.0, 4.0)?,
                when: when(quantize.as_deref(), default_when)?,
                crossfade_beats: ranged("crossfade_beats", crossfade_beats, 0.0, 64.0)?,
                file: loop_file(file, bpm, key)?,
            }
        }
        ScriptAction::Remove { role: r, quantize } => {
            let role: Role = r.parse()?;
            if !cx.playing.remove(&role) {
                return Err(format!("no {role} layer plays"));
            }
            Planned::Remove {
                role,
                when: when(quantize.as_deref(), default_when)?,
            }
        }
        ScriptAction::SetLayer {
            role: r,
            gain,
            pan,
            filter,
            cutoff_hz,
            resonance,
            reverb_send,
            delay_send,
        } => {
            let role: Role = r.parse()?;
            if !cx.playing.contains(&role) {
                return Err(format!("no {role} layer plays"));
            }
            let filter = filter
                .map(|f| match f.as_str() {
                    "off" => Ok(FilterMode::Off),
                    "lowpass" => Ok(FilterMode::LowPass),
                    "highpass" => Ok(FilterMode::HighPass),
                    "bandpass" => Ok(FilterMode::BandPass),
                    other => Err(format!(
                        "filter {other:?}: expected off, lowpass, highpass or bandpass"
                    )),
                })
                .transpose()?;
            Planned::SetLayer {
                role,
                patch: LayerPatch {
                    gain: ranged("gain", gain, 0.0, 4.0)?,
                    pan: ranged("pan", pan, -1.0, 1.0)?,
                    mute: None,
                    solo: None,
                    filter,
                    cutoff_hz: ranged("cutoff_hz", cutoff_hz, 20.0, 20_000.0)?,
                    resonance: ranged("resonance", resonance, 0.0, 1.0)?,
                    reverb_send: ranged("reverb_send", reverb_send, 0.0, 1.0)?,
                    delay_send: ranged("delay_send", delay_send, 0.0, 1.0)?,
                },
            }
        }
        ScriptAction::Fx {
            reverb_mix,
            reverb_size,
            delay_beats,
            delay_feedback,
            delay_mix,
        } => Planned::Fx {
            patch: FxPatch {
                reverb_mix: ranged("reverb_mix", reverb_mix, 0.0, 1.0)?,
                reverb_size: ranged("reverb_size", reverb_size, 0.0, 1.0)?,
                delay_beats: ranged("delay_beats", delay_beats, 0.0625, 4.0)?,
                delay_feedback: ranged("delay_feedback", delay_feedback, 0.0, 0.95)?,
                delay_mix: ranged("delay_mix", delay_mix, 0.0, 1.0)?,
            },
        },
        ScriptAction::Tempo { bpm, ramp_phrases } => {
            let t = cx.profile.tempo;
            if !(bpm.is_finite() && TEMPO_RANGE.contains(&bpm)) {
                return Err(format!("{bpm} BPM is out of range: djinn plays 20 to 300"));
            }
            if !(t.min..=t.max).contains(&bpm) {
                return Err(format!(
                    "{bpm} BPM is outside {}'s range {} to {} (change the style first)",
                    cx.profile.name, t.min, t.max
                ));
            }
            let ramp = match ramp_phrases {
                None => 0,
                Some(r) if (0..=16).contains(&r) => r as u32,
                Some(r) => return Err(format!("ramp_phrases {r} is out of range 0 to 16")),
            };
            Planned::Tempo {
                bpm,
                ramp_phrases: ramp,
            }
        }
        ScriptAction::Key { key } => Planned::Key {
            key: key.parse::<Key>().map_err(|e| e.to_string())?,
        },
        ScriptAction::Style { style } => {
            if cx.profiles.get(&style).is_none() {
                return Err(format!("no style profile named {style:?}"));
            }
            Planned::Style { style }
        }
        ScriptAction::Transition { kind, bars: b } => {
            let kind = Transition::parse(&kind)?;
            let phrase = cx.profile.phrase_bars.max(1);
            let default = match kind {
                Transition::FilterSweep => phrase,
                Transition::EchoOut | Transition::Crossfade => 1,
                Transition::Drop | Transition::Breakdown => phrase,
            };
            let bars = match b {
                None => default,
                Some(b) if (1..=i64::from(phrase)).contains(&b) => b as u32,
                Some(b) => return Err(format!("bars {b} is out of range 1 to {phrase}")),
            };
            let bars = if kind == Transition::EchoOut {
                bars.min(super::LEAD_BARS)
            } else {
                bars
            };
            if kind == Transition::Breakdown {
                cx.playing.remove(&Role::Drum);
                cx.playing.remove(&Role::Bass);
            }
            Planned::Transition { kind, bars }
        }
        ScriptAction::Say { text } => match text.trim() {
            "" => return Err("say() needs words".into()),
            t if t.len() > 500 => return Err("say() text is over 500 bytes".into()),
            t => Planned::Say { text: t.to_owned() },
        },
        ScriptAction::Energy { target } => {
            if !(target.is_finite() && (0.0..=1.0).contains(&target)) {
                return Err(format!("energy {target} is out of range 0 to 1"));
            }
            Planned::Energy { target }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ProfileSet {
        ProfileSet::built_in()
    }

    fn cx<'a>(
        profile: &'a Profile,
        profiles: &'a ProfileSet,
        stems: &'a BTreeSet<Role>,
    ) -> Context<'a> {
        Context {
            profile,
            profiles,
            playing: [Role::Bass].into(),
            stems,
        }
    }

    fn add(role: &str) -> Result<ScriptAction, String> {
        Ok(ScriptAction::Add {
            role: role.into(),
            prompt: "something".into(),
            bars: None,
            gain: None,
            quantize: None,
            file: None,
            bpm: None,
            key: None,
        })
    }

    #[test]
    fn unknown_roles_second_basses_and_wild_tempi_are_refused_by_name() {
        let profiles = set();
        let profile = profiles.get("techno_minimal").unwrap().clone();
        let stems: BTreeSet<Role> = Role::ALL.into();
        let mut cx = cx(&profile, &profiles, &stems);
        let actions = vec![
            add("kazoo"),
            add("bass"),
            add("pad"),
            Ok(ScriptAction::Tempo {
                bpm: 174.0,
                ramp_phrases: None,
            }),
            Ok(ScriptAction::Tempo {
                bpm: 128.0,
                ramp_phrases: Some(2),
            }),
            Ok(ScriptAction::Transition {
                kind: "teleport".into(),
                bars: None,
            }),
        ];
        let (planned, rejected) = check(actions, &mut cx, When::Phrase);
        let names: Vec<(usize, &str)> = rejected
            .iter()
            .map(|r| (r.index, r.action.as_str()))
            .collect();
        assert_eq!(
            names,
            [(0, "add"), (1, "add"), (3, "tempo"), (5, "transition")]
        );
        assert!(rejected[0].reason.contains("unknown role"));
        assert!(rejected[1].reason.contains("already plays"));
        assert!(rejected[2].reason.contains("122"));
        assert_eq!(planned.len(), 2);
    }

    #[test]
    fn a_remove_makes_room_for_an_add_and_stems_are_enforced() {
        let profiles = set();
        let profile = profiles.get("hip_hop").unwrap().clone();
        let stems: BTreeSet<Role> = [Role::Drum, Role::Bass].into();
        let mut cx = cx(&profile, &profiles, &stems);
        let actions = vec![
            Ok(ScriptAction::Remove {
                role: "bass".into(),
                quantize: None,
            }),
            add("bass"),
            add("lead"),
        ];
        let (planned, rejected) = check(actions, &mut cx, When::Phrase);
        assert_eq!(planned.len(), 2);
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].reason.contains("stems"), "{rejected:?}");
    }
}
