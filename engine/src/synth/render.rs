//! Rendering: phrases into stereo, loops folded seamless at their bar length, songs
//! arranged into sections, and the master stage that meets the loudness contract.
//!
//! A phrase is rendered with its tail (note releases, reverb) and laid down by overlap-add,
//! so identical phrases are rendered once and reused: the synth and the reverb are linear
//! in the notes, so adding shifted copies sounds exactly like playing them in a row. Only
//! the limiter, which is not linear, runs over the whole piece.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use serde::Serialize;

use super::drums::DrumMachine;
use super::instruments::{Tone, Voices};
use super::pattern::{self, Phrase, SectionKind};
use super::{Grid, Instrument, Recipe, Role};
use crate::analysis::loudness::{self, LoudnessError, LoudnessReport};
use crate::dsp::{LimiterGain, REVERB_BLOCK, Reverb, StereoPeaks, ceiling_gain, db_to_gain};

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

/// Rendered audio with its loudness, what the master did, and (for songs) its sections.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub frames: Vec<[f32; 2]>,
    pub sample_rate: u32,
    pub loudness: LoudnessReport,
    pub mastering: Mastering,
    pub sections: Vec<Section>,
}

/// What the master stage did to bring a piece to its loudness target under its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mastering {
    /// Gain into the limiter, dB (with any turn-down after it).
    pub gain_db: f64,
    /// The limiter's release, ms: 80 unless the piece could not reach its target without
    /// more limiting than that allows (sparse drums, say), then as short as 5.
    pub limiter_release_ms: f64,
    /// The level the limiter held its peak estimates under, dBTP: under the ceiling by the
    /// headroom its estimate needs.
    pub limiter_ceiling_dbtp: f64,
    /// Passes through the limiter: 1 unless the first missed the contract, 0 for
    /// silence.
    pub passes: u32,
}

/// Audio brought to its loudness target: the result's loudness and what the master did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mastered {
    pub loudness: LoudnessReport,
    pub mastering: Mastering,
}

/// Mix level and reverb send of each role, before the master normalises the whole.
fn role_levels(role: Role) -> (f32, f32) {
    match role {
        Role::Drum => (1.0, 0.0),
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

/// Rendered parts by the score they play: a part whose notes recur (the pad under every
/// section, the bass of each drop) is rendered once per piece.
type PartCache = HashMap<u64, Arc<Vec<[f32; 2]>>>;

/// A key for a part's audio: its instrument and every note or hit of its score.
fn score_key(instrument: Instrument, score: &pattern::Score, len: usize) -> u64 {
    let mut h = DefaultHasher::new();
    (instrument as u8, len, score.notes.len(), score.hits.len()).hash(&mut h);
    for n in &score.notes {
        (
            n.instrument as u8,
            n.beat.to_bits(),
            n.length.to_bits(),
            n.pitch.to_bits(),
        )
            .hash(&mut h);
        (
            n.velocity.to_bits(),
            n.slide_from.map(f32::to_bits),
            n.pan.to_bits(),
        )
            .hash(&mut h);
    }
    for hit in &score.hits {
        (hit.beat.to_bits(), hit.drum as u8, hit.velocity.to_bits()).hash(&mut h);
    }
    h.finish()
}

/// The synthesized sounds of a piece, shared by all its phrases.
pub(crate) struct Sounds {
    pub voices: Voices,
    pub drums: DrumMachine,
}

impl Sounds {
    pub fn new(recipe: &Recipe, seed: u64, sample_rate: u32) -> Sounds {
        Sounds {
            voices: Voices::new(seed, Tone::brightness(recipe.brightness), sample_rate),
            drums: DrumMachine::new(seed, pattern::kick_hz(recipe.key), sample_rate),
        }
    }
}

/// One part's audio over `len` frames: the dry part at its mix level plus its reverb,
/// the tail faded out at the end.
fn render_part(
    recipe: &Recipe,
    instrument: Instrument,
    score: &pattern::Score,
    grid: &Grid,
    sounds: &mut Sounds,
    len: usize,
    reverb_size: f32,
) -> Vec<[f32; 2]> {
    let role = instrument.role();
    let fpb = grid.frames_per_beat();
    let mut part = silence(len);
    if role == Role::Drum {
        sounds.drums.render(instrument, &score.hits, fpb, &mut part);
    } else {
        // Fx parts may mix several sounds; render each instrument's notes in turn.
        let mut by_instrument: Vec<Instrument> = score.notes.iter().map(|n| n.instrument).collect();
        by_instrument.sort();
        by_instrument.dedup();
        for inst in by_instrument {
            let notes: Vec<_> = score
                .notes
                .iter()
                .copied()
                .filter(|n| n.instrument == inst)
                .collect();
            sounds.voices.render(inst, &notes, fpb, &mut part);
        }
    }
    let (level, send) = role_levels(role);
    let send = send * (0.4 + 1.6 * recipe.space);
    if send > 0.0 {
        let mut reverb = Reverb::new(grid.sample_rate as f32);
        reverb.set(reverb_size, 0.45);
        // Several of the reverb's blocks at a call.
        const STRETCH: usize = 16 * REVERB_BLOCK;
        let mut sends = [[0.0f32; 2]; STRETCH];
        let mut wet = [[0.0f32; 2]; STRETCH];
        for block in part.chunks_mut(STRETCH) {
            let n = block.len();
            for (s, f) in sends.iter_mut().zip(block.iter()) {
                *s = [f[0] * send, f[1] * send];
            }
            reverb.process_block(&sends[..n], &mut wet[..n]);
            for (f, w) in block.iter_mut().zip(&wet) {
                *f = [(f[0] + w[0]) * level, (f[1] + w[1]) * level];
            }
        }
    } else {
        // Without reverb, nothing follows the last frame a voice wrote: the silence after
        // it is left untouched (so its memory is never taken), since scaling and fading
        // leave it silent.
        let written = part
            .iter()
            .rposition(|f| f[0] != 0.0 || f[1] != 0.0)
            .map_or(0, |last| last + 1);
        part.truncate(written);
        for f in part.iter_mut() {
            *f = [f[0] * level, f[1] * level];
        }
    }
    // The tail is cut: fade its last half second so the cut is silent.
    let fade = ((grid.sample_rate / 2) as usize).min(len);
    for (i, f) in part.iter_mut().enumerate().skip(len - fade) {
        let g = 1.0 - (i - (len - fade)) as f32 / fade as f32;
        f[0] *= g;
        f[1] *= g;
    }
    // Parts without reverb fall silent well before the tail ends (a kit's last hit, the
    // bass's release): what is left of them is not mixed in.
    let sounding = part
        .iter()
        .rposition(|f| f[0].abs().max(f[1].abs()) > SILENT)
        .map_or(0, |last| last + 1);
    part.truncate(sounding);
    part
}

/// Asks for `frames`' memory to be backed by huge pages where the kernel gives them on
/// request (Linux's transparent huge pages in `madvise` mode, the usual default): a song's
/// buffers run to tens of megabytes, and taking them a 4 KiB page fault at a time costs a
/// tenth of a render. Pages already touched stay as they are.
fn advise_huge_pages(frames: &mut Vec<[f32; 2]>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = frames.as_mut_ptr() as usize;
        let end = start + frames.capacity() * std::mem::size_of::<[f32; 2]>();
        let (first, last) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if last > first {
            // SAFETY: the range lies inside the vector's allocation, which it alone holds;
            // the advice only changes how its pages are backed, never their contents.
            // Refused advice leaves ordinary pages, so the result is not needed.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = frames;
}

/// `len` frames of silence, on huge pages where the kernel gives them. (A large zeroed
/// allocation is fresh memory that is not touched until written, so the advice holds.)
fn silence(len: usize) -> Vec<[f32; 2]> {
    let mut frames = vec![[0.0f32; 2]; len];
    advise_huge_pages(&mut frames);
    frames
}

/// A level below which a part's tail is silence: -140 dBFS, far under a 24-bit file's floor.
const SILENT: f32 = 1.0e-7;

/// Plays every part of `recipe` over `phrase` into `dest` (which starts at the phrase's
/// first frame); each part brings `TAIL_S` of tail after the phrase's last bar.
#[allow(clippy::too_many_arguments)]
fn render_phrase(
    recipe: &Recipe,
    phrase: Phrase,
    grid: &Grid,
    seed: u64,
    variant: u32,
    reverb_size: f32,
    cache: &mut PartCache,
    sounds: &mut Sounds,
    dest: &mut [[f32; 2]],
) {
    let phrase_frames = grid.bar_frames(phrase.bars);
    let len = phrase_frames + (TAIL_S * grid.sample_rate as f32) as usize;
    let chords = pattern::chords(recipe, phrase.bars, seed);
    let mut playing = Vec::with_capacity(recipe.parts.len());
    for &instrument in &recipe.parts {
        if !phrase.kind.plays(instrument.role()) {
            continue;
        }
        let part_seed = part_seed(seed, phrase.kind, variant, instrument);
        let score = pattern::score(recipe, instrument, &chords, phrase, part_seed);
        let key = score_key(instrument, &score, len);
        let audio = cache
            .entry(key)
            .or_insert_with(|| {
                Arc::new(render_part(
                    recipe,
                    instrument,
                    &score,
                    grid,
                    sounds,
                    len,
                    reverb_size,
                ))
            })
            .clone();
        playing.push(audio);
    }
    // Part after part a stretch at a time, so the stretch of the song stays in cache while
    // each part is added (the same sums, in the same order, as part after part whole).
    const STRETCH: usize = 2048;
    for (n, dest) in dest.chunks_mut(STRETCH).enumerate() {
        let at = n * STRETCH;
        let mut any = false;
        for audio in &playing {
            if let Some(part) = audio.get(at..) {
                any = true;
                for (m, p) in dest.iter_mut().zip(part) {
                    m[0] += p[0];
                    m[1] += p[1];
                }
            }
        }
        if !any {
            break;
        }
    }
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
    let len = grid.bar_frames(bars);
    let mut rendered = vec![[0.0f32; 2]; len + (TAIL_S * sample_rate as f32) as usize];
    render_phrase(
        recipe,
        phrase,
        &grid,
        seed,
        0,
        0.3 + 0.6 * recipe.space,
        &mut PartCache::new(),
        &mut Sounds::new(recipe, seed, sample_rate),
        &mut rendered,
    );
    let mut frames = vec![[0.0f32; 2]; len];
    for (i, f) in rendered.iter().enumerate() {
        let slot = &mut frames[i % len];
        slot[0] += f[0];
        slot[1] += f[1];
    }
    let Mastered {
        loudness,
        mastering,
    } = master(&mut frames, recipe, sample_rate, true)?;
    Ok(Rendered {
        frames,
        sample_rate,
        loudness,
        mastering,
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
    let mut frames = silence(total_frames);
    let mut parts = PartCache::new();
    let mut sounds = Sounds::new(recipe, seed, sample_rate);
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
    // Lays every phrase down into `frames` (silent and song-long: the parts' tails past the
    // end are cut), then fades the end out over the last bar (at most 4 s) so the exact
    // length ends cleanly. Run again, it finds every part in the cache and only mixes.
    let fade = (bar_frames as usize)
        .min(4 * sample_rate as usize)
        .min(total_frames / 4);
    let mut lay_down = |frames: &mut [[f32; 2]], progress: &mut dyn FnMut(f64)| {
        for (done, &(section, start_bar, bars)) in phrases.iter().enumerate() {
            // Alternate two variants so repeated phrases answer each other; the second of
            // each pair, and the last of a section, ends in a fill.
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
            let offset = grid.frame(f64::from(start_bar * u32::from(recipe.meter.beats_per_bar)));
            if let Some(dest) = frames.get_mut(offset..) {
                render_phrase(
                    recipe,
                    phrase,
                    &grid,
                    seed,
                    variant,
                    reverb_size,
                    &mut parts,
                    &mut sounds,
                    dest,
                );
            }
            progress(0.8 * (done + 1) as f64 / count as f64);
        }
        let fade_start = total_frames - fade;
        for (i, f) in frames[fade_start..total_frames].iter_mut().enumerate() {
            let g = 1.0 - i as f32 / fade as f32;
            let g = g * g;
            f[0] *= g;
            f[1] *= g;
        }
    };
    lay_down(&mut frames, progress);
    let Mastered {
        loudness,
        mastering,
    } = normalize_restoring(
        &mut frames,
        recipe.target_lufs,
        recipe.ceiling_dbtp,
        sample_rate,
        &mut |song| {
            song.fill([0.0; 2]);
            lay_down(song, &mut |_| {});
        },
    )?;
    progress(1.0);
    Ok(Rendered {
        frames,
        sample_rate,
        loudness,
        mastering,
        sections,
    })
}

/// Frames per step of the coarse gain search.
const SEARCH_CHUNK: usize = 16;

/// Brings `frames` to the recipe's loudness target with its true peak under the ceiling:
/// gain into the lookahead limiter. With `circular`, the audio is a loop and is processed as
/// one pass of an endless repetition, so it stays seamless.
///
/// The gain is found on a prediction: K-weighted energy and true-peak estimates are taken
/// once, and the limiter's gain law runs over them at a sixteenth of the rate for each
/// candidate gain. The chosen gain is then applied at full rate, any DC the limiter left is
/// taken out, and the result measured ([`loudness::measure_fast`], the meter's algorithm);
/// a miss (rare) is corrected and measured again.
pub fn master(
    frames: &mut [[f32; 2]],
    recipe: &Recipe,
    sample_rate: u32,
    circular: bool,
) -> Result<Mastered, RenderError> {
    Ok(normalize(
        frames,
        recipe.target_lufs,
        recipe.ceiling_dbtp,
        sample_rate,
        circular,
    )?)
}

/// Brings `frames` to `target` LUFS with its true peak at or under `ceiling_dbtp`: the
/// master stage of [`master`], for any audio (the render chain ends in it too).
pub fn normalize(
    frames: &mut [[f32; 2]],
    target: f64,
    ceiling_dbtp: f64,
    sample_rate: u32,
    circular: bool,
) -> Result<Mastered, LoudnessError> {
    let dry = dry_copy(frames);
    if circular {
        // A loop is limited from its copy: its second pass reads frames the first has
        // written.
        return master_passes(frames, Dry::Loop(&dry), target, ceiling_dbtp, sample_rate);
    }
    // A pass that misses (rare) starts again from the audio as it came: kept for that.
    normalize_restoring(frames, target, ceiling_dbtp, sample_rate, &mut |frames| {
        frames.copy_from_slice(&dry)
    })
}

/// [`normalize`] for a piece that is not a loop, with no copy of it kept: `restore` puts the
/// audio as it came back into the buffer if a pass misses (rare), as a song does by laying
/// its phrases down again from its parts.
pub fn normalize_restoring(
    frames: &mut [[f32; 2]],
    target: f64,
    ceiling_dbtp: f64,
    sample_rate: u32,
    restore: &mut dyn FnMut(&mut [[f32; 2]]),
) -> Result<Mastered, LoudnessError> {
    master_passes(
        frames,
        Dry::Restored(restore),
        target,
        ceiling_dbtp,
        sample_rate,
    )
}

fn dry_copy(frames: &[[f32; 2]]) -> Vec<[f32; 2]> {
    let mut dry = Vec::with_capacity(frames.len());
    advise_huge_pages(&mut dry);
    dry.extend_from_slice(frames);
    dry
}

/// Where a pass of the master finds the audio as it came.
enum Dry<'a> {
    /// A loop's copy, which each pass limits into the buffer.
    Loop(&'a [[f32; 2]]),
    /// In the buffer itself, limited in place; put back there before a second pass.
    Restored(&'a mut dyn FnMut(&mut [[f32; 2]])),
}

/// The master's passes: gain into the limiter, measured, corrected until the contract
/// holds.
fn master_passes(
    frames: &mut [[f32; 2]],
    mut dry: Dry<'_>,
    target: f64,
    ceiling_dbtp: f64,
    sample_rate: u32,
) -> Result<Mastered, LoudnessError> {
    let circular = matches!(dry, Dry::Loop(_));
    let sub_len = (sample_rate / 10).max(1) as usize;
    // Silence (or nothing) is left as it is.
    let untouched = |frames: &[[f32; 2]]| {
        Ok(Mastered {
            loudness: loudness::measure(frames, sample_rate)?,
            mastering: Mastering {
                gain_db: 0.0,
                limiter_release_ms: f64::from(crate::dsp::LIMITER_RELEASE_S * 1000.0),
                limiter_ceiling_dbtp: ceiling_dbtp,
                passes: 0,
            },
        })
    };
    if frames.is_empty() {
        return untouched(frames);
    }
    let mut coarse = Coarse::new(frames, sub_len, sample_rate, circular);
    let before = loudness::gated_loudness(&coarse.sub_blocks(), sub_len);
    if !before.is_finite() {
        return untouched(frames);
    }
    // NOTE: the limiter's 4x estimate misses up to half a dB of the meter's finer
    // interpolation on bright material; offline, a quarter dB more headroom saves a pass.
    let mut ceiling = ceiling_dbtp - 0.25;
    let mut limiting_at = with_release(&mut coarse, target, before, ceiling, circular);
    let mut gain = coarse.solve(target, target - before, limiting_at, circular);
    // The loudness the prediction aims at: the target, less what it has been seen to miss by.
    let mut aim = target;
    let block = dc_block(sample_rate);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let law = Law {
            gain: db_to_gain(gain as f32),
            ceiling_db: limiting_at as f32,
            release_s: coarse.release_s,
            sample_rate,
        };
        let sums = match &mut dry {
            Dry::Loop(dry) => {
                limit_loop(dry, frames, law);
                let mut sums = vec![[0.0; 2]; frames.len().div_ceil(block)];
                add_block_sums(frames, 0, block, &mut sums);
                sums
            }
            Dry::Restored(restore) => {
                if attempt > 1 {
                    restore(frames);
                }
                limit_in_place(frames, law, &coarse.peaks)
            }
        };
        centre_limited(frames, &sums, block, circular);
        let report = loudness::measure_fast(frames, sample_rate);
        let mastering = Mastering {
            gain_db: gain,
            limiter_release_ms: f64::from(coarse.release_s * 1000.0),
            limiter_ceiling_dbtp: limiting_at,
            passes: attempt,
        };
        let over = report.true_peak_dbtp - ceiling_dbtp;
        let off = report.integrated_lufs - target;
        if (over <= 0.0 && off.abs() <= 0.4) || attempt == 5 {
            return Ok(Mastered {
                loudness: report,
                mastering,
            });
        }
        if over <= 0.0 && off > 0.0 {
            // Too loud: turning down never lifts a peak.
            let g = db_to_gain(-off as f32);
            frames.iter_mut().for_each(|f| {
                f[0] *= g;
                f[1] *= g;
            });
            return Ok(Mastered {
                loudness: loudness::measure_fast(frames, sample_rate),
                mastering: Mastering {
                    gain_db: gain - off,
                    ..mastering
                },
            });
        }
        let predicted = coarse.predict(gain, limiting_at, circular);
        if over > 0.0 {
            ceiling -= over + 0.1;
        }
        aim -= report.integrated_lufs - predicted;
        limiting_at = with_release(&mut coarse, aim, before, ceiling, circular);
        gain = coarse.solve(aim, aim - before, limiting_at, circular);
    }
}

/// Limiter releases the master tries, longest first, on a piece that the usual release
/// (the first) cannot bring to its target without limiting it by more than
/// [`MAX_LIMITING_DB`]: sparse drums, say, whose hits hold the gain down through the quiet
/// between them. A shorter release lets the gain back up between the hits.
const RELEASES_S: [f32; 5] = [crate::dsp::LIMITER_RELEASE_S, 0.04, 0.02, 0.01, 0.005];
/// Most loudness the limiter may take away (LU) before a shorter release is tried.
const MAX_LIMITING_DB: f64 = 6.0;
/// Headroom (dB) taken beside the usual quarter dB under a shortened release. A short
/// release lets the gain back up between peaks, so every peak is limited to the ceiling by
/// its own estimate, and the estimate's shortfall on bright peaks shows at each of them:
/// more headroom saves a pass.
const SHORT_RELEASE_HEADROOM_DB: f64 = 1.25;

/// Sets `coarse`'s release to the longest of [`RELEASES_S`] that brings the piece to
/// `target` with the limiter taking at most [`MAX_LIMITING_DB`] away, else the shortest (a
/// shorter release never leaves the piece quieter at the same gain, so it limits least);
/// returns the ceiling to limit to under it: `ceiling`, less [`SHORT_RELEASE_HEADROOM_DB`]
/// under a shortened release.
fn with_release(
    coarse: &mut Coarse,
    target: f64,
    before: f64,
    ceiling: f64,
    circular: bool,
) -> f64 {
    let unlimited = target - before;
    let at = |i: usize| {
        if i == 0 {
            ceiling
        } else {
            ceiling - SHORT_RELEASE_HEADROOM_DB
        }
    };
    let shortest = RELEASES_S.len() - 1;
    // Loudness rises with gain: the target is in reach with that much limiting when the most
    // gain allowed gets there.
    let chosen = (0..shortest)
        .find(|&i| {
            coarse.release_s = RELEASES_S[i];
            coarse.predict(unlimited + MAX_LIMITING_DB, at(i), circular) >= target - 0.1
        })
        .unwrap_or(shortest);
    coarse.release_s = RELEASES_S[chosen];
    at(chosen)
}

/// The piece at a sixteenth of the rate: the highest true-peak estimate and the summed
/// K-weighted energy of each chunk, for predicting the loudness the limiter will leave.
struct Coarse {
    peaks: Vec<f32>,
    /// Where [`Coarse::predict`] lays the limiter's gain for each chunk: one buffer for
    /// every prediction, each writing every chunk.
    envelope: Vec<f32>,
    energy: Vec<f64>,
    chunks_per_sub: usize,
    window: usize,
    /// The limiter's release, seconds.
    release_s: f32,
    sample_rate: u32,
    sub_len: usize,
}

impl Coarse {
    fn new(frames: &[[f32; 2]], sub_len: usize, sample_rate: u32, circular: bool) -> Coarse {
        let mut estimate = if circular {
            StereoPeaks::after(frames)
        } else {
            StereoPeaks::default()
        };
        // Whole chunks to a block, so the chunks fall where they would on the whole piece.
        const _: () = assert!(PEAK_BLOCK.is_multiple_of(SEARCH_CHUNK));
        let mut frame_peaks = [0.0f32; PEAK_BLOCK];
        let mut peaks = Vec::with_capacity(frames.len().div_ceil(SEARCH_CHUNK));
        for block in frames.chunks(PEAK_BLOCK) {
            let frame_peaks = &mut frame_peaks[..block.len()];
            estimate.fill(block, frame_peaks);
            peaks.extend(
                frame_peaks
                    .chunks(SEARCH_CHUNK)
                    .map(|c| c.iter().fold(0.0f32, |p, &q| p.max(q))),
            );
        }
        let lookahead = crate::dsp::limiter_lookahead(sample_rate as f32);
        Coarse {
            envelope: vec![1.0; peaks.len()],
            peaks,
            energy: loudness::k_energy_sums(frames, sample_rate, SEARCH_CHUNK),
            chunks_per_sub: (sub_len / SEARCH_CHUNK).max(1),
            window: lookahead.div_ceil(SEARCH_CHUNK),
            release_s: crate::dsp::LIMITER_RELEASE_S,
            sample_rate,
            sub_len,
        }
    }

    /// K-weighted energy per (approximately) 100 ms sub-block, before limiting.
    fn sub_blocks(&self) -> Vec<f64> {
        self.energy
            .chunks_exact(self.chunks_per_sub)
            .map(|c| c.iter().sum())
            .collect()
    }

    /// Predicted integrated loudness after `gain_db` and the limiter at `ceiling_db`.
    fn predict(&mut self, gain_db: f64, ceiling_db: f64, circular: bool) -> f64 {
        let g = db_to_gain(gain_db as f32);
        let ceiling = ceiling_gain(ceiling_db as f32);
        let release = (-(SEARCH_CHUNK as f32) / (self.release_s * self.sample_rate as f32)).exp();
        let mut law = LimiterGain::new(self.window, release);
        let (n, window) = (self.peaks.len(), self.window);
        let (peaks, envelope) = (&self.peaks, &mut self.envelope);
        // The law over chunks `from..to`, a block at a time, handing `each` each chunk and
        // its gain.
        let mut needs = [1.0f32; PEAK_BLOCK];
        let mut gains = [1.0f32; PEAK_BLOCK];
        let mut run = |from: usize, to: usize, each: &mut dyn FnMut(usize, f32)| {
            for start in (from..to).step_by(PEAK_BLOCK) {
                let end = to.min(start + PEAK_BLOCK);
                for (need, c) in needs.iter_mut().zip(start..end) {
                    *need = needed(peaks.get(c).copied().unwrap_or(0.0), g, ceiling);
                }
                let len = end - start;
                law.run(&needs[..len], &mut gains[..len]);
                for (c, &env) in (start..end).zip(&gains) {
                    each(c, env);
                }
            }
        };
        if circular {
            run(0, n, &mut |_, _| {});
        }
        // Every chunk's slot is written: a loop's from its second pass, a piece's from the
        // window on.
        let steps = if circular { n } else { n + window };
        run(0, steps, &mut |c, env| {
            let at = if circular {
                (c + n - window % n) % n
            } else {
                c.wrapping_sub(window)
            };
            if let Some(slot) = envelope.get_mut(at) {
                *slot = env;
            }
        });
        let g2 = f64::from(g) * f64::from(g);
        let subs: Vec<f64> = self
            .energy
            .chunks_exact(self.chunks_per_sub)
            .zip(envelope.chunks_exact(self.chunks_per_sub))
            .map(|(e, env)| {
                e.iter()
                    .zip(env)
                    .map(|(&e, &v)| e * f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    * g2
            })
            .collect();
        loudness::gated_loudness(&subs, self.sub_len)
    }

    /// The gain (dB) that brings the piece to `target` through the limiter, by secant
    /// steps from `guess` (loudness rises with gain, ever more slowly as the limiter bites).
    fn solve(&mut self, target: f64, guess: f64, ceiling_db: f64, circular: bool) -> f64 {
        let mut g0 = guess;
        let mut l0 = self.predict(g0, ceiling_db, circular);
        let mut g1 = g0 + (target - l0);
        for _ in 0..12 {
            let l1 = self.predict(g1, ceiling_db, circular);
            if (l1 - target).abs() < 0.03 {
                break;
            }
            if (l1 - l0).abs() < 0.01 {
                // The limiter is saturated: more gain only squashes. Keep the lesser gain.
                return g0.min(g1);
            }
            let slope = if (g1 - g0).abs() > 1e-6 {
                ((l1 - l0) / (g1 - g0)).clamp(0.05, 1.0)
            } else {
                1.0
            };
            let next = (g1 + (target - l1) / slope).clamp(g1 - 24.0, g1 + 24.0);
            (g0, l0) = (g1, l1);
            g1 = next;
        }
        g1
    }
}

/// The limiter's settings for a pass.
#[derive(Debug, Clone, Copy)]
struct Law {
    /// Input gain, linear.
    gain: f32,
    ceiling_db: f32,
    release_s: f32,
    sample_rate: u32,
}

/// Frames over which the master measures the DC its limiter leaves: half a second.
fn dc_block(sample_rate: u32) -> usize {
    (sample_rate as usize / 2).max(1)
}

/// A channel's mean over the piece, after limiting, above which the master takes the DC
/// out: a quarter of what the quality assessment warns of.
const DC_FLOOR: f64 = 5e-4;

/// Adds each channel of `frames`, which start at frame `first` of the piece, into the sums
/// of the `block`-frame blocks they fall in.
fn add_block_sums(frames: &[[f32; 2]], first: usize, block: usize, sums: &mut [[f64; 2]]) {
    let mut at = first;
    let mut rest = frames;
    while !rest.is_empty() {
        let take = (block - at % block).min(rest.len());
        let (part, next) = rest.split_at(take);
        // Eight lanes, so that the sum runs in vector registers.
        let mut lanes = [0.0f64; 8];
        let chunks = part.chunks_exact(4);
        let tail = chunks.remainder();
        for chunk in chunks {
            for (lane, f) in lanes.chunks_exact_mut(2).zip(chunk) {
                lane[0] += f64::from(f[0]);
                lane[1] += f64::from(f[1]);
            }
        }
        if let Some(sum) = sums.get_mut(at / block) {
            for pair in lanes.chunks_exact(2) {
                sum[0] += pair[0];
                sum[1] += pair[1];
            }
            for f in tail {
                sum[0] += f64::from(f[0]);
                sum[1] += f64::from(f[1]);
            }
        }
        at += take;
        rest = next;
    }
}

/// Takes out the DC a limiter leaves. Gain reduction that falls on the larger half-cycle of
/// a hit (a kick's first swing) more than on the rest shifts the mean of heavily limited
/// music by a few thousandths, though every sound went in centred. Where either channel's mean
/// exceeds [`DC_FLOOR`], its local mean (`sums` of `block` frames) is taken out along a
/// line through the blocks' centres (from and to zero at the piece's ends): a change below
/// a hertz, which follows the music in and out of silence within half a second. A loop
/// loses its mean over the whole, so it stays seamless.
fn centre_limited(frames: &mut [[f32; 2]], sums: &[[f64; 2]], block: usize, circular: bool) {
    let len = frames.len();
    if len == 0 {
        return;
    }
    let total = sums
        .iter()
        .fold([0.0f64; 2], |t, s| [t[0] + s[0], t[1] + s[1]]);
    let mean = total.map(|t| t / len as f64);
    if mean.iter().all(|m| m.abs() <= DC_FLOOR) {
        return;
    }
    if circular {
        let offset = mean.map(|m| m as f32);
        for f in frames.iter_mut() {
            f[0] -= offset[0];
            f[1] -= offset[1];
        }
        return;
    }
    if sums.len() < 2 {
        // Under a block: its mean goes as one bump, so that it neither starts nor ends
        // off silence.
        super::voice::centre(frames);
        return;
    }
    let means: Vec<[f64; 2]> = sums
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = block.min(len - i * block) as f64;
            [s[0] / n, s[1] / n]
        })
        .collect();
    let centre = |i: usize| (i * block + block.min(len - i * block) / 2).min(len);
    // A straight line between centres, and from silence at either end to the nearest
    // centre, so that the piece neither starts nor ends off silence.
    let mut subtract = |from: usize, to: usize, start: [f64; 2], end: [f64; 2]| {
        let span = (to - from).max(1) as f64;
        let step = [(end[0] - start[0]) / span, (end[1] - start[1]) / span];
        let (s0, s1) = (start[0] as f32, start[1] as f32);
        let (d0, d1) = (step[0] as f32, step[1] as f32);
        for (i, f) in frames[from..to].iter_mut().enumerate() {
            let i = i as f32;
            f[0] -= s0 + d0 * i;
            f[1] -= s1 + d1 * i;
        }
    };
    let last = means.len() - 1;
    subtract(0, centre(0), [0.0; 2], means[0]);
    for k in 0..last {
        subtract(centre(k), centre(k + 1), means[k], means[k + 1]);
    }
    subtract(centre(last), len, means[last], [0.0; 2]);
}

/// A loop, `dry`, times the gain, limited, into `out`, with the true peaks of `dry`
/// estimated a block ahead. It is run twice, keeping the second pass, so the limiter's
/// state at the start is its state at the end.
fn limit_loop(dry: &[[f32; 2]], out: &mut [[f32; 2]], law: Law) {
    let sample_rate = law.sample_rate;
    let len = dry.len();
    if len == 0 {
        return;
    }
    let latency = crate::dsp::limiter_lookahead(sample_rate as f32);
    let mut envelope = Envelope::new(law, StereoPeaks::after(dry));
    for start in (0..len).step_by(PEAK_BLOCK) {
        envelope.estimate(dry, start, len.min(start + PEAK_BLOCK));
        envelope.gains(start, len.min(start + PEAK_BLOCK));
    }
    for start in (0..len).step_by(PEAK_BLOCK) {
        let end = len.min(start + PEAK_BLOCK);
        envelope.estimate(dry, start, end);
        for (i, &env) in (start..end).zip(envelope.gains(start, end)) {
            let at = (i + len - latency % len) % len;
            let f = dry[at];
            out[at] = [f[0] * env, f[1] * env];
        }
    }
}

/// Audio that is not a loop, times the gain and limited, in place: a block's peaks are
/// estimated before any of its frames is written, and the frames written then lie a
/// lookahead behind it, in audio no later block reads. `maxima` are the highest estimates
/// of each [`SEARCH_CHUNK`] frames (the coarse model's): a chunk whose highest stays under
/// the ceiling needs no gain reduction anywhere, so its frames' estimates are not made.
///
/// Returns the sums of each channel over every [`dc_block`] frames of the result, taken
/// as the frames are written.
fn limit_in_place(frames: &mut [[f32; 2]], law: Law, maxima: &[f32]) -> Vec<[f64; 2]> {
    let sample_rate = law.sample_rate;
    let len = frames.len();
    let latency = crate::dsp::limiter_lookahead(sample_rate as f32);
    let block = dc_block(sample_rate);
    let mut sums = vec![[0.0f64; 2]; len.div_ceil(block)];
    let mut envelope = Envelope::new(law, StereoPeaks::default());
    // The estimates look three frames back: a lookahead shorter than that (below 2 kHz)
    // would have written them already, so such audio is read from a copy.
    let copy = (latency < 3).then(|| frames.to_vec());
    for start in (0..len + latency).step_by(PEAK_BLOCK) {
        let end = (len + latency).min(start + PEAK_BLOCK);
        envelope.estimate_over(copy.as_deref().unwrap_or(frames), start, end, maxima);
        let gains = envelope.gains(start, end);
        // The frames a lookahead behind the block's, those of them the audio has.
        let from = start.max(latency);
        if from < end {
            let first = from - latency;
            let written = &mut frames[first..end - latency];
            for (f, &env) in written.iter_mut().zip(&gains[from - start..]) {
                *f = [f[0] * env, f[1] * env];
            }
            add_block_sums(written, first, block, &mut sums);
        }
    }
    sums
}

/// The limiter's gain over a piece, a block of peak estimates at a time.
struct Envelope {
    estimate: StereoPeaks,
    law: LimiterGain,
    peaks: [f32; PEAK_BLOCK],
    /// The gain each frame of the block needs, and the law's gain for it.
    needs: [f32; PEAK_BLOCK],
    envelope: [f32; PEAK_BLOCK],
    gain: f32,
    ceiling: f32,
}

impl Envelope {
    fn new(law: Law, estimate: StereoPeaks) -> Envelope {
        Envelope {
            estimate,
            law: LimiterGain::with_release(law.sample_rate as f32, law.release_s),
            peaks: [0.0; PEAK_BLOCK],
            needs: [1.0; PEAK_BLOCK],
            envelope: [1.0; PEAK_BLOCK],
            gain: law.gain,
            ceiling: ceiling_gain(law.ceiling_db),
        }
    }

    /// Estimates the true peaks of `dry[start..end]`. Past the end of `dry` the limiter
    /// needs nothing: it only lets its lookahead out.
    fn estimate(&mut self, dry: &[[f32; 2]], start: usize, end: usize) {
        let len = dry.len();
        let read = start.min(len)..end.min(len);
        let peaks = &mut self.peaks[..end - start];
        self.estimate
            .fill(&dry[read.clone()], &mut peaks[..read.len()]);
        peaks[read.len()..].fill(0.0);
    }

    /// [`Envelope::estimate`] of a block starting on a chunk, only in the chunks whose
    /// highest estimate (in `maxima`) the gain takes over the ceiling; elsewhere the
    /// estimates are left at zero, which asks for the same gain (none). A chunk's estimates
    /// depend on it and the three frames before it, so each is made on its own.
    fn estimate_over(&mut self, dry: &[[f32; 2]], start: usize, end: usize, maxima: &[f32]) {
        let len = dry.len();
        let peaks = &mut self.peaks[..end - start];
        peaks.fill(0.0);
        for first in (start..end.min(len)).step_by(SEARCH_CHUNK) {
            let last = (first + SEARCH_CHUNK).min(end).min(len);
            let highest = maxima
                .get(first / SEARCH_CHUNK)
                .copied()
                .unwrap_or(f32::MAX);
            if highest * self.gain > self.ceiling {
                StereoPeaks::after(&dry[..first])
                    .fill(&dry[first..last], &mut peaks[first - start..last - start]);
            }
        }
    }

    /// Runs the law over the estimates of `start..end` and returns each frame's gain.
    fn gains(&mut self, start: usize, end: usize) -> &[f32] {
        let len = end - start;
        for (need, &peak) in self.needs[..len].iter_mut().zip(&self.peaks) {
            *need = needed(peak, self.gain, self.ceiling);
        }
        let envelope = &mut self.envelope[..len];
        self.law.run(&self.needs[..len], envelope);
        for env in envelope.iter_mut() {
            *env *= self.gain;
        }
        envelope
    }
}

/// The gain the limiter needs for a true-peak estimate `peak` times `gain` to stay under
/// `ceiling` (linear): none (1) where it already does.
fn needed(peak: f32, gain: f32, ceiling: f32) -> f32 {
    let p = peak * gain;
    if p > ceiling { ceiling / p } else { 1.0 }
}

/// Frames whose true peaks the master estimates at a time, ahead of limiting them.
const PEAK_BLOCK: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// A quiet bass note with short, loud bursts of a high whistle: the limiter must catch
    /// the bursts, and its quick estimate reads their peaks low, so its first pass
    /// overshoots the ceiling and the master has to correct it.
    fn whistle(seconds: f32, rate: u32) -> Vec<[f32; 2]> {
        (0..(seconds * rate as f32) as usize)
            .map(|n| {
                let t = n as f32 / rate as f32;
                let burst = if n % (rate as usize / 4) < rate as usize / 200 {
                    0.9
                } else {
                    0.0
                };
                let bass = 0.1 * (std::f32::consts::TAU * 90.0 * t).sin();
                let high = burst * (std::f32::consts::TAU * 12_000.0 * t + 0.8).sin();
                [bass + high, bass - high]
            })
            .collect()
    }

    #[test]
    fn the_master_meets_the_contract_where_its_quick_estimate_reads_peaks_low() {
        let rate = 48_000;
        for (target, ceiling) in [(-9.0, -1.0), (-14.0, -1.0), (-16.0, -3.0)] {
            let mut audio = whistle(8.0, rate);
            let report = normalize(&mut audio, target, ceiling, rate, false)
                .unwrap()
                .loudness;
            let meter = loudness::measure(&audio, rate).unwrap();
            assert!(
                (meter.integrated_lufs - target).abs() <= 1.0,
                "{target} LUFS: {meter:?}"
            );
            assert!(
                meter.true_peak_dbtp <= ceiling + 0.01,
                "{ceiling} dBTP: {meter:?}"
            );
            assert!(
                (report.integrated_lufs - meter.integrated_lufs).abs() < 0.05,
                "{report:?} {meter:?}"
            );
        }
    }

    #[test]
    fn limiting_in_place_and_restoring_gives_what_limiting_from_a_copy_gives() {
        let rate = 48_000;
        let mut restored = 0;
        for (target, ceiling) in [(-9.0, -1.0), (-14.0, -1.0), (-16.0, -3.0)] {
            let mut copied = whistle(8.0, rate);
            let a = normalize(&mut copied, target, ceiling, rate, false).unwrap();
            let mut in_place = whistle(8.0, rate);
            let b = normalize_restoring(&mut in_place, target, ceiling, rate, &mut |frames| {
                restored += 1;
                frames.copy_from_slice(&whistle(8.0, rate));
            })
            .unwrap();
            assert_eq!(a, b);
            assert!(copied == in_place, "the same samples at {target} LUFS");
        }
        assert!(restored > 0, "some of the whistles take a second pass");
    }

    /// The plain limiter the in-place one must match: every frame's estimate made, read from
    /// a copy, the gain law run step by step, written to another buffer.
    fn limit_from_copy(dry: &[[f32; 2]], law: Law) -> Vec<[f32; 2]> {
        let latency = crate::dsp::limiter_lookahead(law.sample_rate as f32);
        let len = dry.len();
        let mut peaks = vec![0.0f32; len];
        StereoPeaks::default().fill(dry, &mut peaks);
        let mut gain_law = LimiterGain::with_release(law.sample_rate as f32, law.release_s);
        let ceiling = ceiling_gain(law.ceiling_db);
        let mut out = vec![[0.0f32; 2]; len];
        for i in 0..len + latency {
            let p = peaks.get(i).copied().unwrap_or(0.0) * law.gain;
            let need = if p > ceiling { ceiling / p } else { 1.0 };
            let env = gain_law.next(need) * law.gain;
            if let Some(at) = i.checked_sub(latency) {
                out[at] = [dry[at][0] * env, dry[at][1] * env];
            }
        }
        out
    }

    #[test]
    fn limiting_in_place_skipping_quiet_chunks_is_limiting_from_a_copy() {
        for rate in [48_000, 1_000] {
            let dry = whistle(3.0, rate);
            let coarse = Coarse::new(&dry, rate as usize / 10, rate, false);
            for gain_db in [0.0f32, 6.0, 14.0] {
                let law = Law {
                    gain: db_to_gain(gain_db),
                    ceiling_db: -1.0,
                    release_s: 0.02,
                    sample_rate: rate,
                };
                let mut in_place = dry.clone();
                limit_in_place(&mut in_place, law, &coarse.peaks);
                let want = limit_from_copy(&dry, law);
                assert!(in_place == want, "{gain_db} dB at {rate} Hz");
            }
        }
    }

    /// Sparse drums, quiet: a kick every half second and a hat between, each decaying to
    /// near silence before the next. Loud targets are out of the reach of the usual limiter
    /// release, which holds the gain down from one hit to the next.
    fn sparse_drums(seconds: f32, rate: u32) -> Vec<[f32; 2]> {
        let mut noise = 0x2545_f491_4f6c_dd1du64;
        let mut soft = 0.0f32;
        (0..(seconds * rate as f32) as usize)
            .map(|n| {
                let beat = rate as usize / 2;
                let (k, h) = (n % beat, (n + beat / 2) % beat);
                let t = k as f32 / rate as f32;
                let kick = 0.25 * (-t * 12.0).exp() * (std::f32::consts::TAU * 55.0 * t).sin();
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                let white = (noise >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                soft = 0.5 * soft + 0.5 * white;
                let hat = 0.2 * soft * (-(h as f32) / (0.03 * rate as f32)).exp();
                [kick + hat, kick - 0.5 * hat]
            })
            .collect()
    }

    #[test]
    fn block_sums_taken_in_pieces_are_the_blocks_sums() {
        let frames: Vec<[f32; 2]> = (0..10_007)
            .map(|n| {
                let x = ((n * 7919) % 1000) as f32 / 1000.0 - 0.3;
                [x, -0.5 * x + 0.01]
            })
            .collect();
        let block = 1000;
        let want: Vec<[f64; 2]> = frames
            .chunks(block)
            .map(|c| {
                c.iter().fold([0.0, 0.0], |s, f| {
                    [s[0] + f64::from(f[0]), s[1] + f64::from(f[1])]
                })
            })
            .collect();
        let mut sums = vec![[0.0; 2]; want.len()];
        let mut at = 0;
        for piece in [3, 997, 1, 2500, 13, 4096, 2397] {
            add_block_sums(&frames[at..at + piece], at, block, &mut sums);
            at += piece;
        }
        assert_eq!(at, frames.len());
        for (got, want) in sums.iter().zip(&want) {
            assert!((got[0] - want[0]).abs() < 1e-6 && (got[1] - want[1]).abs() < 1e-6);
        }
    }

    /// Kicks whose first swing outweighs the rest, each centred, every half second.
    fn centred_kicks(seconds: f32, rate: u32) -> Vec<[f32; 2]> {
        let beat = rate as usize / 2;
        let mut kick: Vec<[f32; 1]> = (0..beat)
            .map(|k| {
                let t = k as f32 / rate as f32;
                [0.3 * (-t * 9.0).exp() * (std::f32::consts::TAU * 50.0 * t).sin()]
            })
            .collect();
        super::super::voice::centre(&mut kick);
        (0..(seconds * rate as f32) as usize)
            .map(|n| {
                let k = kick[n % beat][0];
                [k, k]
            })
            .collect()
    }

    #[test]
    fn the_master_takes_out_the_dc_its_limiter_leaves() {
        let rate = 48_000;
        let mean = |audio: &[[f32; 2]]| {
            audio.iter().map(|f| f64::from(f[0])).sum::<f64>() / audio.len() as f64
        };
        let dry = centred_kicks(20.0, rate);
        assert!(mean(&dry).abs() < 1e-6);
        // Limited hard, the kicks lose more of their first swing than of the rest.
        let limited = limit_from_copy(
            &dry,
            Law {
                gain: db_to_gain(14.0),
                ceiling_db: -1.0,
                release_s: 0.02,
                sample_rate: rate,
            },
        );
        assert!(mean(&limited).abs() > 4.0 * DC_FLOOR, "{}", mean(&limited));
        for circular in [false, true] {
            let mut audio = dry.clone();
            let report = normalize(&mut audio, -8.0, -1.0, rate, circular)
                .unwrap()
                .loudness;
            assert!(mean(&audio).abs() < DC_FLOOR, "{}", mean(&audio));
            if !circular {
                // The piece starts on a silent frame, and the correction takes nothing
                // from it: no step into the first frame.
                assert_eq!(audio[0], [0.0, 0.0]);
            }
            assert!(report.true_peak_dbtp <= -1.0, "{report:?}");
            assert!((report.integrated_lufs + 8.0).abs() <= 1.0, "{report:?}");
        }
        // Under one block (a one-shot render) the mean goes as one bump.
        let mut short = centred_kicks(0.4, rate);
        normalize(&mut short, -8.0, -1.0, rate, false).unwrap();
        assert!(mean(&short).abs() < DC_FLOOR, "{}", mean(&short));
        assert_eq!(short[0], [0.0, 0.0]);
    }

    #[test]
    fn sparse_drums_reach_a_loud_target_through_a_shorter_release() {
        let rate = 48_000;
        let (target, ceiling) = (-9.0, -1.0);
        let mut audio = sparse_drums(10.0, rate);
        // The usual release cannot get there limiting by MAX_LIMITING_DB or less.
        let sub_len = rate as usize / 10;
        let mut coarse = Coarse::new(&audio, sub_len, rate, false);
        let before = loudness::gated_loudness(&coarse.sub_blocks(), sub_len);
        let usual = coarse.predict(target - before + MAX_LIMITING_DB, ceiling, false);
        assert!(usual < target - 0.5, "{usual} LUFS with the usual release");
        let mut chosen = coarse;
        with_release(&mut chosen, target, before, ceiling - 0.25, false);
        assert!(chosen.release_s < crate::dsp::LIMITER_RELEASE_S);

        let mastered = normalize(&mut audio, target, ceiling, rate, false).unwrap();
        let meter = loudness::measure(&audio, rate).unwrap();
        assert!((meter.integrated_lufs - target).abs() <= 0.5, "{meter:?}");
        assert!(meter.true_peak_dbtp <= ceiling, "{meter:?}");
        // The report says so: the release chosen, the gain, the headroom under it.
        let done = mastered.mastering;
        assert_eq!(
            done.limiter_release_ms,
            f64::from(chosen.release_s * 1000.0),
            "{done:?}"
        );
        assert!(done.gain_db > target - before, "{done:?}");
        assert!(
            done.limiter_ceiling_dbtp <= ceiling - 0.25 - SHORT_RELEASE_HEADROOM_DB,
            "{done:?}"
        );
        assert!(done.passes >= 1, "{done:?}");
    }

    #[test]
    fn a_piece_the_usual_release_brings_to_its_target_reports_it_and_silence_reports_no_pass() {
        let rate = 48_000;
        // A steady chord: a little gain and hardly any limiting get it there.
        let mut audio: Vec<[f32; 2]> = (0..4 * rate)
            .map(|n| {
                let t = n as f32 / rate as f32;
                let s = [110.0, 220.0, 330.0]
                    .iter()
                    .map(|f| 0.05 * (std::f32::consts::TAU * f * t).sin())
                    .sum::<f32>();
                [s, s]
            })
            .collect();
        let done = normalize(&mut audio, -14.0, -1.0, rate, false)
            .unwrap()
            .mastering;
        assert_eq!(done.limiter_release_ms, 80.0, "{done:?}");
        assert!(
            (done.limiter_ceiling_dbtp - (-1.25)).abs() < 1e-9,
            "{done:?}"
        );
        assert_eq!(done.passes, 1, "{done:?}");
        assert!(done.gain_db > 0.0, "{done:?}");
        let mut silence = vec![[0.0f32; 2]; rate as usize];
        let done = normalize(&mut silence, -14.0, -1.0, rate, false)
            .unwrap()
            .mastering;
        assert_eq!((done.passes, done.gain_db), (0, 0.0), "{done:?}");
    }
}
