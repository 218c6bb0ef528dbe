//! Pitch-class energy (chroma): which of the twelve notes a piece of audio is made of.

use crate::music::Key;

/// Frames in the time median that keeps sustained tones and drops hits.
const MEDIAN: usize = 9;
const _: () = assert!(MEDIAN == 9, "median_of_nine is a network for nine");
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
    let mut reader = ChromaReader::new(sample_rate, low_hz, high_hz, weighting);
    super::for_each_mono_block(frames, |block| reader.push(block));
    reader.finish()
}

/// The lowest rate whose halving filter keeps `high_hz` flat (it is flat to 0.4 of the rate).
fn lowest_rate(high_hz: f32) -> u32 {
    (2.5 * high_hz).ceil() as u32
}

/// [`chroma_range`] of a mono signal that arrives in pieces.
pub struct ChromaReader {
    /// Brings the signal to the rate notes are read at.
    down: super::Downsampler,
    /// None when the range holds no bins at this rate.
    spectrogram: Option<super::Spectrogram>,
    notes: Notes,
}

/// The tonal peaks of each spectrum, summed into pitch classes.
struct Notes {
    /// The last MEDIAN magnitude spectra, as a ring.
    ring: Vec<Vec<f32>>,
    tonal: Vec<f32>,
    count: usize,
    lo: usize,
    hi: usize,
    bin_hz: f32,
    weighting: Weighting,
    bins: [f64; 12],
}

impl ChromaReader {
    /// Reads a signal at `sample_rate`, its peaks between `low_hz` and `high_hz` weighted as
    /// asked, at the lowest rate that keeps `high_hz` in the flat band.
    pub fn new(sample_rate: u32, low_hz: f32, high_hz: f32, weighting: Weighting) -> Self {
        let down = super::Downsampler::new(sample_rate, lowest_rate(high_hz));
        let rate = down.rate();
        // About 170 ms (or 680 ms for bass) at any rate, a power of two.
        let base = (rate as usize / 6).next_power_of_two().max(1024);
        let frame_len = if low_hz < LOW_HZ { base * 4 } else { base };
        let hop = frame_len / 4;
        let bin_hz = rate.max(1) as f32 / frame_len as f32;
        let lo = ((low_hz / bin_hz) as usize).max(1);
        // The spectrum has frame_len / 2 + 1 bins; a peak needs one above it.
        let hi = ((high_hz / bin_hz) as usize).min(frame_len / 2 - 1);
        Self {
            down,
            spectrogram: (lo < hi).then(|| super::Spectrogram::new(frame_len, hop, hi + 2)),
            notes: Notes {
                ring: vec![vec![0.0f32; hi + 2]; MEDIAN],
                tonal: vec![0.0f32; hi + 2],
                count: 0,
                lo,
                hi,
                bin_hz,
                weighting,
                bins: [0.0; 12],
            },
        }
    }

    /// Takes the next samples.
    pub fn push(&mut self, samples: &[f32]) {
        let Self {
            down,
            spectrogram: Some(spectrogram),
            notes,
        } = self
        else {
            return;
        };
        down.push_through(samples, |lower| {
            spectrogram.push(lower, &mut |m: &[f32]| notes.frame(m));
        });
    }

    /// The chroma of everything taken, summing to 1 (all zeros for silence).
    pub fn finish(self) -> [f64; 12] {
        let Self {
            down,
            spectrogram,
            mut notes,
        } = self;
        if let Some(mut spectrogram) = spectrogram {
            down.finish_through(|rest| spectrogram.push(rest, &mut |m: &[f32]| notes.frame(m)));
            spectrogram.finish(&mut |m: &[f32]| notes.frame(m));
        }
        let mut bins = notes.bins;
        let total: f64 = bins.iter().sum();
        if total > 0.0 {
            bins.iter_mut().for_each(|b| *b /= total);
        }
        bins
    }
}

impl Notes {
    fn frame(&mut self, magnitudes: &[f32]) {
        self.ring[self.count % MEDIAN].copy_from_slice(magnitudes);
        self.count += 1;
        if self.count < MEDIAN {
            return;
        }
        median_of_nine(&self.ring, &mut self.tonal);
        let tonal = &self.tonal;
        for k in self.lo.max(1)..=self.hi {
            let m = tonal[k];
            if m <= tonal[k - 1] || m < tonal[k + 1] || m <= 0.0 {
                continue;
            }
            if self.weighting == Weighting::Energy {
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
            // From 60 Hz up, so above 1 Hz and the note number positive: the fast
            // logarithm holds, and adding ½ and truncating rounds.
            let hz = ((k as f32 + offset) * self.bin_hz).max(1.0);
            let note = 69.0 + 12.0 * (crate::dsp::fast_log2(hz) - 440f32.log2());
            let nearest = (note + 0.5).max(0.0) as i32;
            if (note - nearest as f32).abs() < 0.35 {
                let pc = nearest.rem_euclid(12) as usize;
                self.bins[pc] += match self.weighting {
                    Weighting::Energy => f64::from(m) * f64::from(m),
                    Weighting::Magnitude => f64::from(m),
                };
            }
        }
    }
}

super::widened! {
    /// Each bin's median across the nine spectra of `ring`, into `out`: Paeth's 19-exchange
    /// network, branch-free, run on eight bins at a time.
    fn median_of_nine(ring: &[Vec<f32>], out: &mut [f32]) = median_of_nine_portable
}

#[inline(always)]
fn median_of_nine_portable(ring: &[Vec<f32>], out: &mut [f32]) {
    const LANES: usize = 8;
    let n = out.len();
    let full = n - n % LANES;
    for k in (0..full).step_by(LANES) {
        let p = std::array::from_fn(|row| {
            let lanes: [f32; LANES] = ring[row][k..k + LANES].try_into().unwrap_or_default();
            lanes
        });
        out[k..k + LANES].copy_from_slice(&median9(p));
    }
    if full < n {
        let p = std::array::from_fn(|row| {
            let mut lanes = [0.0f32; LANES];
            lanes[..n - full].copy_from_slice(&ring[row][full..n]);
            lanes
        });
        out[full..].copy_from_slice(&median9(p)[..n - full]);
    }
}

/// The lane-wise median of nine rows, by Paeth's network.
#[inline(always)]
fn median9<const LANES: usize>(mut p: [[f32; LANES]; MEDIAN]) -> [f32; LANES] {
    macro_rules! exchange {
        ($($a:literal $b:literal),*) => {$({
            let (x, y) = (p[$a], p[$b]);
            for i in 0..LANES {
                p[$a][i] = if x[i] < y[i] { x[i] } else { y[i] };
                p[$b][i] = if x[i] < y[i] { y[i] } else { x[i] };
            }
        })*};
    }
    exchange!(1 2, 4 5, 7 8, 0 1, 3 4, 6 7, 1 2, 4 5, 7 8, 0 3, 5 8, 4 7, 3 6, 1 4, 2 5,
        4 7, 4 2, 6 4, 4 2);
    p[4]
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

    #[test]
    fn the_median_network_agrees_with_sorting() {
        // Every bin a different shuffle of distinct and repeated values.
        let ring: Vec<Vec<f32>> = (0..MEDIAN)
            .map(|i| {
                (0..67)
                    .map(|k| ((i * 7 + k * 13) % 11) as f32 * (1 + k % 3) as f32)
                    .collect()
            })
            .collect();
        let mut out = vec![0.0; 67];
        median_of_nine(&ring, &mut out);
        for (k, o) in out.iter().enumerate() {
            let mut column: Vec<f32> = ring.iter().map(|r| r[k]).collect();
            column.sort_by(f32::total_cmp);
            assert_eq!(*o, column[MEDIAN / 2], "bin {k}");
        }
    }
}
