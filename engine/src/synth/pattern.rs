//! Scores: what each role plays in a phrase. Drum patterns per groove, bass lines that lock
//! to the kick, voice-led chords, motif-based melodies and arpeggios, and effects placed on
//! section boundaries.
//!
//! Positions are in beats from the start of the phrase. Everything is drawn from a seeded
//! PCG, so a phrase is a pure function of its recipe, section and seed.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;

use super::{Groove, Instrument, Recipe, Role};
use crate::music::{Chord, Key, PROGRESSIONS_MAJOR, PROGRESSIONS_MINOR, PROGRESSIONS_STILL};

/// A pitched note of a score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Note {
    pub instrument: Instrument,
    pub beat: f64,
    pub length: f64,
    /// MIDI note number.
    pub pitch: f32,
    /// 0–1; above 0.9 is an accent.
    pub velocity: f32,
    /// Glide into this note from that pitch.
    pub slide_from: Option<f32>,
    pub pan: f32,
}

/// The drums a kit has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drum {
    Kick,
    Snare,
    Clap,
    ClosedHat,
    OpenHat,
    Crash,
    Shaker,
    TomLow,
    TomHigh,
    Rim,
}

impl Drum {
    /// Where the drum sits in the stereo field, as a drummer's kit would be miked.
    pub fn pan(self) -> f32 {
        match self {
            Drum::ClosedHat | Drum::OpenHat => 0.25,
            Drum::Shaker => -0.3,
            Drum::Crash => -0.2,
            Drum::TomHigh => 0.2,
            Drum::TomLow => -0.25,
            Drum::Rim => 0.15,
            _ => 0.0,
        }
    }
}

/// One drum hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub beat: f64,
    pub drum: Drum,
    pub velocity: f32,
}

/// What a section of an arrangement is for; patterns play differently in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionKind {
    Intro,
    Build,
    Drop,
    Verse,
    Breakdown,
    Outro,
    /// A free-standing loop: the full groove, no arrangement around it.
    Loop,
}

impl SectionKind {
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Intro => "intro",
            SectionKind::Build => "build",
            SectionKind::Drop => "drop",
            SectionKind::Verse => "verse",
            SectionKind::Breakdown => "breakdown",
            SectionKind::Outro => "outro",
            SectionKind::Loop => "loop",
        }
    }

    /// Roles that play in this section.
    pub fn plays(self, role: Role) -> bool {
        use SectionKind::*;
        match role {
            Role::Pad => true,
            Role::Drum => !matches!(self, Breakdown),
            Role::Bass => matches!(self, Drop | Verse | Loop | Build | Outro),
            Role::Lead => matches!(self, Drop | Verse | Loop | Breakdown),
            Role::Fx => matches!(self, Build | Drop | Breakdown | Loop | Intro),
        }
    }
}

/// A stretch of music one score covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phrase {
    pub kind: SectionKind,
    pub bars: u32,
    pub intensity: f32,
    /// End with a drum fill.
    pub fill: bool,
}

/// The score of one role over a phrase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    pub notes: Vec<Note>,
    pub hits: Vec<Hit>,
}

/// The chord of every bar of a piece `bars` long: a progression suited to the key and
/// groove, chosen by `seed`.
pub fn chords(recipe: &Recipe, bars: u32, seed: u64) -> Vec<Chord> {
    let mut rng = Pcg32::seed_from_u64(seed ^ 0x4841_524d);
    let minor_third = recipe.key.scale.intervals().contains(&3);
    let table = if recipe.groove == Groove::Ambient {
        PROGRESSIONS_STILL
    } else if minor_third {
        PROGRESSIONS_MINOR
    } else {
        PROGRESSIONS_MAJOR
    };
    let progression = table[rng.random_range(0..table.len())];
    // Slow styles hold each chord for two bars.
    let per_chord = if recipe.groove == Groove::Ambient || recipe.tempo < 80.0 {
        2
    } else {
        1
    };
    let size = if recipe.intensity > 0.5 && recipe.groove != Groove::Rock {
        4
    } else {
        3
    };
    (0..bars)
        .map(|bar| {
            let degree = progression[(bar / per_chord) as usize % progression.len()];
            recipe.key.chord(degree, size, 3)
        })
        .collect()
}

/// Steps (sixteenths) per bar.
fn steps_per_bar(recipe: &Recipe) -> u32 {
    u32::from(recipe.meter.beats_per_bar.max(1)) * 4
}

/// The beat of sixteenth `step` of `bar`, swung.
fn step_beat(recipe: &Recipe, bar: u32, step: u32) -> f64 {
    let beats_per_bar = f64::from(recipe.meter.beats_per_bar.max(1));
    let swing = if step % 2 == 1 {
        f64::from(recipe.swing) * 0.25
    } else {
        0.0
    };
    f64::from(bar) * beats_per_bar + f64::from(step) * 0.25 + swing
}

/// A drum line: which sixteenths of a four-beat bar it plays. `x` full, `o` medium, `g`
/// ghost, `.` rest.
type Line = (Drum, &'static str);

fn groove_lines(groove: Groove, bar: u32) -> &'static [Line] {
    use Drum::*;
    let odd = bar % 2 == 1;
    match groove {
        Groove::FourOnTheFloor => &[
            (Kick, "x...x...x...x..."),
            (Clap, "....x.......x..."),
            (ClosedHat, "g.x.g.x.g.x.g.x."),
        ],
        Groove::Breakbeat if odd => &[
            (Kick, "x.x.......x....."),
            (Snare, "....x..g.g..x..g"),
            (ClosedHat, "x.x.x.x.x.x.x.x."),
        ],
        Groove::Breakbeat => &[
            (Kick, "x.........x....."),
            (Snare, "....x.g....gx..."),
            (ClosedHat, "x.x.x.x.x.x.x.x."),
        ],
        Groove::HalfTime => &[
            (Kick, "x......x..x....."),
            (Snare, "........x.....g."),
            (ClosedHat, "x.o.x.o.x.o.x.o."),
        ],
        Groove::Drill if odd => &[
            (Kick, "x......x..x...x."),
            (Snare, "........x....x.."),
            (ClosedHat, "x.x.x.x.x.x.x.x."),
        ],
        Groove::Drill => &[
            (Kick, "x.....x...x....."),
            (Snare, "........x......."),
            (ClosedHat, "x.x.x.x.x.x.x.x."),
        ],
        Groove::BoomBap => &[
            (Kick, "x......x.xx....."),
            (Snare, "....x.......x..."),
            (ClosedHat, "x.x.x.x.x.x.x.o."),
        ],
        Groove::Rock => &[
            (Kick, "x.......x.x....."),
            (Snare, "....x.......x..."),
            (ClosedHat, "x.x.x.x.x.x.x.x."),
        ],
        Groove::OneDrop => &[
            (Kick, "........x......."),
            (Rim, "........x......."),
            (ClosedHat, "x.o.x.o.x.o.x.o."),
        ],
        Groove::Ambient => &[(TomLow, "x......."), (Shaker, "x.g.o.g.x.g.o.g.")],
    }
}

fn velocity_of(mark: u8) -> Option<f32> {
    match mark {
        b'x' => Some(1.0),
        b'o' => Some(0.65),
        b'g' => Some(0.35),
        _ => None,
    }
}

/// The drums of a phrase.
pub fn drums(recipe: &Recipe, phrase: Phrase, seed: u64) -> Score {
    let mut rng = Pcg32::seed_from_u64(seed ^ 0x4452_554d);
    let steps = steps_per_bar(recipe);
    let mut hits = Vec::new();
    let sparse = matches!(phrase.kind, SectionKind::Intro | SectionKind::Outro);
    for bar in 0..phrase.bars {
        let last_bar = bar + 1 == phrase.bars;
        let roll_beat = (recipe.groove == Groove::Drill && rng.random_bool(0.6))
            .then(|| [1u32, 2, 3][rng.random_range(0..3)]);
        for &(drum, line) in groove_lines(recipe.groove, bar) {
            if sparse && matches!(drum, Drum::Snare | Drum::Clap | Drum::Rim) {
                continue;
            }
            let line = line.as_bytes();
            for step in 0..steps {
                let Some(mut velocity) = velocity_of(line[(step as usize) % line.len()]) else {
                    continue;
                };
                if drum == Drum::ClosedHat {
                    if velocity < 0.5 && phrase.intensity < 0.55 {
                        continue;
                    }
                    if roll_beat.is_some_and(|b| step / 4 == b) {
                        continue;
                    }
                }
                // Fills replace the last beat of a phrase's last bar.
                if last_bar && phrase.fill && step >= steps - 4 && drum != Drum::Kick {
                    continue;
                }
                velocity *= 0.92 + 0.08 * rng.random::<f32>();
                hits.push(Hit {
                    beat: step_beat(recipe, bar, step),
                    drum,
                    velocity,
                });
            }
        }
        if let Some(beat) = roll_beat {
            // Drill hat roll: sixteenth-note triplets across one beat.
            let start = f64::from(bar * u32::from(recipe.meter.beats_per_bar) + beat);
            for i in 0..6 {
                hits.push(Hit {
                    beat: start + f64::from(i) / 6.0,
                    drum: Drum::ClosedHat,
                    velocity: 0.55 + 0.07 * i as f32,
                });
            }
        }
        if recipe.groove == Groove::FourOnTheFloor && phrase.intensity > 0.7 && !sparse {
            for beat in 0..u32::from(recipe.meter.beats_per_bar) {
                hits.push(Hit {
                    beat: step_beat(recipe, bar, beat * 4 + 2),
                    drum: Drum::OpenHat,
                    velocity: 0.45,
                });
            }
        }
        if last_bar && phrase.fill && !sparse {
            fill(recipe, bar, phrase.kind, &mut hits);
        }
    }
    if phrase.kind == SectionKind::Build {
        build_roll(recipe, phrase.bars, &mut hits);
    }
    if matches!(phrase.kind, SectionKind::Drop | SectionKind::Verse)
        && recipe.groove != Groove::Ambient
    {
        hits.push(Hit {
            beat: 0.0,
            drum: Drum::Crash,
            velocity: 0.7,
        });
    }
    Score {
        notes: Vec::new(),
        hits,
    }
}

/// A one-beat fill at the end of a phrase.
fn fill(recipe: &Recipe, bar: u32, kind: SectionKind, hits: &mut Vec<Hit>) {
    let start = f64::from((bar + 1) * u32::from(recipe.meter.beats_per_bar)) - 1.0;
    let drums = if recipe.groove == Groove::Ambient {
        [Drum::Shaker; 4]
    } else if kind == SectionKind::Build {
        [Drum::Snare; 4]
    } else {
        [Drum::Snare, Drum::TomHigh, Drum::TomLow, Drum::TomLow]
    };
    for (i, drum) in drums.into_iter().enumerate() {
        hits.push(Hit {
            beat: start + i as f64 * 0.25,
            drum,
            velocity: 0.6 + 0.1 * i as f32,
        });
    }
}

/// A snare roll over a build: quarters, then eighths, then sixteenths, rising.
fn build_roll(recipe: &Recipe, bars: u32, hits: &mut Vec<Hit>) {
    let beats = f64::from(bars * u32::from(recipe.meter.beats_per_bar));
    let mut beat = 0.0;
    while beat < beats {
        let progress = beat / beats;
        let step = if progress < 0.5 {
            1.0
        } else if progress < 0.75 {
            0.5
        } else {
            0.25
        };
        hits.push(Hit {
            beat,
            drum: Drum::Snare,
            velocity: (0.3 + 0.6 * progress) as f32,
        });
        beat += step;
    }
}

/// The bass note of `chord` placed low enough to carry the groove.
fn bass_root(chord: &Chord, instrument: Instrument) -> i32 {
    let pc = chord.root().rem_euclid(12);
    let low = if instrument == Instrument::Acid {
        36
    } else {
        31
    };
    low + (pc - low).rem_euclid(12)
}

/// The bass line of a phrase.
pub fn bass(
    recipe: &Recipe,
    instrument: Instrument,
    chords: &[Chord],
    phrase: Phrase,
    seed: u64,
) -> Score {
    let mut rng = Pcg32::seed_from_u64(seed ^ 0x4241_5353);
    let beats_per_bar = f64::from(recipe.meter.beats_per_bar.max(1));
    let mut notes = Vec::new();
    let push = |notes: &mut Vec<Note>,
                beat: f64,
                length: f64,
                pitch: i32,
                velocity: f32,
                slide: Option<i32>| {
        notes.push(Note {
            instrument,
            beat,
            length,
            pitch: pitch as f32,
            velocity,
            slide_from: slide.map(|s| s as f32),
            pan: 0.0,
        });
    };
    if instrument == Instrument::Acid {
        // A one-bar sixteenth motif (interval, accent, slide), transposed to each chord.
        let steps = steps_per_bar(recipe);
        let motif: Vec<Option<(i32, bool, bool)>> = (0..steps)
            .map(|step| {
                (step == 0 || rng.random_bool(0.65)).then(|| {
                    let interval = [0, 0, 0, 12, 7, 3, 10][rng.random_range(0..7)];
                    (interval, rng.random_bool(0.25), rng.random_bool(0.2))
                })
            })
            .collect();
        for (bar, chord) in chords.iter().enumerate().take(phrase.bars as usize) {
            let root = bass_root(chord, instrument);
            let mut previous: Option<i32> = None;
            for (step, slot) in motif.iter().enumerate() {
                let Some((interval, accent, slide)) = *slot else {
                    previous = None;
                    continue;
                };
                let mut pitch = root + interval;
                if !recipe.key.contains(pitch) {
                    pitch = root;
                }
                let beat = step_beat(recipe, bar as u32, step as u32);
                let slide_from = previous.filter(|_| slide);
                push(
                    &mut notes,
                    beat,
                    0.22,
                    pitch,
                    if accent { 1.0 } else { 0.75 },
                    slide_from,
                );
                previous = Some(pitch);
            }
        }
        return Score {
            notes,
            hits: Vec::new(),
        };
    }
    for (bar, chord) in chords.iter().enumerate().take(phrase.bars as usize) {
        let root = bass_root(chord, instrument);
        let fifth = if recipe.key.contains(root + 7) {
            root + 7
        } else {
            root + 12
        };
        let bar_start = bar as f64 * beats_per_bar;
        match recipe.groove {
            Groove::FourOnTheFloor => {
                for beat in 0..beats_per_bar as u32 {
                    let b = bar_start + f64::from(beat) + 0.5;
                    let pitch = if phrase.intensity > 0.7 && beat == 3 {
                        root + 12
                    } else {
                        root
                    };
                    push(&mut notes, b, 0.4, pitch, 0.9, None);
                }
            }
            Groove::Breakbeat => {
                push(&mut notes, bar_start, 2.4, root, 0.9, None);
                let target = if rng.random_bool(0.5) {
                    fifth
                } else {
                    root + 12
                };
                push(&mut notes, bar_start + 2.5, 1.4, target, 0.85, Some(root));
            }
            Groove::Drill | Groove::HalfTime | Groove::BoomBap => {
                let kicks: Vec<f64> = groove_lines(recipe.groove, bar as u32)
                    .iter()
                    .filter(|(d, _)| *d == Drum::Kick)
                    .flat_map(|(_, line)| {
                        line.bytes()
                            .enumerate()
                            .filter(|(_, m)| *m == b'x')
                            .map(|(s, _)| s as f64 * 0.25)
                    })
                    .filter(|b| *b < beats_per_bar)
                    .collect();
                let mut previous = root;
                for (i, &at) in kicks.iter().enumerate() {
                    let next = kicks.get(i + 1).copied().unwrap_or(beats_per_bar);
                    let slide = recipe.groove == Groove::Drill && i > 0 && rng.random_bool(0.45);
                    let pitch = if slide {
                        [root + 12, fifth, root + 3, root - 2]
                            .into_iter()
                            .filter(|&p| recipe.key.contains(p))
                            .nth(rng.random_range(0..2))
                            .unwrap_or(root)
                    } else {
                        root
                    };
                    let length = (next - at - 0.05).max(0.2);
                    push(
                        &mut notes,
                        bar_start + at,
                        length,
                        pitch,
                        0.95,
                        slide.then_some(previous),
                    );
                    previous = pitch;
                }
            }
            Groove::Rock => {
                for eighth in 0..(beats_per_bar * 2.0) as u32 {
                    let pitch = if eighth >= 6 { fifth } else { root };
                    push(
                        &mut notes,
                        bar_start + f64::from(eighth) * 0.5,
                        0.42,
                        pitch,
                        0.85,
                        None,
                    );
                }
            }
            Groove::OneDrop => {
                let third = recipe.key.note(chord.degree + 2, 1);
                let third = 31 + (third - 31).rem_euclid(12);
                for (at, length, pitch) in [
                    (0.0, 1.0, root),
                    (1.5, 0.5, root),
                    (2.0, 0.9, fifth),
                    (3.0, 0.9, third),
                ] {
                    push(&mut notes, bar_start + at, length, pitch, 0.9, None);
                }
            }
            Groove::Ambient => {
                if bar % 2 == 0 {
                    push(
                        &mut notes,
                        bar_start,
                        beats_per_bar * 2.0 - 0.1,
                        root + 12,
                        0.6,
                        None,
                    );
                }
            }
        }
    }
    Score {
        notes,
        hits: Vec::new(),
    }
}

/// Sustained, voice-led chords.
pub fn pad(recipe: &Recipe, instrument: Instrument, chords: &[Chord], phrase: Phrase) -> Score {
    let beats_per_bar = f64::from(recipe.meter.beats_per_bar.max(1));
    let (low, high) = if recipe.brightness > 0.6 {
        (55, 79)
    } else {
        (50, 74)
    };
    let mut notes = Vec::new();
    let mut voicing: Vec<i32> = Vec::new();
    let mut bar = 0usize;
    let bars = phrase.bars as usize;
    while bar < bars {
        let Some(chord) = chords.get(bar) else { break };
        // Hold the chord for as many bars as it lasts.
        let mut span = 1;
        while bar + span < bars && chords.get(bar + span) == Some(chord) {
            span += 1;
        }
        voicing = chord.voiced_near(&voicing, low, high).notes;
        for &pitch in &voicing {
            notes.push(Note {
                instrument,
                beat: bar as f64 * beats_per_bar,
                length: span as f64 * beats_per_bar,
                pitch: pitch as f32,
                velocity: 0.7,
                slide_from: None,
                pan: 0.0,
            });
        }
        bar += span;
    }
    Score {
        notes,
        hits: Vec::new(),
    }
}

/// Melodies, arpeggios and sparse piano.
pub fn lead(
    recipe: &Recipe,
    instrument: Instrument,
    chords: &[Chord],
    phrase: Phrase,
    seed: u64,
) -> Score {
    let mut rng = Pcg32::seed_from_u64(seed ^ 0x4c45_4144);
    let beats_per_bar = f64::from(recipe.meter.beats_per_bar.max(1));
    let key = recipe.key;
    let mut notes = Vec::new();
    let mut push = |beat: f64, length: f64, pitch: i32, velocity: f32, pan: f32| {
        notes.push(Note {
            instrument,
            beat,
            length,
            pitch: pitch as f32,
            velocity,
            slide_from: None,
            pan,
        });
    };
    match instrument {
        Instrument::Arp => {
            let step = if recipe.tempo > 140.0 { 0.5 } else { 0.25 };
            let shape: Vec<usize> = match rng.random_range(0..3) {
                0 => vec![0, 1, 2, 3],
                1 => vec![0, 1, 2, 3, 2, 1],
                _ => vec![0, 2, 1, 3],
            };
            for (bar, chord) in chords.iter().enumerate().take(phrase.bars as usize) {
                let tones = chord.voiced_near(&[], 62, 80).notes;
                let mut beat = 0.0;
                let mut i = 0;
                while beat < beats_per_bar - 1e-9 {
                    let idx = shape[i % shape.len()];
                    let pitch = tones.get(idx % tones.len().max(1)).copied().unwrap_or(72)
                        + if idx >= tones.len() { 12 } else { 0 };
                    let accent = if (beat % 1.0) == 0.0 { 0.85 } else { 0.6 };
                    let pan = if i % 2 == 0 { -0.3 } else { 0.3 };
                    push(
                        bar as f64 * beats_per_bar + beat,
                        step * 0.8,
                        pitch,
                        accent,
                        pan,
                    );
                    beat += step;
                    i += 1;
                }
            }
        }
        Instrument::Piano | Instrument::Bell
            if recipe.groove == Groove::Ambient || instrument == Instrument::Piano =>
        {
            // Sparse: a chord tone on the downbeat, a passing note or two after.
            for (bar, chord) in chords.iter().enumerate().take(phrase.bars as usize) {
                let tones = chord.voiced_near(&[], 60, 76).notes;
                let start = bar as f64 * beats_per_bar;
                let first = tones[rng
                    .random_range(0..tones.len().max(1))
                    .min(tones.len().saturating_sub(1))];
                push(start, beats_per_bar * 0.5, first, 0.75, 0.1);
                if instrument == Instrument::Piano {
                    let low = tones.first().copied().unwrap_or(60) - 12;
                    push(start, beats_per_bar, low, 0.55, -0.1);
                }
                let count = if phrase.intensity > 0.5 { 2 } else { 1 };
                let mut degree = chord.degree + 4;
                for k in 0..count {
                    let at = beats_per_bar * (0.5 + 0.25 * k as f64)
                        + if rng.random_bool(0.5) { 0.5 } else { 0.0 };
                    degree += [-1, 1, 2][rng.random_range(0..3)];
                    if at < beats_per_bar {
                        push(
                            start + at,
                            beats_per_bar - at,
                            key.note(degree, 4),
                            0.6,
                            0.15,
                        );
                    }
                }
            }
        }
        _ => {
            // A two-bar motif of scale steps relative to each bar's chord.
            let slots: Vec<f64> = (0..(beats_per_bar * 4.0) as u32)
                .map(|s| f64::from(s) * 0.25)
                .collect();
            let mut motif: Vec<(f64, i32)> = Vec::new();
            for half in 0..2 {
                let count = 3 + (phrase.intensity * 3.0) as usize;
                let mut picked: Vec<f64> = slots
                    .iter()
                    .copied()
                    .filter(|s| s.fract() == 0.0 || s.fract() == 0.5 || phrase.intensity > 0.7)
                    .filter(|_| rng.random_bool((count as f64 / 8.0).min(0.9)))
                    .collect();
                if picked.first() != Some(&0.0) {
                    picked.insert(0, 0.0);
                }
                let mut degree = [0, 2, 4][rng.random_range(0..3)];
                for at in picked {
                    motif.push((f64::from(half) * beats_per_bar + at, degree));
                    degree += [-2, -1, 1, 1, 2, 3][rng.random_range(0..6)];
                    degree = degree.clamp(-2, 9);
                }
            }
            for (bar, chord) in chords.iter().enumerate().take(phrase.bars as usize) {
                let bar_start = bar as f64 * beats_per_bar;
                let in_motif = (bar % 2) as f64 * beats_per_bar;
                let this_bar: Vec<&(f64, i32)> = motif
                    .iter()
                    .filter(|(at, _)| *at >= in_motif && *at < in_motif + beats_per_bar)
                    .collect();
                for (i, &&(at, degree)) in this_bar.iter().enumerate() {
                    let next = this_bar
                        .get(i + 1)
                        .map(|n| n.0)
                        .unwrap_or(in_motif + beats_per_bar);
                    let length = (next - at).clamp(0.2, 1.5) * 0.9;
                    let pitch = key.note(chord.degree + degree, 4);
                    let pitch = if pitch > 84 { pitch - 12 } else { pitch };
                    push(bar_start + (at - in_motif), length, pitch, 0.8, 0.1);
                }
            }
        }
    }
    Score {
        notes,
        hits: Vec::new(),
    }
}

/// Effects placed on the section: a riser through a build, an impact on a drop, a
/// downlifter into a breakdown, a sweep across a loop.
pub fn fx(recipe: &Recipe, instrument: Instrument, phrase: Phrase) -> Score {
    let beats_per_bar = f64::from(recipe.meter.beats_per_bar.max(1));
    let beats = f64::from(phrase.bars) * beats_per_bar;
    let pitch = recipe.key.note(0, 4) as f32;
    let note = |instrument, beat: f64, length: f64, velocity| Note {
        instrument,
        beat,
        length,
        pitch,
        velocity,
        slide_from: None,
        pan: 0.0,
    };
    let notes = match phrase.kind {
        SectionKind::Build => vec![note(Instrument::Riser, 0.0, beats, 0.9)],
        SectionKind::Drop | SectionKind::Verse => {
            vec![note(Instrument::Impact, 0.0, beats_per_bar, 0.9)]
        }
        SectionKind::Breakdown => vec![note(Instrument::Downlifter, 0.0, beats_per_bar * 2.0, 0.8)],
        SectionKind::Intro => vec![note(Instrument::NoiseSweep, 0.0, beats, 0.5)],
        SectionKind::Loop | SectionKind::Outro => {
            let length = if instrument == Instrument::Impact {
                beats_per_bar
            } else {
                beats
            };
            vec![note(instrument, 0.0, length, 0.8)]
        }
    };
    Score {
        notes,
        hits: Vec::new(),
    }
}

/// The score of `instrument`'s role over a phrase.
pub fn score(
    recipe: &Recipe,
    instrument: Instrument,
    chords: &[Chord],
    phrase: Phrase,
    seed: u64,
) -> Score {
    match instrument.role() {
        Role::Drum => drums(recipe, phrase, seed),
        Role::Bass => bass(recipe, instrument, chords, phrase, seed),
        Role::Pad => pad(recipe, instrument, chords, phrase),
        Role::Lead => lead(recipe, instrument, chords, phrase, seed),
        Role::Fx => fx(recipe, instrument, phrase),
    }
}

/// A kick tuned to the key: the tonic or fifth that falls between 40 and 62 Hz.
pub fn kick_hz(key: Key) -> f32 {
    let tonic = i32::from(key.tonic.semitones());
    [tonic + 24, tonic + 12, tonic + 31, tonic + 19]
        .into_iter()
        .map(|n| crate::music::note_hz(n as f32))
        .find(|hz| (40.0..=62.0).contains(hz))
        .unwrap_or(50.0)
}
