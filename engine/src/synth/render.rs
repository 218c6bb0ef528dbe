//! Rendering: phrases into stereo, loops folded seamless at their bar length, songs
//! arranged into sections, and the master stage that meets the loudness contract.
//!
//! A phrase is rendered with its tail (note releases, reverb) and laid down by overlap-add,
//! so identical phrases are rendered once and reused: the synth and the reverb are linear
//! in the notes, so adding shifted copies sounds exactly like playing them in a row. Only
//! the limiter, which is not linear, runs over the whole piece.

use std::collections::HashMap;

use serde::Serialize;

use super::instruments::{self, Tone};
use super::pattern::{self, Phrase, SectionKind};
use super::{Grid, Instrument, Recipe, Role, drums};
use crate::analysis::loudness::{self, LoudnessError, LoudnessReport};
use crate::dsp::{Limiter, Reverb, db_to_gain};

/// Seconds of tail rendered after a phrase for releases and reverb.
const TAIL_S: f32 = 3.0;
/// Shortest and longest song, seconds.
pub const SONG_SECONDS: std::ops::RangeInclusive<f64> = 10.0..=3600.0;
/// Most bars in a loop.
pub const MAX_LOOP_BARS: u32 = 64;

/// What went wrong rendering.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("bars must be 1–{MAX_LOOP_BARS} (got {0})")]
    Bars(u32),
    #[error("song length must be 10 s to 1 h (got {0} s)")]
    Seconds(f64),
    #[error("tempo must be 20–300 BPM (got {0})")]
    Tempo(f64),
    #[error("the recipe has no parts to play")]
    NoParts,
    #[error(transparent)]
    Loudness(#[from] LoudnessError),
}

/// A section of a song.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Section {
    #[serde(serialize_with = "section_name")]
    pub kind: SectionKind,
    pub start_bar: u32,
    pub bars: u32,
    /// Where it starts, seconds.
    pub start_s: f64,
}

fn section_name<S: serde::Serializer>(kind: &SectionKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

/// Rendered audio with its loudness and (for songs) its sections.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub frames: Vec<[f32; 2]>,
    pub sample_rate: u32,
    pub loudness: LoudnessReport,
    pub sections: Vec<Section>,
}

/// Mix level and reverb send of each role, before the master normalises the whole.
fn role_levels(role: Role) -> (f32, f32) {
    match role {
        Role::Drum => (1.0, 0.05),
        Role::Bass => (0.75, 0.0),
        Role::Pad => (0.3, 0.5),
        Role::Lead => (0.32, 0.35),
        Role::Fx => (0.28, 0.45),
    }
}

/// A deterministic seed for one part of one phrase.
fn part_seed(seed: u64, kind: SectionKind, variant: u32, instrument: Instrument) -> u64 {
    let mut h = seed ^ 0x005e_ed0f_d11e;
    for x in [kind as u64, u64::from(variant), instrument as u64] {
        h = (h ^ x).wrapping_mul(0x100_0000_01b3).rotate_left(23);
    }
    h
}

/// Renders every part of `recipe` over `phrase` (dry parts plus their reverb), with
/// `TAIL_S` of tail after the phrase's last bar.
fn render_phrase(
    recipe: &Recipe,
    phrase: Phrase,
    grid: &Grid,
    seed: u64,
    variant: u32,
    reverb_size: f32,
) -> Vec<[f32; 2]> {
    let phrase_frames = grid.bar_frames(phrase.bars);
    let len = phrase_frames + (TAIL_S * grid.sample_rate as f32) as usize;
    let chords = pattern::chords(recipe, phrase.bars, seed);
    let mut dry = vec![[0.0f32; 2]; len];
    let mut send = vec![[0.0f32; 2]; len];
    let mut part = vec![[0.0f32; 2]; len];
    let mut any_send = false;
    let fpb = grid.frames_per_beat();
    for &instrument in &recipe.parts {
        let role = instrument.role();
        if !phrase.kind.plays(role) {
            continue;
        }
        let part_seed = part_seed(seed, phrase.kind, variant, instrument);
        let score = pattern::score(recipe, instrument, &chords, phrase, part_seed);
        part.iter_mut().for_each(|f| *f = [0.0; 2]);
        if role == Role::Drum {
            let kick = pattern::kick_hz(recipe.key);
            drums::render_hits(
                instrument,
                &score.hits,
                fpb,
                kick,
                grid.sample_rate,
                part_seed,
                &mut part,
            );
        } else {
            // Fx parts may mix several sounds; render each instrument's notes in turn.
            let mut by_instrument: Vec<Instrument> =
                score.notes.iter().map(|n| n.instrument).collect();
            by_instrument.sort();
            by_instrument.dedup();
            for inst in by_instrument {
                let notes: Vec<_> = score
                    .notes
                    .iter()
                    .copied()
                    .filter(|n| n.instrument == inst)
                    .collect();
                instruments::render_notes(
                    inst,
                    &notes,
                    fpb,
                    Tone::brightness(recipe.brightness),
                    grid.sample_rate,
                    part_seed,
                    &mut part,
                );
            }
        }
        let (level, send_level) = role_levels(role);
        let send_level = send_level * (0.4 + 1.6 * recipe.space);
        any_send |= send_level > 0.0;
        for ((d, s), p) in dry.iter_mut().zip(send.iter_mut()).zip(&part) {
            d[0] += p[0] * level;
            d[1] += p[1] * level;
            s[0] += p[0] * level * send_level;
            s[1] += p[1] * level * send_level;
        }
    }
    if any_send {
        let mut reverb = Reverb::new(grid.sample_rate as f32);
        reverb.set(reverb_size, 0.45);
        for (d, s) in dry.iter_mut().zip(&send) {
            let wet = reverb.process(*s);
            d[0] += wet[0];
            d[1] += wet[1];
        }
    }
    // The tail is cut: fade its last half second so the cut is silent.
    let fade = (grid.sample_rate / 2) as usize;
    let fade_start = len - fade;
    for (i, f) in dry[fade_start..].iter_mut().enumerate() {
        let g = 1.0 - i as f32 / fade as f32;
        f[0] *= g;
        f[1] *= g;
    }
    dry
}

fn check(recipe: &Recipe) -> Result<(), RenderError> {
    if !(20.0..=300.0).contains(&recipe.tempo) {
        return Err(RenderError::Tempo(recipe.tempo));
    }
    if recipe.parts.is_empty() {
        return Err(RenderError::NoParts);
    }
    Ok(())
}

/// A loop exactly `bars` bars long at the recipe's tempo, seamless at the wrap: the tail
/// of its last notes is folded onto its start, and the master runs over it as over an
/// endless repetition.
pub fn render_loop(
    recipe: &Recipe,
    bars: u32,
    seed: u64,
    sample_rate: u32,
) -> Result<Rendered, RenderError> {
    check(recipe)?;
    if !(1..=MAX_LOOP_BARS).contains(&bars) {
        return Err(RenderError::Bars(bars));
    }
    let grid = Grid::new(sample_rate, recipe.tempo, recipe.meter);
    let phrase = Phrase {
        kind: SectionKind::Loop,
        bars,
        intensity: recipe.intensity,
        fill: bars >= 4,
    };
    let rendered = render_phrase(recipe, phrase, &grid, seed, 0, 0.3 + 0.6 * recipe.space);
    let len = grid.bar_frames(bars);
    let mut frames = vec![[0.0f32; 2]; len];
    for (i, f) in rendered.iter().enumerate() {
        let slot = &mut frames[i % len];
        slot[0] += f[0];
        slot[1] += f[1];
    }
    let loudness = master(&mut frames, recipe, sample_rate, true)?;
    Ok(Rendered {
        frames,
        sample_rate,
        loudness,
        sections: vec![Section {
            kind: SectionKind::Loop,
            start_bar: 0,
            bars,
            start_s: 0.0,
        }],
    })
}

/// Sections with their weights.
type Layout<'a> = &'a [(SectionKind, u32)];

/// The sections of a song of `total_bars` bars in `recipe`'s style: intro, build, drop or
/// verse, breakdown, drop, outro, with the middle repeated for long songs.
pub fn plan(recipe: &Recipe, total_bars: u32, phrase_bars: u32) -> Vec<Section> {
    use SectionKind::*;
    let main = if recipe.groove.has_drops() {
        Drop
    } else {
        Verse
    };
    // Weights of the sections of one cycle; long songs repeat the middle.
    // Sections are whole multiples of four bars (or of the phrase, when shorter).
    let unit = phrase_bars.clamp(1, 4);
    let units = total_bars.div_ceil(unit).max(1);
    let (head, middle, tail): (Layout, Layout, Layout) = if units < 8 {
        // Too short for a journey: in, the groove, out.
        (&[(Intro, 1)], &[(main, 2)], &[(Outro, 1)])
    } else {
        (
            &[(Intro, 2), (Build, 1)],
            &[(main, 4), (Breakdown, 2), (Build, 1), (main, 4)],
            &[(Outro, 2)],
        )
    };
    let weight = |s: &[(SectionKind, u32)]| s.iter().map(|x| x.1).sum::<u32>();
    let base = weight(head) + weight(middle) + weight(tail);
    // Long songs: repeat the middle so that sections stay a few phrases long.
    let cycles = (units / (base * 2)).max(1);
    let mut layout: Vec<(SectionKind, u32)> = head.to_vec();
    for _ in 0..cycles {
        layout.extend_from_slice(middle);
    }
    layout.extend_from_slice(tail);
    let total_weight: u32 = layout.iter().map(|x| x.1).sum();
    // Share the phrases out by weight; short songs drop the sections that get none.
    let mut sections = Vec::new();
    let mut assigned = 0u32;
    let mut acc = 0u32;
    for (kind, w) in layout {
        acc += w;
        let upto = (u64::from(units) * u64::from(acc) / u64::from(total_weight)) as u32;
        let n = upto.saturating_sub(assigned);
        if n > 0 {
            sections.push((kind, n * unit));
            assigned = upto;
        }
    }
    // The last section absorbs the rounding to the exact bar count.
    let mut start = 0u32;
    let mut out = Vec::new();
    let count = sections.len();
    for (i, (kind, mut bars)) in sections.into_iter().enumerate() {
        if i + 1 == count {
            bars = total_bars.saturating_sub(start).max(1);
        }
        if start >= total_bars {
            break;
        }
        bars = bars.min(total_bars - start);
        out.push(Section {
            kind,
            start_bar: start,
            bars,
            start_s: f64::from(start) * f64::from(recipe.meter.beats_per_bar) * 60.0 / recipe.tempo,
        });
        start += bars;
    }
    out
}

/// The plan of a song before it is rendered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SongPlan {
    pub seconds: f64,
    pub bars: u32,
    pub sections: Vec<Section>,
}

/// How hard each section drives.
fn intensity(kind: SectionKind, base: f32) -> f32 {
    let shift = match kind {
        SectionKind::Intro | SectionKind::Outro => -0.3,
        SectionKind::Build => -0.1,
        SectionKind::Breakdown => -0.35,
        SectionKind::Drop => 0.25,
        SectionKind::Verse | SectionKind::Loop => 0.0,
    };
    (base + shift).clamp(0.05, 1.0)
}

/// A whole song exactly `seconds` long, arranged in sections, mastered to the contract.
/// `progress` is called with the fraction done (0–1) as rendering goes.
pub fn render_song(
    recipe: &Recipe,
    seconds: f64,
    phrase_bars: u32,
    seed: u64,
    sample_rate: u32,
    progress: &mut dyn FnMut(f64),
) -> Result<Rendered, RenderError> {
    check(recipe)?;
    if !SONG_SECONDS.contains(&seconds) || !seconds.is_finite() {
        return Err(RenderError::Seconds(seconds));
    }
    let grid = Grid::new(sample_rate, recipe.tempo, recipe.meter);
    let total_frames = (seconds * f64::from(sample_rate)).round() as usize;
    let bar_frames = grid.bar_frames(1) as f64;
    let total_bars = (total_frames as f64 / bar_frames).ceil() as u32;
    let sections = plan(recipe, total_bars, phrase_bars);
    // Songs are laid down four bars at a time (fewer when the style's phrase is shorter):
    // the patterns repeat within that, so each distinct four bars is rendered once.
    let phrase_bars = phrase_bars.clamp(1, 4);
    let tail = (TAIL_S * sample_rate as f32) as usize;
    let mut frames = vec![[0.0f32; 2]; total_frames + tail];
    let mut cache: HashMap<(SectionKind, u32, u32, bool), Vec<[f32; 2]>> = HashMap::new();
    let reverb_size = 0.3 + 0.6 * recipe.space;
    let phrases: Vec<(Section, u32, u32)> = sections
        .iter()
        .flat_map(|s| {
            let count = s.bars.div_ceil(phrase_bars);
            (0..count).map(move |i| {
                let start = s.start_bar + i * phrase_bars;
                let bars = phrase_bars.min(s.start_bar + s.bars - start);
                (*s, start, bars)
            })
        })
        .collect();
    let count = phrases.len().max(1);
    for (done, (section, start_bar, bars)) in phrases.into_iter().enumerate() {
        // Alternate two variants so repeated phrases answer each other; the second of each
        // pair, and the last of a section, ends in a fill.
        let index = (start_bar - section.start_bar) / phrase_bars;
        let variant = index % 2;
        let fill =
            bars >= 4 && (variant == 1 || start_bar + bars == section.start_bar + section.bars);
        let phrase = Phrase {
            kind: section.kind,
            bars,
            intensity: intensity(section.kind, recipe.intensity),
            fill,
        };
        let audio = cache
            .entry((section.kind, bars, variant, fill))
            .or_insert_with(|| {
                render_phrase(
                    recipe,
                    phrase,
                    &grid,
                    seed ^ u64::from(variant),
                    variant,
                    reverb_size,
                )
            });
        let offset = grid.frame(f64::from(start_bar * u32::from(recipe.meter.beats_per_bar)));
        if let Some(dest) = frames.get_mut(offset..) {
            for (d, s) in dest.iter_mut().zip(audio.iter()) {
                d[0] += s[0];
                d[1] += s[1];
            }
        }
        progress(0.8 * (done + 1) as f64 / count as f64);
    }
    frames.truncate(total_frames);
    // Fade the end out over the last bar (at most 4 s) so the exact length ends cleanly.
    let fade = (bar_frames as usize)
        .min(4 * sample_rate as usize)
        .min(total_frames / 4);
    let fade_start = total_frames - fade;
    for (i, f) in frames[fade_start..].iter_mut().enumerate() {
        let g = 1.0 - i as f32 / fade as f32;
        let g = g * g;
        f[0] *= g;
        f[1] *= g;
    }
    let loudness = master(&mut frames, recipe, sample_rate, false)?;
    progress(1.0);
    Ok(Rendered {
        frames,
        sample_rate,
        loudness,
        sections,
    })
}

/// Brings `frames` to the recipe's loudness target with its true peak under the ceiling:
/// gain, then the lookahead limiter, measured and corrected. With `circular`, the audio is
/// a loop and is processed as one pass of an endless repetition, so it stays seamless.
pub fn master(
    frames: &mut [[f32; 2]],
    recipe: &Recipe,
    sample_rate: u32,
    circular: bool,
) -> Result<LoudnessReport, RenderError> {
    let before = loudness::integrated(frames, sample_rate)?;
    if !before.is_finite() {
        return Ok(loudness::measure(frames, sample_rate)?);
    }
    let target = recipe.target_lufs;
    let dry = frames.to_vec();
    // The limiter takes some loudness away; aim a little above and correct downwards,
    // which never lifts a peak. Its 4x peak estimate can miss an inter-sample peak the
    // meter's finer interpolation finds; then the ceiling comes down by the overshoot.
    let mut aim = target - before + 0.5;
    let mut ceiling = recipe.ceiling_dbtp;
    for attempt in 0..8 {
        frames.copy_from_slice(&dry);
        limit(
            frames,
            db_to_gain(aim as f32),
            ceiling as f32,
            sample_rate,
            circular,
        );
        let short = target - loudness::integrated(frames, sample_rate)?;
        if short >= 0.6 && attempt < 7 {
            aim += short + 0.2;
            continue;
        }
        if short < 0.0 {
            let g = db_to_gain(short as f32);
            frames.iter_mut().for_each(|f| {
                f[0] *= g;
                f[1] *= g;
            });
        }
        let report = loudness::measure(frames, sample_rate)?;
        let over = report.true_peak_dbtp - recipe.ceiling_dbtp;
        if over <= 0.0 || attempt == 7 {
            return Ok(report);
        }
        ceiling -= over + 0.05;
    }
    Ok(loudness::measure(frames, sample_rate)?)
}

/// Gain and limiting in place. Circular audio is run twice, keeping the second pass, so
/// the limiter's state at the start is its state at the end.
fn limit(frames: &mut [[f32; 2]], gain: f32, ceiling_db: f32, sample_rate: u32, circular: bool) {
    let mut limiter = Limiter::new(ceiling_db, sample_rate as f32);
    let latency = limiter.latency();
    let len = frames.len();
    if len == 0 {
        return;
    }
    let scale = |f: [f32; 2]| [f[0] * gain, f[1] * gain];
    if circular {
        let input: Vec<[f32; 2]> = frames.iter().map(|&f| scale(f)).collect();
        for &f in &input {
            limiter.process(f);
        }
        for (i, &f) in input.iter().enumerate() {
            let out = limiter.process(f);
            frames[(i + len - latency % len) % len] = out;
        }
    } else {
        for i in 0..len + latency {
            let input = frames.get(i).map_or([0.0; 2], |&f| scale(f));
            let out = limiter.process(input);
            if i >= latency {
                frames[i - latency] = out;
            }
        }
    }
}
