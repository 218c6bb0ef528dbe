//! The master bus: effect returns, shelving EQ, compressor and true-peak-safe limiter.

use serde::{Deserialize, Serialize};

use super::GROUPS;
use crate::dsp::{Biquad, Compressor, Delay, Limiter, Reverb, Smoother};

/// Shelf corner frequencies.
const LOW_SHELF_HZ: f32 = 120.0;
const HIGH_SHELF_HZ: f32 = 8000.0;
/// Longest delay line, seconds.
const MAX_DELAY_S: f32 = 4.0;

/// Master effect settings, as `fx.get` and `fx.set` show them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterFx {
    /// Reverb room size, damping and return level, 0–1.
    pub reverb_size: f32,
    pub reverb_damping: f32,
    pub reverb_mix: f32,
    /// Delay time in beats (follows the tempo), feedback 0–0.95, return level 0–1.
    pub delay_beats: f32,
    pub delay_feedback: f32,
    pub delay_mix: f32,
    /// Shelf gains in dB at 120 Hz and 8 kHz, -18 to +18.
    pub eq_low_db: f32,
    pub eq_high_db: f32,
    /// Compressor: threshold dBFS, ratio ≥ 1, attack and release ms, makeup dB.
    pub comp_threshold_db: f32,
    pub comp_ratio: f32,
    pub comp_attack_ms: f32,
    pub comp_release_ms: f32,
    pub comp_makeup_db: f32,
    /// Limiter ceiling, dBTP (true peak), -12 to 0.
    pub limiter_ceiling_db: f32,
}

impl Default for MasterFx {
    fn default() -> Self {
        Self {
            reverb_size: 0.5,
            reverb_damping: 0.5,
            reverb_mix: 0.2,
            delay_beats: 0.75,
            delay_feedback: 0.35,
            delay_mix: 0.15,
            eq_low_db: 0.0,
            eq_high_db: 0.0,
            comp_threshold_db: -10.0,
            comp_ratio: 2.0,
            comp_attack_ms: 10.0,
            comp_release_ms: 150.0,
            comp_makeup_db: 0.0,
            limiter_ceiling_db: -1.0,
        }
    }
}

impl MasterFx {
    /// The same settings with every value clamped into its range; a value that is not a
    /// number (a script's 0/0) takes its default instead.
    pub fn clamped(self) -> Self {
        let d = MasterFx::default();
        let c = |v: f32, lo: f32, hi: f32, default: f32| {
            if v.is_nan() { default } else { v.clamp(lo, hi) }
        };
        Self {
            reverb_size: c(self.reverb_size, 0.0, 1.0, d.reverb_size),
            reverb_damping: c(self.reverb_damping, 0.0, 1.0, d.reverb_damping),
            reverb_mix: c(self.reverb_mix, 0.0, 1.0, d.reverb_mix),
            delay_beats: c(self.delay_beats, 0.0, 16.0, d.delay_beats),
            delay_feedback: c(self.delay_feedback, 0.0, 0.95, d.delay_feedback),
            delay_mix: c(self.delay_mix, 0.0, 1.0, d.delay_mix),
            eq_low_db: c(self.eq_low_db, -18.0, 18.0, d.eq_low_db),
            eq_high_db: c(self.eq_high_db, -18.0, 18.0, d.eq_high_db),
            comp_threshold_db: c(self.comp_threshold_db, -60.0, 0.0, d.comp_threshold_db),
            comp_ratio: c(self.comp_ratio, 1.0, 20.0, d.comp_ratio),
            comp_attack_ms: c(self.comp_attack_ms, 0.1, 500.0, d.comp_attack_ms),
            comp_release_ms: c(self.comp_release_ms, 1.0, 5000.0, d.comp_release_ms),
            comp_makeup_db: c(self.comp_makeup_db, 0.0, 24.0, d.comp_makeup_db),
            limiter_ceiling_db: c(self.limiter_ceiling_db, -12.0, 0.0, d.limiter_ceiling_db),
        }
    }
}

/// What the master bus mixes: the group sums, the effect sends and the live chain's output,
/// each one span long.
pub(super) struct BusInput<'a> {
    pub groups: &'a [[Vec<f32>; 2]; GROUPS],
    pub sends: &'a [[Vec<f32>; 2]; 2],
    pub live: &'a [[f32; 2]],
}

pub(super) struct MasterBus {
    fx: MasterFx,
    sample_rate: f32,
    reverb: Reverb,
    reverb_mix: Smoother,
    delay: Delay,
    delay_mix: Smoother,
    low: Biquad,
    high: Biquad,
    low_db: Smoother,
    high_db: Smoother,
    compressor: Compressor,
    limiter: Limiter,
    /// The span on its way through the chain, an effect's input, and the two effect
    /// returns: one period long.
    mix: Vec<[f32; 2]>,
    send: Vec<[f32; 2]>,
    wet_reverb: Vec<[f32; 2]>,
    wet_delay: Vec<[f32; 2]>,
}

impl MasterBus {
    /// A master bus for spans of up to `max_block` frames.
    pub(super) fn new(sample_rate: f32, max_block: usize) -> Self {
        let fx = MasterFx::default();
        let mut limiter = Limiter::new(fx.limiter_ceiling_db, sample_rate);
        limiter.reserve(max_block);
        let mut bus = Self {
            fx,
            sample_rate,
            reverb: Reverb::new(sample_rate),
            reverb_mix: Smoother::new(fx.reverb_mix, 0.05, sample_rate),
            delay: Delay::new(MAX_DELAY_S, sample_rate),
            delay_mix: Smoother::new(fx.delay_mix, 0.05, sample_rate),
            low: Biquad::shelf(false, LOW_SHELF_HZ, 0.0, sample_rate),
            high: Biquad::shelf(true, HIGH_SHELF_HZ, 0.0, sample_rate),
            low_db: Smoother::new(0.0, 0.05, sample_rate),
            high_db: Smoother::new(0.0, 0.05, sample_rate),
            compressor: Compressor::new(sample_rate),
            limiter,
            mix: vec![[0.0; 2]; max_block],
            send: vec![[0.0; 2]; max_block],
            wet_reverb: vec![[0.0; 2]; max_block],
            wet_delay: vec![[0.0; 2]; max_block],
        };
        bus.set(fx);
        bus
    }

    pub(super) fn latency(&self) -> usize {
        self.limiter.latency()
    }

    pub(super) fn delay_beats(&self) -> f32 {
        self.fx.delay_beats
    }

    pub(super) fn set(&mut self, fx: MasterFx) {
        let fx = fx.clamped();
        self.fx = fx;
        self.reverb.set(fx.reverb_size, fx.reverb_damping);
        self.reverb_mix.set(fx.reverb_mix);
        self.delay.feedback = fx.delay_feedback;
        self.delay_mix.set(fx.delay_mix);
        self.low_db.set(fx.eq_low_db);
        self.high_db.set(fx.eq_high_db);
        self.compressor.threshold_db = fx.comp_threshold_db;
        self.compressor.ratio = fx.comp_ratio;
        self.compressor.makeup_db = fx.comp_makeup_db;
        self.compressor
            .set_times(fx.comp_attack_ms, fx.comp_release_ms);
        self.limiter.set_ceiling(fx.limiter_ceiling_db);
    }

    /// Comes back from state that went non-finite: empties the reverb, the delay, the
    /// shelves and the limiter, lets go of the compressor's reduction and brings the
    /// glides to their settings. What the effects held is lost; the next span starts clean.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn reset(&mut self) {
        let fx = self.fx;
        self.reverb.reset();
        self.delay.reset();
        self.low.reset();
        self.high.reset();
        self.compressor.reset();
        self.limiter.reset();
        self.reverb_mix.heal(fx.reverb_mix);
        self.delay_mix.heal(fx.delay_mix);
        self.low_db.heal(fx.eq_low_db);
        self.high_db.heal(fx.eq_high_db);
        // The shelves' coefficients again, from gains known to be finite now.
        let (low_db, high_db) = (self.low_db.value(), self.high_db.value());
        self.low
            .set_shelf(false, LOW_SHELF_HZ, low_db, self.sample_rate);
        self.high
            .set_shelf(true, HIGH_SHELF_HZ, high_db, self.sample_rate);
        self.mix.iter_mut().for_each(|f| *f = [0.0; 2]);
    }

    /// Mixes the groups and effect returns through the master chain into `out`.
    ///
    /// Each stage runs over the whole span before the next: every frame meets the same
    /// arithmetic in the same order as it would a frame at a time, and the reverb and the
    /// limiter's gain law take their block forms (the same values, bit for bit).
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(super) fn render(
        &mut self,
        input: BusInput<'_>,
        delay_frames: f32,
        out: &mut [&mut [f32]; 2],
        offset: usize,
        n: usize,
    ) {
        self.delay.set_time(delay_frames);
        // Shelf gains glide per block; the coefficients follow only while they move.
        let (low_settled, high_settled) = (self.low_db.is_settled(), self.high_db.is_settled());
        let low_db = self.low_db.advance(n);
        let high_db = self.high_db.advance(n);
        if !low_settled {
            self.low
                .set_shelf(false, LOW_SHELF_HZ, low_db, self.sample_rate);
        }
        if !high_settled {
            self.high
                .set_shelf(true, HIGH_SHELF_HZ, high_db, self.sample_rate);
        }
        let BusInput {
            groups,
            sends: [reverb_in, delay_in],
            live,
        } = input;
        let n = n.min(self.mix.len());
        let (mix, send, wet_r, wet_d) = (
            &mut self.mix[..n],
            &mut self.send[..n],
            &mut self.wet_reverb[..n],
            &mut self.wet_delay[..n],
        );
        let interleave = |send: &mut [[f32; 2]], [l, r]: &[Vec<f32>; 2]| {
            for ((f, &l), &r) in send.iter_mut().zip(l).zip(r) {
                *f = [l, r];
            }
        };
        for (i, dry) in mix.iter_mut().enumerate() {
            *dry = live.get(i).copied().unwrap_or([0.0; 2]);
        }
        for group in groups {
            for ((dry, &l), &r) in mix.iter_mut().zip(&group[0]).zip(&group[1]) {
                dry[0] += l;
                dry[1] += r;
            }
        }
        interleave(send, reverb_in);
        self.reverb.process_block(send, wet_r);
        interleave(send, delay_in);
        self.delay.process_block(send, wet_d);
        let returns = mix.iter_mut().zip(wet_r.iter()).zip(wet_d.iter());
        let add = |x: &mut [f32; 2], r: &[f32; 2], d: &[f32; 2], rm: f32, dm: f32| {
            *x = [x[0] + r[0] * rm + d[0] * dm, x[1] + r[1] * rm + d[1] * dm];
        };
        let (mut reverb_mix, mut delay_mix) = (self.reverb_mix, self.delay_mix);
        if reverb_mix.is_settled() && delay_mix.is_settled() {
            let (rm, dm) = (reverb_mix.value(), delay_mix.value());
            returns.for_each(|((x, r), d)| add(x, r, d, rm, dm));
        } else {
            for ((x, r), d) in returns {
                add(x, r, d, reverb_mix.next_value(), delay_mix.next_value());
            }
            (self.reverb_mix, self.delay_mix) = (reverb_mix, delay_mix);
        }
        // A shelf at 0 dB is left out; it holds nothing that would click when it comes back.
        for shelf in [&mut self.low, &mut self.high] {
            if !shelf.passes_through() {
                shelf.process_block(mix);
            }
        }
        self.compressor.process_block(mix);
        self.limiter.process_block(mix);
        let [out_l, out_r] = out;
        let outs = out_l.iter_mut().zip(out_r.iter_mut()).skip(offset);
        for ((l, r), x) in outs.zip(mix.iter()) {
            [*l, *r] = *x;
        }
    }
}
