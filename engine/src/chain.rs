//! The processing chain for audio djinn did not make: a low cut, EQ (tilt and shelves),
//! compression, saturation, stereo width and a limiter.
//!
//! Offline (`djinn render`, `render.file`) the audio is first brought to
//! [`REFERENCE_LUFS`], so that "compress" and "drive" mean the same on a quiet demo and a loud
//! master, and the chain ends in the master stage that meets a loudness target under a
//! true-peak ceiling. Live (JACK `in_L`/`in_R`) it ends in the lookahead limiter, and every
//! setting glides to its new value.

use serde::{Deserialize, Serialize};

use crate::analysis::bands::{BandShares, band_shares};
use crate::analysis::loudness::{self, LoudnessError, LoudnessReport};
use crate::dsp::{Biquad, Compressor, FilterMode, Limiter, Smoother, Svf, db_to_gain};
use crate::synth::render::{Mastering, normalize};

/// The level the chain's stages are tuned for, LUFS.
pub const REFERENCE_LUFS: f64 = -18.0;

/// Where the EQ acts, Hz.
const LOW_SHELF_HZ: f32 = 100.0;
const HIGH_SHELF_HZ: f32 = 8_000.0;
/// The tilt is a pair of gentle shelves meeting at 1 kHz.
const TILT_LOW_HZ: f32 = 500.0;
const TILT_HIGH_HZ: f32 = 2_000.0;
/// Below this corner the low cut only removes DC and rumble.
const MIN_LOW_CUT_HZ: f32 = 15.0;
/// Butterworth damping for the state-variable low cut.
const BUTTERWORTH_RESONANCE: f32 = 1.0 - std::f32::consts::FRAC_1_SQRT_2;
/// How long a live change takes to glide, seconds.
const GLIDE_S: f32 = 0.05;
/// Filter coefficients follow a gliding setting every this many frames.
const COEFF_INTERVAL: u32 = 32;

/// What the chain does; every field defaults to "leave the sound alone".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainSettings {
    /// Tilt around 1 kHz, dB (-6 to 6): positive lifts the highs and lowers the lows by half
    /// of it each.
    pub tilt_db: f32,
    /// High-pass corner, Hz (0 or 20 to 250); 0 leaves only a rumble filter at 15 Hz.
    pub low_cut_hz: f32,
    /// Low shelf at 100 Hz, dB (-12 to 12).
    pub low_db: f32,
    /// High shelf at 8 kHz, dB (-12 to 12).
    pub high_db: f32,
    /// Saturation, 0 (clean) to 1 (driven): soft clipping (tanh) that bends from -10 dBFS at
    /// the reference level at full drive, unity gain below.
    pub drive: f32,
    /// Compression, 0 (none) to 1: threshold from -8 to -24 dBFS at the reference level,
    /// ratio from 1:1 to 5:1.
    pub compress: f32,
    /// Stereo width, 0 (mono) to 2; 1 leaves the image as it is.
    pub width: f32,
    /// Integrated loudness to reach offline, LUFS (-40 to -5); none keeps the input's.
    pub target_lufs: Option<f64>,
    /// True-peak ceiling, dBTP (-12 to 0).
    pub ceiling_dbtp: f64,
}

impl Default for ChainSettings {
    fn default() -> Self {
        Self {
            tilt_db: 0.0,
            low_cut_hz: 0.0,
            low_db: 0.0,
            high_db: 0.0,
            drive: 0.0,
            compress: 0.0,
            width: 1.0,
            target_lufs: None,
            ceiling_dbtp: -1.0,
        }
    }
}

/// A chain setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ChainError {
    pub field: &'static str,
    pub message: String,
}

impl ChainSettings {
    /// Checks every field against its range; the error names the first one out of it.
    pub fn validate(&self) -> Result<(), ChainError> {
        let check = |field: &'static str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ChainError {
                    field,
                    message: format!("{v} is outside {lo} to {hi}"),
                })
            }
        };
        check("tilt_db", self.tilt_db.into(), -6.0, 6.0)?;
        if self.low_cut_hz != 0.0 {
            check("low_cut_hz", self.low_cut_hz.into(), 20.0, 250.0)?;
        }
        check("low_db", self.low_db.into(), -12.0, 12.0)?;
        check("high_db", self.high_db.into(), -12.0, 12.0)?;
        check("drive", self.drive.into(), 0.0, 1.0)?;
        check("compress", self.compress.into(), 0.0, 1.0)?;
        check("width", self.width.into(), 0.0, 2.0)?;
        if let Some(t) = self.target_lufs {
            check("target_lufs", t, -40.0, -5.0)?;
        }
        check("ceiling_dbtp", self.ceiling_dbtp, -12.0, 0.0)
    }
}

/// The chain itself. Allocates only in [`Chain::offline`] and [`Chain::live`];
/// [`Chain::process`] runs on the JACK thread.
#[derive(Debug)]
pub struct Chain {
    sample_rate: f32,
    tilt: Smoother,
    low: Smoother,
    high: Smoother,
    low_cut: Smoother,
    drive: Smoother,
    compress: Smoother,
    width: Smoother,
    cut: Svf,
    /// Low shelf, tilt low, tilt high, high shelf.
    shelves: [Biquad; 4],
    /// Which shelves are at 0 dB, and skipped.
    flat: [bool; 4],
    compressor: Compressor,
    limiter: Option<Limiter>,
    countdown: u32,
}

impl Chain {
    /// An offline chain (no limiter: the master stage follows) at `settings`.
    pub fn offline(settings: &ChainSettings, sample_rate: u32) -> Chain {
        Self::build(settings, sample_rate as f32, false)
    }

    /// A live chain, ending in a true-peak limiter at the settings' ceiling.
    pub fn live(settings: &ChainSettings, sample_rate: u32) -> Chain {
        Self::build(settings, sample_rate as f32, true)
    }

    fn build(settings: &ChainSettings, sample_rate: f32, limiter: bool) -> Chain {
        let smoother = |v: f32| Smoother::new(v, GLIDE_S, sample_rate);
        let mut chain = Chain {
            sample_rate,
            tilt: smoother(settings.tilt_db),
            low: smoother(settings.low_db),
            high: smoother(settings.high_db),
            low_cut: smoother(settings.low_cut_hz.max(MIN_LOW_CUT_HZ)),
            drive: smoother(settings.drive),
            compress: smoother(settings.compress),
            width: smoother(settings.width),
            cut: Svf::new(sample_rate),
            shelves: [Biquad::shelf(false, LOW_SHELF_HZ, 0.0, sample_rate); 4],
            flat: [true; 4],
            compressor: Compressor::new(sample_rate),
            limiter: limiter.then(|| Limiter::new(settings.ceiling_dbtp as f32, sample_rate)),
            countdown: 0,
        };
        chain.compressor.set_times(10.0, 150.0);
        chain.update_coefficients();
        chain
    }

    /// Glides to `settings`. Runs on the JACK thread: no allocation, locks, system calls or
    /// logging.
    pub fn set(&mut self, settings: &ChainSettings) {
        self.tilt.set(settings.tilt_db);
        self.low.set(settings.low_db);
        self.high.set(settings.high_db);
        self.low_cut.set(settings.low_cut_hz.max(MIN_LOW_CUT_HZ));
        self.drive.set(settings.drive);
        self.compress.set(settings.compress);
        self.width.set(settings.width);
        if let Some(limiter) = &mut self.limiter {
            limiter.set_ceiling(settings.ceiling_dbtp as f32);
        }
    }

    /// Comes back from state that went non-finite: empties the filters and the limiter,
    /// lets go of the compressor's reduction and brings any glide that is not a number back
    /// to where it is going (or to leaving the sound alone).
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn reset(&mut self) {
        let d = ChainSettings::default();
        self.tilt.heal(d.tilt_db);
        self.low.heal(d.low_db);
        self.high.heal(d.high_db);
        self.low_cut.heal(MIN_LOW_CUT_HZ);
        self.drive.heal(d.drive);
        self.compress.heal(d.compress);
        self.width.heal(d.width);
        self.cut.reset();
        self.shelves.iter_mut().for_each(Biquad::reset);
        self.compressor.reset();
        if let Some(limiter) = &mut self.limiter {
            limiter.reset();
        }
        self.update_coefficients();
    }

    /// Frames of delay the chain adds (the live limiter's lookahead).
    pub fn latency(&self) -> usize {
        self.limiter.as_ref().map_or(0, Limiter::latency)
    }

    fn update_coefficients(&mut self) {
        let rate = self.sample_rate;
        let tilt = self.tilt.value();
        let shelves = [
            (false, LOW_SHELF_HZ, self.low.value()),
            (false, TILT_LOW_HZ, -tilt * 0.5),
            (true, TILT_HIGH_HZ, tilt * 0.5),
            (true, HIGH_SHELF_HZ, self.high.value()),
        ];
        for ((shelf, flat), (high, hz, db)) in
            self.shelves.iter_mut().zip(&mut self.flat).zip(shelves)
        {
            // A shelf at 0 dB passes the sound as it is: skipped, and cleared so that it
            // starts from silence when it bends again.
            if db == 0.0 && !*flat {
                shelf.reset();
            }
            *flat = db == 0.0;
            shelf.set_shelf(high, hz, db, rate);
        }
        self.cut.set(
            FilterMode::HighPass,
            self.low_cut.value(),
            BUTTERWORTH_RESONANCE,
        );
        let c = self.compress.value();
        self.compressor.threshold_db = -8.0 - 16.0 * c;
        self.compressor.ratio = 1.0 + 4.0 * c;
    }

    /// Processes one stereo frame. Runs on the JACK thread: no allocation, locks, system
    /// calls or logging.
    #[inline]
    pub fn process(&mut self, frame: [f32; 2]) -> [f32; 2] {
        if self.countdown == 0 {
            self.countdown = COEFF_INTERVAL;
            let gliding = [
                &self.tilt,
                &self.low,
                &self.high,
                &self.low_cut,
                &self.compress,
            ]
            .iter()
            .any(|s| !s.is_settled());
            if gliding {
                for s in [
                    &mut self.tilt,
                    &mut self.low,
                    &mut self.high,
                    &mut self.low_cut,
                    &mut self.compress,
                ] {
                    for _ in 0..COEFF_INTERVAL {
                        s.next_value();
                    }
                }
                self.update_coefficients();
            }
        }
        self.countdown -= 1;
        let mut x = self.cut.process(frame);
        for (shelf, &flat) in self.shelves.iter_mut().zip(&self.flat) {
            if !flat {
                x = shelf.process(x);
            }
        }
        // At 1:1 with nothing left to release the compressor is the identity: skip its logs.
        if self.compressor.ratio > 1.0 || self.compressor.reduction_db() > 1e-6 {
            x = self.compressor.process(x);
        }
        let drive = self.drive.next_value();
        if drive > 0.0 {
            let k = 1.0 + 2.0 * drive;
            for s in &mut x {
                *s += drive * ((k * *s).tanh() / k - *s);
            }
        }
        let width = self.width.next_value();
        let mid = 0.5 * (x[0] + x[1]);
        let side = 0.5 * (x[0] - x[1]) * width;
        x = [mid + side, mid - side];
        match &mut self.limiter {
            Some(limiter) => limiter.process(x),
            None => x,
        }
    }
}

/// Where a sound's energy lies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Balance {
    pub bands: BandShares,
    /// Energy above 2 kHz over energy below 250 Hz, dB: higher is brighter.
    pub high_low_db: f64,
}

impl Balance {
    pub fn of(frames: &[[f32; 2]], sample_rate: u32) -> Balance {
        let bands = band_shares(frames, sample_rate);
        let low = f64::from(bands.sub + bands.low).max(1e-9);
        let high = f64::from(bands.high + bands.air).max(1e-9);
        Balance {
            bands,
            high_low_db: 10.0 * (high / low).log10(),
        }
    }
}

/// Loudness and balance of a piece, before or after the chain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measured {
    pub loudness: LoudnessReport,
    pub balance: Balance,
}

impl Measured {
    pub fn of(frames: &[[f32; 2]], sample_rate: u32) -> Measured {
        Measured {
            loudness: loudness::measure_fast(frames, sample_rate),
            balance: Balance::of(frames, sample_rate),
        }
    }
}

/// A file through the chain, with the before/after report.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub frames: Vec<[f32; 2]>,
    pub before: Measured,
    pub after: Measured,
    /// The loudness aimed at, LUFS (the target, or the input's own).
    pub target_lufs: Option<f64>,
    /// What the master stage did to reach it (none for silence).
    pub mastering: Option<Mastering>,
}

/// Runs `frames` through the chain at `settings`, offline, and meets the loudness target
/// (or the input's loudness) under the ceiling. `progress` gets the fraction done, 0–1.
pub fn render(
    frames: &[[f32; 2]],
    sample_rate: u32,
    settings: &ChainSettings,
    progress: &mut dyn FnMut(f64),
) -> Result<Rendered, LoudnessError> {
    let before = Measured::of(frames, sample_rate);
    let input = before.loudness.integrated_lufs;
    let pre = if input.is_finite() {
        db_to_gain((REFERENCE_LUFS - input) as f32)
    } else {
        1.0
    };
    let mut chain = Chain::offline(settings, sample_rate);
    let mut out = Vec::with_capacity(frames.len());
    let block = sample_rate.max(1) as usize;
    let blocks = frames.len().div_ceil(block).max(1);
    for (i, chunk) in frames.chunks(block).enumerate() {
        out.extend(
            chunk
                .iter()
                .map(|f| chain.process([f[0] * pre, f[1] * pre])),
        );
        progress(0.8 * (i + 1) as f64 / blocks as f64);
    }
    let target = settings.target_lufs.or(input.is_finite().then_some(input));
    // The master stage ends by measuring what it left: that is the report after.
    let (loudness, mastering) = match target {
        Some(target) => {
            let mastered = normalize(&mut out, target, settings.ceiling_dbtp, sample_rate, false)?;
            (mastered.loudness, Some(mastered.mastering))
        }
        None => (loudness::measure_fast(&out, sample_rate), None),
    };
    progress(1.0);
    let after = Measured {
        loudness,
        balance: Balance::of(&out, sample_rate),
    };
    Ok(Rendered {
        frames: out,
        before,
        after,
        target_lufs: target,
        mastering,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;

    /// Pink-ish noise: white noise through a one-pole low-pass, a little of each band.
    fn noise(seconds: f32) -> Vec<[f32; 2]> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut lp = [0.0f32; 2];
        (0..(seconds * RATE as f32) as usize)
            .map(|_| {
                let mut f = [0.0; 2];
                for (ch, v) in f.iter_mut().enumerate() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let white = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    lp[ch] = 0.9 * lp[ch] + 0.1 * white;
                    *v = lp[ch] * 2.0 + white * 0.05;
                }
                f
            })
            .collect()
    }

    #[test]
    fn neutral_settings_leave_the_sound_as_it_was() {
        let input = noise(3.0);
        let out = render(&input, RATE, &ChainSettings::default(), &mut |_| {}).unwrap();
        let lufs = |m: &Measured| m.loudness.integrated_lufs;
        assert!((lufs(&out.after) - lufs(&out.before)).abs() < 0.5);
        assert!((out.after.balance.high_low_db - out.before.balance.high_low_db).abs() < 0.5);
    }

    #[test]
    fn brighter_and_tighter_moves_the_balance_up() {
        let input = noise(3.0);
        let settings = ChainSettings {
            tilt_db: 3.0,
            high_db: 3.0,
            low_cut_hz: 40.0,
            low_db: -3.0,
            ..ChainSettings::default()
        };
        let out = render(&input, RATE, &settings, &mut |_| {}).unwrap();
        let moved = out.after.balance.high_low_db - out.before.balance.high_low_db;
        assert!(moved > 4.0, "moved {moved} dB");
    }

    #[test]
    fn a_loudness_target_is_met_under_the_ceiling() {
        let input = noise(5.0);
        let settings = ChainSettings {
            compress: 0.6,
            drive: 0.3,
            target_lufs: Some(-10.0),
            ceiling_dbtp: -1.0,
            ..ChainSettings::default()
        };
        let out = render(&input, RATE, &settings, &mut |_| {}).unwrap();
        let report = loudness::measure(&out.frames, RATE).unwrap();
        assert!((report.integrated_lufs + 10.0).abs() <= 1.0, "{report:?}");
        assert!(report.true_peak_dbtp <= -1.0, "{report:?}");
    }

    #[test]
    fn width_zero_is_mono() {
        let input = noise(1.0);
        let settings = ChainSettings {
            width: 0.0,
            ..ChainSettings::default()
        };
        let mut chain = Chain::offline(&settings, RATE);
        for f in &input {
            let y = chain.process(*f);
            assert!((y[0] - y[1]).abs() < 1e-6);
        }
    }

    #[test]
    fn out_of_range_settings_name_their_field() {
        let bad = ChainSettings {
            drive: 2.0,
            ..ChainSettings::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "drive");
        let bad = ChainSettings {
            low_cut_hz: 5.0,
            ..ChainSettings::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "low_cut_hz");
        assert!(ChainSettings::default().validate().is_ok());
    }

    #[test]
    fn a_live_chain_glides_without_clicks() {
        let input = noise(1.0);
        let mut chain = Chain::live(&ChainSettings::default(), RATE);
        let loud = ChainSettings {
            tilt_db: 6.0,
            compress: 1.0,
            drive: 1.0,
            width: 2.0,
            low_cut_hz: 200.0,
            ..ChainSettings::default()
        };
        let mut previous = [0.0f32; 2];
        let mut largest = 0.0f32;
        for (i, f) in input.iter().enumerate() {
            if i == RATE as usize / 2 {
                chain.set(&loud);
            }
            let y = chain.process(*f);
            largest = largest.max((y[0] - previous[0]).abs());
            previous = y;
        }
        let input_step = input
            .windows(2)
            .map(|w| (w[1][0] - w[0][0]).abs())
            .fold(0.0, f32::max);
        assert!(largest < 2.0 * input_step, "step {largest} vs {input_step}");
    }
}
