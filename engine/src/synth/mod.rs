//! The procedural generator: synthesized instruments for every role, rhythm patterns per
//! groove, harmony from the key, and the renderers that turn a [`Recipe`] into seamless
//! loops and arranged songs that meet the loudness contract.
//!
//! Everything here runs ahead of the mixer (in the generator actor or the `djinn generate`
//! command), never on the JACK thread. Output is a pure function of the recipe and the
//! seed: the same inputs give the same samples on every run.

mod drums;
mod instruments;
pub mod pattern;
pub mod preset;
pub mod render;
pub mod voice;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::music::{Key, Meter};

pub use pattern::SectionKind;
pub use render::{Rendered, Section, SongPlan, render_loop, render_song};

/// What a part does in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Pad,
    Bass,
    Lead,
    Drum,
    Fx,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Pad, Role::Bass, Role::Lead, Role::Drum, Role::Fx];

    pub fn name(self) -> &'static str {
        match self {
            Role::Pad => "pad",
            Role::Bass => "bass",
            Role::Lead => "lead",
            Role::Drum => "drum",
            Role::Fx => "fx",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| format!("unknown role {text:?}: expected pad, bass, lead, drum or fx"))
    }
}

/// Every instrument the synth plays, grouped by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instrument {
    // pad
    Supersaw,
    WarmPad,
    Strings,
    Choir,
    BellPad,
    // bass
    Sub,
    Acid,
    Reese,
    Bass808,
    // lead
    MonoLead,
    Pluck,
    Arp,
    Piano,
    Bell,
    // drum
    Kit,
    Kit808,
    BreaksKit,
    SoftKit,
    // fx
    Riser,
    Downlifter,
    Impact,
    NoiseSweep,
}

impl Instrument {
    pub const ALL: [Instrument; 22] = [
        Instrument::Supersaw,
        Instrument::WarmPad,
        Instrument::Strings,
        Instrument::Choir,
        Instrument::BellPad,
        Instrument::Sub,
        Instrument::Acid,
        Instrument::Reese,
        Instrument::Bass808,
        Instrument::MonoLead,
        Instrument::Pluck,
        Instrument::Arp,
        Instrument::Piano,
        Instrument::Bell,
        Instrument::Kit,
        Instrument::Kit808,
        Instrument::BreaksKit,
        Instrument::SoftKit,
        Instrument::Riser,
        Instrument::Downlifter,
        Instrument::Impact,
        Instrument::NoiseSweep,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Instrument::Supersaw => "supersaw",
            Instrument::WarmPad => "warm_pad",
            Instrument::Strings => "strings",
            Instrument::Choir => "choir",
            Instrument::BellPad => "bell_pad",
            Instrument::Sub => "sub",
            Instrument::Acid => "acid",
            Instrument::Reese => "reese",
            Instrument::Bass808 => "808",
            Instrument::MonoLead => "mono_lead",
            Instrument::Pluck => "pluck",
            Instrument::Arp => "arp",
            Instrument::Piano => "piano",
            Instrument::Bell => "bell",
            Instrument::Kit => "kit",
            Instrument::Kit808 => "808_kit",
            Instrument::BreaksKit => "breaks_kit",
            Instrument::SoftKit => "soft_kit",
            Instrument::Riser => "riser",
            Instrument::Downlifter => "downlifter",
            Instrument::Impact => "impact",
            Instrument::NoiseSweep => "noise_sweep",
        }
    }

    pub fn role(self) -> Role {
        use Instrument::*;
        match self {
            Supersaw | WarmPad | Strings | Choir | BellPad => Role::Pad,
            Sub | Acid | Reese | Bass808 => Role::Bass,
            MonoLead | Pluck | Arp | Piano | Bell => Role::Lead,
            Kit | Kit808 | BreaksKit | SoftKit => Role::Drum,
            Riser | Downlifter | Impact | NoiseSweep => Role::Fx,
        }
    }

    /// The instrument a role gets when nothing more specific was asked for.
    pub fn default_for(role: Role, groove: Groove) -> Instrument {
        use Groove::*;
        match (role, groove) {
            (Role::Pad, Ambient) => Instrument::WarmPad,
            (Role::Pad, Drill | HalfTime) => Instrument::Strings,
            (Role::Pad, FourOnTheFloor) => Instrument::Supersaw,
            (Role::Pad, _) => Instrument::WarmPad,
            (Role::Bass, Drill | BoomBap) => Instrument::Bass808,
            (Role::Bass, Breakbeat) => Instrument::Reese,
            (Role::Bass, _) => Instrument::Sub,
            (Role::Lead, Drill | HalfTime) => Instrument::Piano,
            (Role::Lead, FourOnTheFloor) => Instrument::Arp,
            (Role::Lead, Ambient) => Instrument::Bell,
            (Role::Lead, _) => Instrument::Pluck,
            (Role::Drum, Drill | BoomBap) => Instrument::Kit808,
            (Role::Drum, Breakbeat | Rock | OneDrop) => Instrument::BreaksKit,
            (Role::Drum, Ambient) => Instrument::SoftKit,
            (Role::Drum, _) => Instrument::Kit,
            (Role::Fx, Ambient) => Instrument::NoiseSweep,
            (Role::Fx, _) => Instrument::Riser,
        }
    }
}

impl Serialize for Instrument {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Instrument {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Instrument {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Instrument::ALL
            .into_iter()
            .find(|i| i.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Instrument::ALL.iter().map(|i| i.name()).collect();
                format!(
                    "unknown instrument {text:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The rhythmic feel of a style: where kicks, snares and hats fall, and how bass and
/// chords move against them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Groove {
    /// Kick on every beat, claps on 2 and 4, off-beat hats (house, techno).
    #[default]
    FourOnTheFloor,
    /// Syncopated kicks, snares on 2 and 4, busy hats and ghost notes (jungle, drum & bass).
    Breakbeat,
    /// Snare on 3: the bar feels half as fast (trip hop, dubstep).
    HalfTime,
    /// Sparse syncopated kicks, late snares on 3, triplet hi-hat rolls (UK drill).
    Drill,
    /// Swung kicks and snares on 2 and 4 (hip hop).
    BoomBap,
    /// Kick on 1 and 3, snare on 2 and 4, straight eighths (rock).
    Rock,
    /// Kick and rim together on 3, the "one drop" (dub, reggae).
    OneDrop,
    /// No kit: soft pulses and shakers under long pads (ambient, sleep).
    Ambient,
}

impl Groove {
    pub const ALL: [Groove; 8] = [
        Groove::FourOnTheFloor,
        Groove::Breakbeat,
        Groove::HalfTime,
        Groove::Drill,
        Groove::BoomBap,
        Groove::Rock,
        Groove::OneDrop,
        Groove::Ambient,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Groove::FourOnTheFloor => "four_on_the_floor",
            Groove::Breakbeat => "breakbeat",
            Groove::HalfTime => "half_time",
            Groove::Drill => "drill",
            Groove::BoomBap => "boom_bap",
            Groove::Rock => "rock",
            Groove::OneDrop => "one_drop",
            Groove::Ambient => "ambient",
        }
    }

    /// Dance grooves build to drops; the others have verses.
    pub fn has_drops(self) -> bool {
        matches!(
            self,
            Groove::FourOnTheFloor | Groove::Breakbeat | Groove::Drill
        )
    }
}

impl fmt::Display for Groove {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Groove {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Groove::ALL
            .into_iter()
            .find(|g| g.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Groove::ALL.iter().map(|g| g.name()).collect();
                format!(
                    "unknown groove {text:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl Serialize for Groove {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Groove {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything the generator needs to know to play: the musical context, the parts, the
/// character and the loudness contract. The mood scripts build one from a prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recipe {
    pub tempo: f64,
    pub key: Key,
    pub meter: Meter,
    pub groove: Groove,
    /// Off-beat sixteenths are late by this fraction of a sixteenth, 0–0.5.
    pub swing: f32,
    /// The instruments playing, at most one per role.
    pub parts: Vec<Instrument>,
    /// How busy and driven: 0 (sparse) – 1 (full).
    pub intensity: f32,
    /// Dark (0) to bright (1): filter cutoffs and voicing height.
    pub brightness: f32,
    /// Reverb send, 0–1.
    pub space: f32,
    /// Integrated loudness target, LUFS.
    pub target_lufs: f64,
    /// True-peak ceiling, dBTP.
    pub ceiling_dbtp: f64,
}

impl Recipe {
    /// The default recipe of a style profile: its tempo, key, groove and effects, and the
    /// default instrument for every role.
    pub fn from_profile(profile: &crate::profile::Profile) -> Recipe {
        let groove = profile.groove;
        Recipe {
            tempo: profile.tempo.default,
            key: profile.key,
            meter: profile.meter,
            groove,
            swing: profile.effects.swing as f32,
            parts: Role::ALL
                .iter()
                .map(|&r| Instrument::default_for(r, groove))
                .collect(),
            intensity: 0.6,
            brightness: 0.5,
            space: profile.effects.reverb_mix as f32,
            target_lufs: profile.loudness.target_lufs,
            ceiling_dbtp: profile.loudness.true_peak_dbtp,
        }
    }

    /// What a file of this recipe's music, `seconds` long, says of its timing: the tempo,
    /// the beats it lasts, the meter and the key's tonic.
    pub fn loop_info(&self, seconds: f64) -> crate::wav::LoopInfo {
        crate::wav::LoopInfo::lasting(self.tempo, self.meter, Some(self.key.tonic), seconds)
    }

    /// The instrument playing `role`, if any.
    pub fn instrument(&self, role: Role) -> Option<Instrument> {
        self.parts.iter().copied().find(|i| i.role() == role)
    }

    /// The same recipe with only the part for `role` (the profile default when the recipe
    /// has none).
    pub fn only(&self, role: Role) -> Recipe {
        let instrument = self
            .instrument(role)
            .unwrap_or_else(|| Instrument::default_for(role, self.groove));
        Recipe {
            parts: vec![instrument],
            ..self.clone()
        }
    }
}

/// The time grid a score is rendered on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub sample_rate: u32,
    pub tempo: f64,
    pub beats_per_bar: u32,
}

impl Grid {
    pub fn new(sample_rate: u32, tempo: f64, meter: Meter) -> Grid {
        Grid {
            sample_rate,
            tempo,
            beats_per_bar: u32::from(meter.beats_per_bar.max(1)),
        }
    }

    pub fn frames_per_beat(&self) -> f64 {
        f64::from(self.sample_rate) * 60.0 / self.tempo
    }

    /// The frame a beat position falls on.
    pub fn frame(&self, beat: f64) -> usize {
        (beat * self.frames_per_beat()).round().max(0.0) as usize
    }

    /// Frames in `bars` bars, exactly (rounded once, so loops tile without drift).
    pub fn bar_frames(&self, bars: u32) -> usize {
        self.frame(f64::from(bars * self.beats_per_bar))
    }

    pub fn seconds(&self, beats: f64) -> f32 {
        (beats * 60.0 / self.tempo) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for i in Instrument::ALL {
            assert_eq!(i.name().parse::<Instrument>(), Ok(i));
        }
        for g in Groove::ALL {
            assert_eq!(g.name().parse::<Groove>(), Ok(g));
        }
        for r in Role::ALL {
            assert_eq!(r.name().parse::<Role>(), Ok(r));
        }
        assert!(
            "kazoo"
                .parse::<Instrument>()
                .unwrap_err()
                .contains("supersaw")
        );
    }

    #[test]
    fn every_groove_has_an_instrument_of_the_right_role() {
        for g in Groove::ALL {
            for r in Role::ALL {
                assert_eq!(Instrument::default_for(r, g).role(), r);
            }
        }
    }

    #[test]
    fn bars_are_exact_frames() {
        let grid = Grid::new(48_000, 120.0, Meter::FOUR_FOUR);
        assert_eq!(grid.bar_frames(8), 8 * 96_000);
        let grid = Grid::new(48_000, 123.4, Meter::FOUR_FOUR);
        assert_eq!(
            grid.bar_frames(8),
            (32.0 * 48_000.0 * 60.0 / 123.4_f64).round() as usize
        );
    }
}
