//! Building blocks of the synth voices: band-limited oscillators, envelopes, a mono
//! filter, a noise source and panning.
//!
//! These run offline (the generator renders ahead of the mixer), but they are written like
//! realtime code all the same: no allocation per sample, state in plain fields.

use std::f32::consts::{PI, TAU};

use rand::RngCore;
use rand_pcg::Pcg32;

/// PolyBLEP correction for a discontinuity at phase 0 (`t` in [0, 1), `dt` the phase step).
#[inline]
fn poly_blep(t: f32, dt: f32) -> f32 {
    if t < dt {
        let x = t / dt;
        x + x - x * x - 1.0
    } else if t > 1.0 - dt {
        let x = (t - 1.0) / dt;
        x * x + x + x + 1.0
    } else {
        0.0
    }
}

/// A band-limited sawtooth (PolyBLEP), phase in [0, 1).
#[derive(Debug, Clone, Copy)]
pub struct Saw {
    pub phase: f32,
}

impl Saw {
    #[inline]
    pub fn next(&mut self, dt: f32) -> f32 {
        let t = self.phase;
        self.phase += dt;
        if self.phase >= 1.0 {
            self.phase -= 1.0;
        }
        2.0 * t - 1.0 - poly_blep(t, dt)
    }
}

/// Takes the mean out of each channel of a sound, spread over the sound as one Hann-shaped
/// bump: a change of a few hertz at most for a note or a hit (far below hearing), and none
/// at its ends, so the sound still starts and stops where it did. A sound whose first
/// half-cycle outweighs the rest (a kick, an 808) would otherwise carry DC into the mix,
/// once for every time it plays.
pub(crate) fn centre<const C: usize>(sound: &mut [[f32; C]]) {
    let len = sound.len();
    if len < 2 {
        return;
    }
    let mut sums = [0.0f64; C];
    for frame in sound.iter() {
        for (sum, &s) in sums.iter_mut().zip(frame) {
            *sum += f64::from(s);
        }
    }
    // The bump 0.5 − 0.5·cos(2π·i/(len − 1)) sums to (len − 1) / 2 over the sound.
    let scales = sums.map(|sum| sum / ((len - 1) as f64 / 2.0));
    // cos(step·i) by rotating a unit vector a step at a time, set afresh from the library's
    // cosine every 64 frames (so rounding cannot build up): a cosine call per frame was a
    // fortieth of a song's render.
    let step = std::f64::consts::TAU / (len - 1) as f64;
    let (turn_sin, turn_cos) = step.sin_cos();
    for (block, frames) in sound.chunks_mut(64).enumerate() {
        let (mut sin, mut cos) = (step * (block * 64) as f64).sin_cos();
        for frame in frames {
            let bump = 0.5 - 0.5 * cos;
            for (s, scale) in frame.iter_mut().zip(&scales) {
                *s -= (scale * bump) as f32;
            }
            (cos, sin) = (
                cos * turn_cos - sin * turn_sin,
                sin * turn_cos + cos * turn_sin,
            );
        }
    }
}

/// A band-limited pulse (two PolyBLEP edges), `width` of each cycle high. It is centred on
/// zero, as an analog oscillator's AC-coupled output is: a narrow pulse swings further up
/// than down and carries no DC, which would otherwise follow the note's envelope as a
/// thump under it.
#[derive(Debug, Clone, Copy)]
pub struct Pulse {
    pub phase: f32,
    pub width: f32,
}

impl Pulse {
    #[inline]
    pub fn next(&mut self, dt: f32) -> f32 {
        let t = self.phase;
        self.phase += dt;
        if self.phase >= 1.0 {
            self.phase -= 1.0;
        }
        let mut second = t + 1.0 - self.width;
        if second >= 1.0 {
            second -= 1.0;
        }
        let naive = if t < self.width { 1.0 } else { -1.0 };
        // The mean of the naive pulse, 2·width − 1, taken away.
        naive + poly_blep(t, dt) - poly_blep(second, dt) - (2.0 * self.width - 1.0)
    }
}

/// A sine oscillator by phase accumulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sine {
    pub phase: f32,
}

impl Sine {
    #[inline]
    pub fn next(&mut self, dt: f32) -> f32 {
        let out = fast_sin(self.phase * TAU);
        self.phase += dt;
        if self.phase >= 1.0 {
            self.phase -= 1.0;
        }
        out
    }
}

/// sin(x) for x in [0, 2π], accurate to about 1e-4: a fifth-order polynomial on each
/// half period. Oscillators call it millions of times per render.
#[inline]
pub fn fast_sin(x: f32) -> f32 {
    // Fold into [-π, π].
    let x = if x > PI { x - TAU } else { x };
    // Bhaskara-like rational is too coarse; a Taylor-fitted odd polynomial on [-π/2, π/2]
    // after folding the outer quarters inwards.
    let x = if x > PI / 2.0 {
        PI - x
    } else if x < -PI / 2.0 {
        -PI - x
    } else {
        x
    };
    let x2 = x * x;
    x * (1.0 + x2 * (-0.166_666_67 + x2 * (0.008_333_331 + x2 * -0.000_198_409)))
}

/// White noise from the generator's seeded PCG, so the same seed gives the same hiss.
#[derive(Debug, Clone)]
pub struct Noise {
    rng: Pcg32,
}

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Pcg32::new(seed, 0x0a02_bdbf_7bb3_c0a7),
        }
    }

    /// Uniform in [-1, 1).
    #[inline]
    pub fn sample(&mut self) -> f32 {
        (self.rng.next_u32() >> 8) as f32 * (2.0 / 16_777_216.0) - 1.0
    }
}

/// An ADSR envelope in seconds, exponential decay and release, linear attack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adsr {
    pub attack: f32,
    pub decay: f32,
    pub sustain: f32,
    pub release: f32,
}

impl Adsr {
    pub const fn new(attack: f32, decay: f32, sustain: f32, release: f32) -> Self {
        Self {
            attack,
            decay,
            sustain,
            release,
        }
    }

    /// Frames this envelope sounds for a note held `held` frames: the hold plus the
    /// release down to -80 dB.
    pub fn length(&self, held: usize, sample_rate: f32) -> usize {
        held + (self.release * sample_rate * 9.2 / 5.0) as usize + 1
    }

    /// A running instance for one note held `held` frames.
    pub fn start(&self, held: usize, sample_rate: f32) -> Envelope {
        let coeff = |s: f32| (-5.0 / (s.max(0.0005) * sample_rate)).exp();
        Envelope {
            level: 0.0,
            attack_step: 1.0 / (self.attack.max(0.0005) * sample_rate),
            decay: coeff(self.decay),
            release: coeff(self.release),
            sustain: self.sustain,
            held,
            n: 0,
            attacking: true,
        }
    }
}

/// A running [`Adsr`].
#[derive(Debug, Clone, Copy)]
pub struct Envelope {
    level: f32,
    attack_step: f32,
    decay: f32,
    release: f32,
    sustain: f32,
    held: usize,
    n: usize,
    attacking: bool,
}

impl Envelope {
    /// The level for the next sample.
    #[inline]
    pub fn advance(&mut self) -> f32 {
        if self.n >= self.held {
            self.level *= self.release;
            self.attacking = false;
        } else if self.attacking {
            self.level += self.attack_step;
            if self.level >= 1.0 {
                self.level = 1.0;
                self.attacking = false;
            }
        } else {
            self.level = self.sustain + (self.level - self.sustain) * self.decay;
        }
        self.n += 1;
        self.level
    }
}

/// A mono state-variable filter (Simper's trapezoidal form) whose coefficients the voice
/// updates every few samples as its cutoff moves.
#[derive(Debug, Clone, Copy, Default)]
pub struct VoiceFilter {
    a1: f32,
    a2: f32,
    a3: f32,
    k: f32,
    ic1: f32,
    ic2: f32,
}

impl VoiceFilter {
    pub fn new(cutoff_hz: f32, resonance: f32, sample_rate: f32) -> Self {
        let mut f = Self::default();
        f.tune(cutoff_hz, resonance, sample_rate);
        f
    }

    /// Sets cutoff (Hz) and resonance (0–1).
    #[inline]
    pub fn tune(&mut self, cutoff_hz: f32, resonance: f32, sample_rate: f32) {
        let cutoff = cutoff_hz.clamp(20.0, sample_rate * 0.45);
        let g = (PI * cutoff / sample_rate).tan();
        self.k = 2.0 - 2.0 * resonance.clamp(0.0, 0.97);
        self.a1 = 1.0 / (1.0 + g * (g + self.k));
        self.a2 = g * self.a1;
        self.a3 = g * self.a2;
    }

    /// One sample; returns (low-pass, band-pass, high-pass).
    #[inline]
    pub fn tick(&mut self, x: f32) -> (f32, f32, f32) {
        let v3 = x - self.ic2;
        let v1 = self.a1 * self.ic1 + self.a2 * v3;
        let v2 = self.ic2 + self.a2 * self.ic1 + self.a3 * v3;
        self.ic1 = 2.0 * v1 - self.ic1;
        self.ic2 = 2.0 * v2 - self.ic2;
        (v2, v1, x - self.k * v1 - v2)
    }

    #[inline]
    pub fn low(&mut self, x: f32) -> f32 {
        self.tick(x).0
    }

    #[inline]
    pub fn band(&mut self, x: f32) -> f32 {
        self.tick(x).1
    }

    #[inline]
    pub fn high(&mut self, x: f32) -> f32 {
        self.tick(x).2
    }
}

/// Equal-power pan gains for `pan` in [-1, 1].
#[inline]
pub fn pan_gains(pan: f32) -> [f32; 2] {
    let angle = (pan.clamp(-1.0, 1.0) + 1.0) * PI / 4.0;
    [angle.cos(), angle.sin()]
}

/// Soft saturation that keeps unity gain for small signals.
#[inline]
pub fn saturate(x: f32) -> f32 {
    // A rational tanh approximation: cheaper than tanh, same shape below |x| = 3.
    let x = x.clamp(-3.0, 3.0);
    x * (27.0 + x * x) / (27.0 + 9.0 * x * x)
}

/// Adds `mono * gains` into `out` starting at `start`, as far as `out` reaches.
#[inline]
pub fn mix_into(out: &mut [[f32; 2]], start: usize, mono: &[f32], gains: [f32; 2]) {
    if let Some(dest) = out.get_mut(start..) {
        for (frame, &x) in dest.iter_mut().zip(mono) {
            frame[0] += x * gains[0];
            frame[1] += x * gains[1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_sin_tracks_sin() {
        for i in 0..=1000 {
            let x = i as f32 / 1000.0 * TAU;
            assert!((fast_sin(x) - x.sin()).abs() < 2e-4, "{x}");
        }
    }

    #[test]
    fn saw_is_bounded_and_has_no_dc() {
        let mut saw = Saw { phase: 0.0 };
        let dt = 110.0 / 48_000.0;
        let n = 48_000;
        let samples: Vec<f32> = (0..n).map(|_| saw.next(dt)).collect();
        let mean = samples.iter().sum::<f32>() / n as f32;
        assert!(mean.abs() < 0.01, "dc {mean}");
        assert!(samples.iter().all(|s| s.abs() <= 1.1));
    }

    #[test]
    fn centring_takes_out_the_mean_and_leaves_the_ends() {
        // A decaying sine that starts on its positive half-cycle: a kick's shape.
        let mut sound: Vec<[f32; 2]> = (0..9_000)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let s = (TAU * 55.0 * t).sin() * (-t / 0.05).exp();
                [s, 0.5 * s + 0.01]
            })
            .collect();
        let mean = |sound: &[[f32; 2]], c: usize| {
            sound.iter().map(|f| f64::from(f[c])).sum::<f64>() / sound.len() as f64
        };
        assert!(mean(&sound, 0) > 1e-3 && mean(&sound, 1) > 1e-2);
        let (first, last) = (sound[0], sound[sound.len() - 1]);
        centre(&mut sound);
        for c in 0..2 {
            assert!(
                mean(&sound, c).abs() < 1e-7,
                "channel {c}: {}",
                mean(&sound, c)
            );
        }
        assert_eq!(sound[0], first);
        assert!((sound[sound.len() - 1][1] - last[1]).abs() < 1e-6);
        // The correction is smooth: no step between frames moved by more than a hair.
        let mut plain: Vec<[f32; 1]> = vec![[1.0]; 1000];
        centre(&mut plain);
        let steepest = plain
            .windows(2)
            .map(|w| (w[1][0] - w[0][0]).abs())
            .fold(0.0f32, f32::max);
        assert!(steepest < 0.01, "{steepest}");
    }

    #[test]
    fn pulses_of_any_width_have_no_dc() {
        let dt = 110.0 / 48_000.0;
        let n = 48_000;
        for width in [0.1, 0.25, 0.5, 0.75] {
            let mut pulse = Pulse { phase: 0.0, width };
            let samples: Vec<f32> = (0..n).map(|_| pulse.next(dt)).collect();
            let mean = samples.iter().sum::<f32>() / n as f32;
            assert!(mean.abs() < 0.01, "width {width}: dc {mean}");
            // From +1 to -1 around the mean 2·width − 1, moved to zero.
            let (lo, hi) = samples
                .iter()
                .fold((f32::MAX, f32::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
            let (want_lo, want_hi) = (-2.0 * width, 2.0 - 2.0 * width);
            assert!(
                (lo - want_lo).abs() < 0.1 && (hi - want_hi).abs() < 0.1,
                "width {width}: {lo}..{hi}"
            );
        }
    }

    #[test]
    fn envelope_attacks_sustains_and_releases() {
        let sr = 1000.0;
        let adsr = Adsr::new(0.01, 0.05, 0.5, 0.1);
        let held = 200;
        let mut env = adsr.start(held, sr);
        let levels: Vec<f32> = (0..adsr.length(held, sr)).map(|_| env.advance()).collect();
        assert!((levels[9] - 1.0).abs() < 0.11);
        assert!((levels[190] - 0.5).abs() < 0.01);
        assert!(*levels.last().unwrap() < 1e-3);
    }

    #[test]
    fn filter_passes_low_and_cuts_high() {
        let sr = 48_000.0;
        let rms = |hz: f32| {
            let mut f = VoiceFilter::new(500.0, 0.0, sr);
            let mut sine = Sine::default();
            let out: Vec<f32> = (0..48_000).map(|_| f.low(sine.next(hz / sr))).collect();
            (out[24_000..].iter().map(|x| x * x).sum::<f32>() / 24_000.0).sqrt()
        };
        assert!(rms(100.0) > 0.65);
        assert!(rms(8000.0) < 0.01);
    }
}
