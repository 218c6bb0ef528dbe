//! Key and scale: a pitch-class profile of the audio matched against the 24 major and minor
//! key profiles.
//!
//! The profile is the tonal chroma from 60 Hz (bass roots included) to 4 kHz: sustained
//! notes, not hits. It is correlated (Pearson) with the Krumhansl–Kessler probe-tone profiles
//! rotated to each tonic; the best correlation names the key.

use serde::Serialize;

use super::chroma::{ChromaReader, Weighting, chroma_range, in_key};
use crate::music::{Key, PitchClass, Scale};

/// Krumhansl and Kessler's probe-tone ratings, tonic first.
const MAJOR: [f64; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
const MINOR: [f64; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];

/// A relative major and minor this close (runner-up over best) are told apart by the
/// leading tone.
const RELATIVE_TIE: f64 = 0.85;
/// The leading tone, against the subtonic, above which the music is in the minor (the
/// major's third puts a fifth harmonic on it: 0.2–0.5 in relative-major music).
const LEADING_TONE: f64 = 0.8;

/// Where the notes are read, Hz.
const RANGE: (f32, f32) = (60.0, 4_000.0);

/// A key estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KeyEstimate {
    #[serde(serialize_with = "as_text")]
    pub key: Key,
    /// The winning correlation, -1 to 1.
    pub correlation: f64,
    /// How far it stands above the runner-up, 0–1 (0: a tie; a relative major and minor
    /// told apart by the leading tone can read 0).
    pub confidence: f64,
    /// The share of the audio's pitch-class energy inside the key's scale.
    pub in_key: f64,
}

fn as_text<S: serde::Serializer>(key: &Key, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(key)
}

fn pearson(a: &[f64; 12], b: &[f64; 12]) -> f64 {
    let ma = a.iter().sum::<f64>() / 12.0;
    let mb = b.iter().sum::<f64>() / 12.0;
    let (mut num, mut da, mut db) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        num += (x - ma) * (y - mb);
        da += (x - ma) * (x - ma);
        db += (y - mb) * (y - mb);
    }
    if da <= 0.0 || db <= 0.0 {
        0.0
    } else {
        num / (da * db).sqrt()
    }
}

/// The pitch-class profile the key is read from, summing to 1 (all zeros for silence or
/// audio with no tonal content).
pub fn profile(frames: &[[f32; 2]], sample_rate: u32) -> [f64; 12] {
    chroma_range(frames, sample_rate, RANGE.0, RANGE.1, Weighting::Magnitude)
}

/// Reads [`profile`] from a mono signal at `sample_rate` that arrives in pieces.
pub fn profile_reader(sample_rate: u32) -> ChromaReader {
    ChromaReader::new(sample_rate, RANGE.0, RANGE.1, Weighting::Magnitude)
}

/// The key of `frames`, or `None` when there is no tonal content to read.
pub fn estimate(frames: &[[f32; 2]], sample_rate: u32) -> Option<KeyEstimate> {
    let chroma = profile(frames, sample_rate);
    estimate_from(&chroma)
}

/// The key a pitch-class profile matches best.
pub fn estimate_from(chroma: &[f64; 12]) -> Option<KeyEstimate> {
    if chroma.iter().all(|&c| c == 0.0) {
        return None;
    }
    let mut scores: Vec<(f64, Key)> = Vec::with_capacity(24);
    for tonic in (0..12).map(PitchClass::new) {
        for (template, scale) in [(&MAJOR, Scale::Major), (&MINOR, Scale::Minor)] {
            scores.push((correlation(chroma, template, tonic), Key::new(tonic, scale)));
        }
    }
    scores.sort_by(|a, b| b.0.total_cmp(&a.0));
    // NOTE: a major key and its relative minor share every note; when the profiles cannot
    // tell them apart, the minor's leading tone can: minor music raises its seventh for the
    // dominant chord (A minor's E major brings G#), its relative major never plays it.
    // The other of the major and minor key with the same notes.
    let relative = scores[0].1.with_its_notes()[1];
    if scores[1].1 == relative && scores[1].0 >= RELATIVE_TIE * scores[0].0 {
        let minor = if scores[0].1.scale == Scale::Minor {
            scores[0].1
        } else {
            scores[1].1
        };
        let tonic = usize::from(minor.tonic.semitones());
        let leading = chroma[(tonic + 11) % 12];
        let subtonic = chroma[(tonic + 10) % 12];
        let minor_wins = leading > LEADING_TONE * subtonic;
        if minor_wins != (scores[0].1.scale == Scale::Minor) {
            scores.swap(0, 1);
        }
    }
    Some(reading(chroma, scores[0], scores[1].0))
}

/// The key on `tonic` a pitch-class profile matches best: its major or its minor, where the
/// tonic is known (from a file's loop information) and only the mode is to be heard.
/// Confidence is how far the winner stands above the other.
pub fn estimate_on(chroma: &[f64; 12], tonic: PitchClass) -> Option<KeyEstimate> {
    if chroma.iter().all(|&c| c == 0.0) {
        return None;
    }
    let mut scores = [(&MAJOR, Scale::Major), (&MINOR, Scale::Minor)]
        .map(|(template, scale)| (correlation(chroma, template, tonic), Key::new(tonic, scale)));
    scores.sort_by(|a, b| b.0.total_cmp(&a.0));
    Some(reading(chroma, scores[0], scores[1].0))
}

/// The estimate of a key that scored `best` against a runner-up's `runner_up`.
fn reading(chroma: &[f64; 12], (best, key): (f64, Key), runner_up: f64) -> KeyEstimate {
    KeyEstimate {
        key,
        correlation: best,
        confidence: ((best - runner_up).abs() / best.abs().max(1e-9)).clamp(0.0, 1.0),
        in_key: in_key(chroma, &key),
    }
}

/// How well `chroma` correlates with `template` rotated to `tonic`.
fn correlation(chroma: &[f64; 12], template: &[f64; 12], tonic: PitchClass) -> f64 {
    let tonic = usize::from(tonic.semitones());
    let mut rotated = [0.0; 12];
    for (i, r) in rotated.iter_mut().enumerate() {
        *r = template[(i + 12 - tonic) % 12];
    }
    pearson(chroma, &rotated)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;

    fn tone(hz: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..n).map(move |i| (std::f32::consts::TAU * hz * i as f32 / RATE as f32).sin())
    }

    fn midi_hz(note: i32) -> f32 {
        440.0 * 2f32.powf((note - 69) as f32 / 12.0)
    }

    /// Two seconds per chord, each a triad over its root in the bass.
    fn progression(chords: &[(i32, [i32; 3])]) -> Vec<[f32; 2]> {
        let n = RATE as usize * 2;
        let mut out = Vec::new();
        for (bass, triad) in chords {
            let mut chord = vec![0.0f32; n];
            for note in triad.iter().map(|t| 60 + t).chain([36 + bass]) {
                for (c, s) in chord.iter_mut().zip(tone(midi_hz(note), n)) {
                    *c += 0.15 * s;
                }
            }
            out.extend(chord.into_iter().map(|s| [s, s]));
        }
        out
    }

    #[test]
    fn a_cadence_in_g_major_reads_as_g_major() {
        // G - C - D - G, triads voiced near middle C.
        let audio = progression(&[
            (7, [-5, -1, 2]),
            (0, [0, 4, 7]),
            (2, [2, 6, 9]),
            (7, [-5, -1, 2]),
        ]);
        let est = estimate(&audio, RATE).unwrap();
        assert_eq!(est.key.to_string(), "G major", "{est:?}");
    }

    #[test]
    fn a_cadence_in_d_minor_reads_as_d_minor() {
        // Dm - Gm - A - Dm.
        let audio = progression(&[
            (2, [2, 5, 9]),
            (7, [-5, -2, 2]),
            (9, [-3, 1, 4]),
            (2, [2, 5, 9]),
        ]);
        let est = estimate(&audio, RATE).unwrap();
        assert_eq!(est.key.to_string(), "D minor", "{est:?}");
    }

    #[test]
    fn a_known_tonic_leaves_only_the_mode_to_hear() {
        // Am - F - C - G: natural minor, or C major's vi - IV - I - V; the notes alone
        // cannot say which, the tonic can.
        let audio = progression(&[
            (9, [-3, 0, 4]),
            (5, [-7, -3, 0]),
            (0, [0, 4, 7]),
            (7, [-5, -1, 2]),
        ]);
        let notes = profile(&audio, RATE);
        let on_a = estimate_on(&notes, PitchClass::new(9)).unwrap();
        assert_eq!(on_a.key.to_string(), "A minor", "{on_a:?}");
        let on_c = estimate_on(&notes, PitchClass::new(0)).unwrap();
        assert_eq!(on_c.key.to_string(), "C major", "{on_c:?}");
        assert!(on_a.confidence > 0.0 && on_c.confidence > 0.0);
        assert_eq!(estimate_on(&[0.0; 12], PitchClass::new(0)), None);
    }

    #[test]
    fn silence_has_no_key() {
        assert_eq!(estimate(&vec![[0.0; 2]; RATE as usize * 3], RATE), None);
    }
}
