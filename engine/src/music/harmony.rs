//! Notes, chords, progressions and voice leading: the harmony the synth plays.
//!
//! Notes are MIDI note numbers (60 = middle C) as `i32`; chords are built by stacking
//! thirds inside a key's scale, so every chord of every progression stays in the key.

use super::Key;

/// Frequency of a (possibly fractional) MIDI note, A4 = 440 Hz.
pub fn note_hz(note: f32) -> f32 {
    440.0 * ((note - 69.0) / 12.0).exp2()
}

impl Key {
    /// True when `semitones` above C (any octave) is one of the key's pitch classes.
    pub fn contains(&self, semitones: i32) -> bool {
        let offset = (semitones - i32::from(self.tonic.semitones())).rem_euclid(12);
        self.scale
            .intervals()
            .iter()
            .any(|&i| i32::from(i) == offset)
    }

    /// The key's pitch classes as a 12-entry mask, index 0 = C.
    pub fn mask(&self) -> [bool; 12] {
        let mut mask = [false; 12];
        for (pc, slot) in mask.iter_mut().enumerate() {
            *slot = self.contains(pc as i32);
        }
        mask
    }

    /// The MIDI note of scale degree `degree` (0 = tonic; negative or past the scale moves
    /// by octaves) with the tonic placed in `octave` (MIDI octave: 4 puts C at 60).
    pub fn note(&self, degree: i32, octave: i32) -> i32 {
        let intervals = self.scale.intervals();
        let len = intervals.len() as i32;
        let step = degree.rem_euclid(len);
        let octaves = degree.div_euclid(len);
        let interval = intervals.get(step as usize).copied().unwrap_or(0);
        12 * (octave + 1 + octaves) + i32::from(self.tonic.semitones()) + i32::from(interval)
    }

    /// The chord on scale degree `degree`: `size` notes stacked in thirds of the scale
    /// (3 = triad, 4 = seventh), root in `octave`.
    pub fn chord(&self, degree: i32, size: usize, octave: i32) -> Chord {
        let notes = (0..size as i32)
            .map(|i| self.note(degree + 2 * i, octave))
            .collect();
        Chord { degree, notes }
    }
}

/// A chord: its scale degree and its notes, lowest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chord {
    pub degree: i32,
    pub notes: Vec<i32>,
}

impl Chord {
    /// The root note.
    pub fn root(&self) -> i32 {
        self.notes.first().copied().unwrap_or(60)
    }

    /// The same pitch classes voiced as close as possible to `previous`, inside
    /// `low..=high`: each tone takes the octave nearest the previous voicing's centre, so
    /// moving from chord to chord the voices step instead of leaping.
    pub fn voiced_near(&self, previous: &[i32], low: i32, high: i32) -> Chord {
        let centre = if previous.is_empty() {
            (low + high) / 2
        } else {
            previous.iter().sum::<i32>() / previous.len() as i32
        };
        let mut notes: Vec<i32> = self
            .notes
            .iter()
            .map(|&n| {
                let pc = n.rem_euclid(12);
                // The octave of this pitch class nearest the centre, kept in range.
                let mut best = pc + 12 * ((centre - pc) as f32 / 12.0).round() as i32;
                while best < low {
                    best += 12;
                }
                while best > high {
                    best -= 12;
                }
                // Prefer the note nearest to any previous voice (common tones stay put).
                if let Some(&nearest) = previous.iter().min_by_key(|&&p| (p - best).abs())
                    && (nearest - best).abs() > 6
                {
                    let alt = if nearest > best { best + 12 } else { best - 12 };
                    if (low..=high).contains(&alt) {
                        best = alt;
                    }
                }
                best
            })
            .collect();
        notes.sort_unstable();
        notes.dedup();
        Chord {
            degree: self.degree,
            notes,
        }
    }
}

/// Chord progressions as scale degrees, one chord per bar. They read the same in any
/// scale: degree 0 is the tonic chord, 5 the sixth, and so on.
pub const PROGRESSIONS_MINOR: &[&[i32]] = &[
    &[0, 5, 2, 6],
    &[0, 3, 5, 4],
    &[0, 6, 5, 6],
    &[0, 0, 5, 6],
    &[0, 3, 0, 4],
    &[0, 5, 3, 4],
];

/// Progressions for keys with a major third.
pub const PROGRESSIONS_MAJOR: &[&[i32]] = &[
    &[0, 4, 5, 3],
    &[0, 5, 3, 4],
    &[5, 3, 0, 4],
    &[0, 3, 0, 4],
    &[0, 3, 5, 4],
    &[0, 2, 3, 3],
];

/// Slow, static progressions for ambient and sleep styles.
pub const PROGRESSIONS_STILL: &[&[i32]] = &[&[0, 0, 3, 3], &[0, 3], &[0, 5, 3, 0], &[0, 2, 0, 3]];

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Key {
        text.parse().unwrap()
    }

    #[test]
    fn a440_and_middle_c() {
        assert!((note_hz(69.0) - 440.0).abs() < 1e-3);
        assert!((note_hz(60.0) - 261.626).abs() < 1e-2);
    }

    #[test]
    fn degrees_walk_the_scale_and_wrap_by_octaves() {
        let c = key("C major");
        assert_eq!(c.note(0, 4), 60);
        assert_eq!(c.note(2, 4), 64);
        assert_eq!(c.note(7, 4), 72);
        assert_eq!(c.note(-1, 4), 59);
        let fsharp = key("F# minor");
        assert_eq!(fsharp.note(0, 2), 42);
        assert_eq!(fsharp.note(2, 2), 45);
    }

    #[test]
    fn every_chord_of_every_key_stays_in_the_key() {
        for scale in crate::music::Scale::ALL {
            for tonic in 0..12 {
                let k = Key::new(crate::music::PitchClass::new(tonic), scale);
                for degree in 0..7 {
                    for n in k.chord(degree, 4, 3).notes {
                        assert!(k.contains(n), "{k} degree {degree}: {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn triads_are_stacked_thirds() {
        assert_eq!(key("C major").chord(0, 3, 4).notes, vec![60, 64, 67]);
        assert_eq!(key("A minor").chord(0, 3, 3).notes, vec![57, 60, 64]);
        assert_eq!(key("C major").chord(4, 4, 4).notes, vec![67, 71, 74, 77]);
    }

    #[test]
    fn voice_leading_moves_little() {
        let c = key("C major");
        let mut previous = c.chord(0, 3, 4).voiced_near(&[], 55, 76).notes;
        for degree in [4, 5, 3, 0] {
            let next = c.chord(degree, 3, 4).voiced_near(&previous, 55, 76).notes;
            let moved: i32 = next
                .iter()
                .map(|n| previous.iter().map(|p| (p - n).abs()).min().unwrap())
                .sum();
            assert!(moved <= 9, "{previous:?} -> {next:?} moves {moved}");
            assert!(next.iter().all(|n| (55..=76).contains(n)));
            previous = next;
        }
    }
}
