//! Pitch-class energy (chroma): which of the twelve notes a piece of audio is made of.

use realfft::RealFftPlanner;

use crate::music::Key;

const FRAME: usize = 8192;
const HOP: usize = 2048;
/// Frames in the time median that keeps sustained tones and drops hits (about 0.4 s).
const MEDIAN: usize = 9;
const LOW_HZ: f32 = 200.0;
const HIGH_HZ: f32 = 4000.0;

/// Energy per pitch class (index 0 = C), normalised to sum to 1; all zeros for silence.
///
/// Only the tonal part of the sound counts: each bin's magnitude is the median of its last
/// nine frames (about 0.4 s), which keeps held notes and drops drum hits and pitch sweeps;
/// then spectral peaks between 200 Hz and 4 kHz that are not the 3rd, 5th, 6th or 7th harmonic
/// of a louder peak are summed into their pitch class.
pub fn chroma(frames: &[[f32; 2]], sample_rate: u32) -> [f64; 12] {
    let mut bins = [0.0f64; 12];
    if frames.len() < FRAME {
        return bins;
    }
    let mut planner = RealFftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(FRAME);
    let window: Vec<f32> = (0..FRAME)
        .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / FRAME as f32).cos())
        .collect();
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let bin_hz = sample_rate as f32 / FRAME as f32;
    let hi = ((HIGH_HZ / bin_hz) as usize).min(spectrum.len() - 2);
    // Each FFT bin's pitch class, or none when it falls between two notes.
    let classes: Vec<Option<usize>> = (0..=hi + 1)
        .map(|k| {
            let hz = k as f32 * bin_hz;
            if hz < LOW_HZ {
                return None;
            }
            let note = 69.0 + 12.0 * (hz / 440.0).log2();
            let nearest = note.round();
            ((note - nearest).abs() < 0.35).then(|| (nearest as i32).rem_euclid(12) as usize)
        })
        .collect();
    // The last MEDIAN magnitude spectra, as a ring.
    let mut ring = vec![vec![0.0f32; hi + 2]; MEDIAN];
    let mut tonal = vec![0.0f32; hi + 2];
    let mut column = [0.0f32; MEDIAN];
    let mut start = 0;
    let mut count = 0usize;
    while start + FRAME <= frames.len() {
        for ((x, f), w) in input
            .iter_mut()
            .zip(&frames[start..start + FRAME])
            .zip(&window)
        {
            *x = (f[0] + f[1]) * 0.5 * w;
        }
        start += HOP;
        if fft.process(&mut input, &mut spectrum).is_err() {
            break;
        }
        let slot = &mut ring[count % MEDIAN];
        for (m, c) in slot.iter_mut().zip(&spectrum) {
            *m = c.norm();
        }
        count += 1;
        if count < MEDIAN {
            continue;
        }
        for (k, t) in tonal.iter_mut().enumerate() {
            for (c, frame) in column.iter_mut().zip(&ring) {
                *c = frame[k];
            }
            column.sort_unstable_by(f32::total_cmp);
            *t = column[MEDIAN / 2];
        }
        for k in 1..=hi {
            let m = tonal[k];
            let Some(Some(pc)) = classes.get(k) else {
                continue;
            };
            if m <= tonal[k - 1] || m < tonal[k + 1] {
                continue;
            }
            // A 3rd, 5th, 6th or 7th harmonic of a louder note below is that note's colour, not
            // a note of its own: it would read as the fifth or the major third above.
            let harmonic = [3usize, 5, 6, 7].iter().any(|&h| {
                let lo = k / h;
                lo >= 1 && (lo..=lo + 1).any(|j| tonal.get(j).is_some_and(|&c| c >= m))
            });
            if !harmonic {
                bins[*pc] += f64::from(m) * f64::from(m);
            }
        }
    }
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
