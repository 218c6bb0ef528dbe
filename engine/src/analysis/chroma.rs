//! Pitch-class energy (chroma): which of the twelve notes a piece of audio is made of.

use crate::music::Key;

/// Frames in the time median that keeps sustained tones and drops hits.
const MEDIAN: usize = 9;
const LOW_HZ: f32 = 200.0;
const HIGH_HZ: f32 = 4000.0;

/// How spectral peaks count towards their pitch class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// By energy, and a peak at the 3rd, 5th, 6th or 7th harmonic of a louder peak not at
    /// all: what a part is made of, its notes without their colour.
    Energy,
    /// By magnitude, every peak: the profile a key is read from, where a quiet chord tone
    /// still counts as the note it is.
    Magnitude,
}

/// Energy per pitch class (index 0 = C), normalised to sum to 1; all zeros for silence.
///
/// Only the tonal part of the sound counts: each bin's magnitude is the median of its last
/// nine frames (about 0.4 s), which keeps held notes and drops drum hits and pitch sweeps;
/// then spectral peaks between 200 Hz and 4 kHz that are not the 3rd, 5th, 6th or 7th harmonic
/// of a louder peak are summed into their pitch class.
pub fn chroma(frames: &[[f32; 2]], sample_rate: u32) -> [f64; 12] {
    chroma_range(frames, sample_rate, LOW_HZ, HIGH_HZ, Weighting::Energy)
}

/// [`chroma`] over the peaks between `low_hz` and `high_hz`, weighted as asked. Below
/// 200 Hz the frames are four times longer (0.7 s at 48 kHz), so that neighbouring bass
/// notes fall in different bins; each peak's pitch is placed by parabolic interpolation
/// between bins.
pub fn chroma_range(
    frames: &[[f32; 2]],
    sample_rate: u32,
    low_hz: f32,
    high_hz: f32,
    weighting: Weighting,
) -> [f64; 12] {
    let mut bins = [0.0f64; 12];
    // About 170 ms (or 680 ms for bass) at any rate, a power of two.
    let base = (sample_rate as usize / 6).next_power_of_two().max(1024);
    let frame_len = if low_hz < LOW_HZ { base * 4 } else { base };
    let hop = frame_len / 4;
    if frames.len() < frame_len {
        return bins;
    }
    let bin_hz = sample_rate as f32 / frame_len as f32;
    let lo = ((low_hz / bin_hz) as usize).max(1);
    // The spectrum has frame_len / 2 + 1 bins; a peak needs one above it.
    let hi = ((high_hz / bin_hz) as usize).min(frame_len / 2 - 1);
    if lo >= hi {
        return bins;
    }
    // The last MEDIAN magnitude spectra, as a ring.
    let mut ring = vec![vec![0.0f32; hi + 2]; MEDIAN];
    let mut tonal = vec![0.0f32; hi + 2];
    let mut column = [0.0f32; MEDIAN];
    let mut count = 0usize;
    super::for_each_spectrum(frames, frame_len, hop, |spectrum| {
        let slot = &mut ring[count % MEDIAN];
        for (m, c) in slot.iter_mut().zip(spectrum) {
            *m = c.norm();
        }
        count += 1;
        if count < MEDIAN {
            return;
        }
        for (k, t) in tonal.iter_mut().enumerate() {
            for (c, frame) in column.iter_mut().zip(&ring) {
                *c = frame[k];
            }
            column.sort_unstable_by(f32::total_cmp);
            *t = column[MEDIAN / 2];
        }
        for k in lo.max(1)..=hi {
            let m = tonal[k];
            if m <= tonal[k - 1] || m < tonal[k + 1] || m <= 0.0 {
                continue;
            }
            if weighting == Weighting::Energy {
                // A 3rd, 5th, 6th or 7th harmonic of a louder note below is that note's
                // colour, not a note of its own: it would read as the fifth or the major
                // third above.
                let harmonic = [3usize, 5, 6, 7].iter().any(|&h| {
                    let below = k / h;
                    below >= 1 && (below..=below + 1).any(|j| tonal.get(j).is_some_and(|&c| c >= m))
                });
                if harmonic {
                    continue;
                }
            }
            // The peak's true frequency, between bins.
            let (a, b, c) = (tonal[k - 1], m, tonal[k + 1]);
            let denom = a - 2.0 * b + c;
            let offset = if denom.abs() > 1e-12 {
                (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
            } else {
                0.0
            };
            let hz = (k as f32 + offset) * bin_hz;
            let note = 69.0 + 12.0 * (hz / 440.0).log2();
            let nearest = note.round();
            if (note - nearest).abs() < 0.35 {
                let pc = (nearest as i32).rem_euclid(12) as usize;
                bins[pc] += match weighting {
                    Weighting::Energy => f64::from(m) * f64::from(m),
                    Weighting::Magnitude => f64::from(m),
                };
            }
        }
    });
    let total: f64 = bins.iter().sum();
    if total > 0.0 {
        bins.iter_mut().for_each(|b| *b /= total);
    }
    bins
}

/// The share of `chroma` that falls on `key`'s pitch classes, 0–1.
pub fn in_key(chroma: &[f64; 12], key: &Key) -> f64 {
    key.mask()
        .iter()
        .zip(chroma)
        .filter(|(m, _)| **m)
        .map(|(_, c)| c)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_a_major_triad_reads_as_a_c_sharp_e() {
        let rate = 48_000;
        let audio: Vec<[f32; 2]> = (0..rate * 2)
            .map(|n| {
                let t = n as f32 / rate as f32;
                let s: f32 = [220.0f32, 277.18, 329.63]
                    .iter()
                    .map(|hz| (std::f32::consts::TAU * hz * t).sin() * 0.2)
                    .sum();
                [s, s]
            })
            .collect();
        let c = chroma(&audio, rate as u32);
        for pc in [9, 1, 4] {
            assert!(c[pc] > 0.25, "{c:?}");
        }
        let a_major: Key = "A major".parse().unwrap();
        assert!(in_key(&c, &a_major) > 0.95);
    }
}
