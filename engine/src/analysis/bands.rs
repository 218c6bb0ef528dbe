//! Where in the spectrum a sound lives: its energy split into five bands, so that the DJ
//! can tell a crowded low end from an empty top before it adds a layer.

use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};

/// The bands, low to high, with their upper edges in Hz.
pub const BANDS: [(&str, f32); 5] = [
    ("sub", 60.0),
    ("low", 250.0),
    ("mid", 2_000.0),
    ("high", 6_000.0),
    ("air", f32::INFINITY),
];

/// FFT frame length; at 48 kHz a bin is 11.7 Hz wide, fine enough to split sub from low.
const FRAME: usize = 4096;

/// The share of a sound's energy in each of [`BANDS`]; the shares sum to 1 (all zero for
/// silence).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BandShares {
    pub sub: f32,
    pub low: f32,
    pub mid: f32,
    pub high: f32,
    pub air: f32,
}

impl BandShares {
    pub fn as_array(&self) -> [f32; 5] {
        [self.sub, self.low, self.mid, self.high, self.air]
    }

    /// The names of the bands holding at least `share` of the energy.
    pub fn occupied(&self, share: f32) -> Vec<&'static str> {
        BANDS
            .iter()
            .zip(self.as_array())
            .filter(|(_, s)| *s >= share)
            .map(|((name, _), _)| *name)
            .collect()
    }
}

/// Measures the band shares of `frames` (a mono sum) at `sample_rate`. Reads at most 16
/// frames of 4096 samples spread across the sound: enough for a loop, and fast.
pub fn band_shares(frames: &[[f32; 2]], sample_rate: u32) -> BandShares {
    if frames.len() < FRAME {
        return BandShares::default();
    }
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(FRAME);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let window: Vec<f32> = (0..FRAME)
        .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / FRAME as f32).cos())
        .collect();
    let bin_hz = sample_rate as f32 / FRAME as f32;
    let windows = (frames.len() / FRAME).min(16);
    let stride = frames.len().saturating_sub(FRAME) / windows.max(2).saturating_sub(1).max(1);
    let mut energy = [0.0f64; 5];
    for w in 0..windows {
        let start = w * stride;
        for ((x, frame), win) in input.iter_mut().zip(&frames[start..]).zip(&window) {
            *x = 0.5 * (frame[0] + frame[1]) * win;
        }
        if fft.process(&mut input, &mut spectrum).is_err() {
            continue;
        }
        let mut band = 0;
        for (bin, c) in spectrum.iter().enumerate().skip(1) {
            let hz = bin as f32 * bin_hz;
            while band < BANDS.len() - 1 && hz >= BANDS[band].1 {
                band += 1;
            }
            energy[band] += f64::from(c.norm_sqr());
        }
    }
    let total: f64 = energy.iter().sum();
    if total <= 1e-12 {
        return BandShares::default();
    }
    let share = |i: usize| (energy[i] / total) as f32;
    BandShares {
        sub: share(0),
        low: share(1),
        mid: share(2),
        high: share(3),
        air: share(4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f32, seconds: f32) -> Vec<[f32; 2]> {
        let n = (48_000.0 * seconds) as usize;
        (0..n)
            .map(|i| {
                let v = (std::f32::consts::TAU * hz * i as f32 / 48_000.0).sin() * 0.5;
                [v, v]
            })
            .collect()
    }

    #[test]
    fn a_sine_lands_in_its_band() {
        for (hz, band) in [
            (40.0, "sub"),
            (110.0, "low"),
            (880.0, "mid"),
            (4_000.0, "high"),
            (12_000.0, "air"),
        ] {
            let shares = band_shares(&sine(hz, 1.0), 48_000);
            assert_eq!(shares.occupied(0.5), vec![band], "{hz} Hz: {shares:?}");
            let sum: f32 = shares.as_array().iter().sum();
            assert!((sum - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn a_mix_occupies_both_bands_and_silence_none() {
        let low = sine(50.0, 1.0);
        let mix: Vec<[f32; 2]> = low
            .iter()
            .zip(sine(3_000.0, 1.0))
            .map(|(a, b)| [a[0] + b[0], a[1] + b[1]])
            .collect();
        assert_eq!(band_shares(&mix, 48_000).occupied(0.3), vec!["sub", "high"]);
        let silence = vec![[0.0f32; 2]; 48_000];
        assert!(band_shares(&silence, 48_000).occupied(0.01).is_empty());
    }
}
