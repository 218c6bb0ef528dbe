//! Building blocks for the realtime mixer: smoothers, filters, delay, reverb, dynamics.
//!
//! Every type allocates only in its constructor; `process`/`next` methods run on the JACK
//! thread: no allocation, locks, system calls or logging.

use std::f32::consts::PI;

/// Keeps feedback paths out of denormal territory where flushing is unavailable.
const ANTI_DENORMAL: f32 = 1.0e-20;
/// A biquad whose state is below this (-180 dBFS) adds nothing audible to its input.
const PASS_THROUGH_STATE: f32 = 1.0e-9;

/// Turns on flush-to-zero and denormals-are-zero for the calling thread.
///
/// Runs on the JACK thread: no allocation, locks, system calls or logging.
#[inline]
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: setting the FTZ (bit 15) and DAZ (bit 6) bits of MXCSR changes only how this
    // thread rounds subnormal floats; it cannot violate memory safety.
    #[allow(deprecated)]
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}

/// The next index of a ring of `len`, without the cost of a division.
#[inline]
fn wrap_next(index: usize, len: usize) -> usize {
    let next = index + 1;
    if next >= len { 0 } else { next }
}

/// The base-2 logarithm of a positive normal `x` to within 2e-6, several times faster than
/// `f32::log2` and free to vectorize: the exponent from the bits, and log2 of the mantissa
/// (in [1, 2)) from a degree-7 polynomial (a Chebyshev fit around 1.5, at most 9e-7 off)
/// with no division or branch.
#[inline(always)]
pub fn fast_log2(x: f32) -> f32 {
    const LOG2: [f32; 8] = [
        0.584_962_67,
        0.961_796_16,
        -0.320_624_77,
        0.142_518_83,
        -0.070_686_22,
        0.037_532_76,
        -0.024_825_606,
        0.014_598_49,
    ];
    const fn polynomial(t: f32) -> f32 {
        let mut acc = 0.0;
        let mut i = LOG2.len();
        while i > 0 {
            i -= 1;
            acc = acc * t + LOG2[i];
        }
        acc
    }
    // Taken away so that log2(1) is exactly 0, as silence needs.
    const AT_ONE: f32 = polynomial(-0.5);
    let bits = x.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 127;
    let t = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000) - 1.5;
    exponent as f32 + (polynomial(t) - AT_ONE)
}

/// 2 to the power `x`, to a relative 2e-7 (about the precision of an f32), several times
/// faster than `f32::exp2`: the integer part into the exponent bits, the fraction (within
/// ±½) through the Taylor series of e^(f ln 2) to the sixth power. `x` is clamped to the
/// normal range, [-126, 127].
#[inline(always)]
pub fn fast_exp2(x: f32) -> f32 {
    // Rounded to the nearest whole by adding and taking away 1.5 × 2^23 (f32::round is a
    // libm call on baseline x86-64).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-126.0, 127.0);
    let whole = (x + ROUND) - ROUND;
    let t = (x - whole) * std::f32::consts::LN_2;
    let fraction = 1.0
        + t * (1.0
            + t * (1.0 / 2.0
                + t * (1.0 / 6.0 + t * (1.0 / 24.0 + t * (1.0 / 120.0 + t * (1.0 / 720.0))))));
    fraction * f32::from_bits(((whole as i32 + 127) as u32) << 23)
}

/// Decibels to linear gain.
#[inline]
pub fn db_to_gain(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// Linear gain to decibels (floored at -200 dB).
#[inline]
pub fn gain_to_db(gain: f32) -> f32 {
    20.0 * gain.abs().max(1.0e-10).log10()
}

/// Whether every one of `samples` is finite (no NaN, no infinity): one multiply-add per
/// sample in eight running sums (so the loop vectorises), no branch per sample. A finite
/// sample times zero is zero; a NaN or an infinity times zero is NaN, and stays NaN.
///
/// Runs on the JACK thread: no allocation, locks, system calls or logging.
#[inline]
pub fn all_finite(samples: &[f32]) -> bool {
    const LANES: usize = 8;
    let mut sums = [0.0f32; LANES];
    let (chunks, rest) = samples.as_chunks::<LANES>();
    for chunk in chunks {
        for (sum, &s) in sums.iter_mut().zip(chunk) {
            *sum += s * 0.0;
        }
    }
    let tail = rest.iter().fold(0.0f32, |sum, &s| sum + s * 0.0);
    sums.into_iter().fold(tail, |a, b| a + b) == 0.0
}

/// A one-pole parameter smoother: changes glide over about `time` instead of jumping,
/// which is what keeps gain, pan and cutoff moves free of zipper noise and clicks.
#[derive(Debug, Clone, Copy)]
pub struct Smoother {
    value: f32,
    target: f32,
    coeff: f32,
}

impl Smoother {
    /// A smoother at `value` reaching ~99.9 % of a step within `time_s` seconds.
    pub fn new(value: f32, time_s: f32, sample_rate: f32) -> Self {
        let samples = (time_s * sample_rate).max(1.0);
        Self {
            value,
            target: value,
            coeff: 1.0 - (-6.9 / samples).exp(),
        }
    }

    pub fn set(&mut self, target: f32) {
        self.target = target;
    }

    /// Jumps to `value` with no glide.
    pub fn reset(&mut self, value: f32) {
        self.value = value;
        self.target = value;
    }

    /// Comes back from a value or target that went non-finite: jumps to the target where
    /// it is finite, else to `fallback`; a finite smoother is left as it is.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn heal(&mut self, fallback: f32) {
        if !self.target.is_finite() {
            self.reset(fallback);
        } else if !self.value.is_finite() {
            self.reset(self.target);
        }
    }

    pub fn target(&self) -> f32 {
        self.target
    }

    pub fn value(&self) -> f32 {
        self.value
    }

    pub fn is_settled(&self) -> bool {
        self.value == self.target
    }

    #[inline]
    pub fn next_value(&mut self) -> f32 {
        let delta = self.target - self.value;
        // NOTE: relative to the target, since f32 steps stall once the step is below one ulp.
        if delta.abs() <= 1.0e-5 * self.target.abs().max(1.0) {
            self.value = self.target;
        } else {
            self.value += delta * self.coeff;
        }
        self.value
    }

    /// Moves `frames` frames on (what as many [`Smoother::next_value`]s would do) and
    /// returns the value then; a settled smoother stays where it is.
    pub fn advance(&mut self, frames: usize) -> f32 {
        let mut s = *self;
        for _ in 0..frames {
            if s.is_settled() {
                break;
            }
            s.next_value();
        }
        *self = s;
        s.value
    }
}

/// What a state-variable filter passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterMode {
    #[default]
    Off,
    LowPass,
    HighPass,
    BandPass,
}

/// A stereo state-variable filter (trapezoidal, after Andrew Simper's SVF), stable under
/// fast cutoff modulation.
#[derive(Debug, Clone, Copy)]
pub struct Svf {
    pub mode: FilterMode,
    cutoff: Smoother,
    resonance: f32,
    sample_rate: f32,
    a1: f32,
    a2: f32,
    a3: f32,
    k: f32,
    ic1: [f32; 2],
    ic2: [f32; 2],
    coeff_cutoff: f32,
}

impl Svf {
    pub fn new(sample_rate: f32) -> Self {
        let mut svf = Self {
            mode: FilterMode::Off,
            cutoff: Smoother::new(1000.0, 0.02, sample_rate),
            resonance: 0.0,
            sample_rate,
            a1: 0.0,
            a2: 0.0,
            a3: 0.0,
            k: 2.0,
            ic1: [0.0; 2],
            ic2: [0.0; 2],
            coeff_cutoff: -1.0,
        };
        svf.update(1000.0);
        svf
    }

    /// Cutoff in Hz (glides), resonance 0 (none) to 1 (self-oscillation edge).
    pub fn set(&mut self, mode: FilterMode, cutoff_hz: f32, resonance: f32) {
        if self.mode == FilterMode::Off && mode != FilterMode::Off {
            // Start from the new cutoff rather than sweeping from a stale one.
            self.cutoff.reset(cutoff_hz);
            self.ic1 = [0.0; 2];
            self.ic2 = [0.0; 2];
        }
        self.mode = mode;
        self.cutoff
            .set(cutoff_hz.clamp(20.0, self.sample_rate * 0.45));
        self.resonance = resonance.clamp(0.0, 0.98);
        self.coeff_cutoff = -1.0;
    }

    fn update(&mut self, cutoff: f32) {
        let g = (PI * cutoff / self.sample_rate).tan();
        self.k = 2.0 - 2.0 * self.resonance;
        self.a1 = 1.0 / (1.0 + g * (g + self.k));
        self.a2 = g * self.a1;
        self.a3 = g * self.a2;
        self.coeff_cutoff = cutoff;
    }

    /// The filter as it will run for a block whose cutoff stays put: `None` while the cutoff
    /// glides. Every [`Svf::process`] call of such a block uses these coefficients, so a
    /// caller that runs the recursion itself (the mixer runs its steady layers' filters side
    /// by side) gets the same values, and hands the state back with [`Svf::resume`].
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub(crate) fn steady(&mut self) -> Option<SvfSteady> {
        if self.mode != FilterMode::Off {
            if !self.cutoff.is_settled() {
                return None;
            }
            let cutoff = self.cutoff.value();
            if cutoff != self.coeff_cutoff {
                self.update(cutoff);
            }
        }
        Some(SvfSteady {
            mode: self.mode,
            a: [self.a1, self.a2, self.a3],
            k: self.k,
            ic1: self.ic1,
            ic2: self.ic2,
        })
    }

    /// Whether the filter's state and cutoff are finite.
    pub fn is_finite(&self) -> bool {
        let state = [self.ic1, self.ic2].into_iter().flatten();
        state.chain([self.cutoff.value()]).all(f32::is_finite)
    }

    /// Forgets the sound so far (the next sample starts from silence) and brings a cutoff
    /// that went non-finite back to its target.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn reset(&mut self) {
        self.ic1 = [0.0; 2];
        self.ic2 = [0.0; 2];
        self.cutoff.heal(1000.0);
        self.coeff_cutoff = -1.0;
    }

    /// Takes back the state a caller of [`Svf::steady`] ran the filter to.
    pub(crate) fn resume(&mut self, ic1: [f32; 2], ic2: [f32; 2]) {
        self.ic1 = ic1;
        self.ic2 = ic2;
    }

    /// Filters one stereo frame. Runs on the JACK thread: no allocation, locks, system calls
    /// or logging.
    #[inline]
    pub fn process(&mut self, frame: [f32; 2]) -> [f32; 2] {
        if self.mode == FilterMode::Off {
            return frame;
        }
        let cutoff = self.cutoff.next_value();
        if cutoff != self.coeff_cutoff {
            self.update(cutoff);
        }
        let mut out = [0.0; 2];
        for ch in 0..2 {
            let v0 = frame[ch];
            let v3 = v0 - self.ic2[ch];
            let v1 = self.a1 * self.ic1[ch] + self.a2 * v3;
            let v2 = self.ic2[ch] + self.a2 * self.ic1[ch] + self.a3 * v3;
            self.ic1[ch] = 2.0 * v1 - self.ic1[ch] + ANTI_DENORMAL;
            self.ic2[ch] = 2.0 * v2 - self.ic2[ch] + ANTI_DENORMAL;
            out[ch] = match self.mode {
                FilterMode::LowPass => v2,
                FilterMode::HighPass => v0 - self.k * v1 - v2,
                FilterMode::BandPass => v1,
                FilterMode::Off => v0,
            };
        }
        out
    }
}

/// A filter's mode, coefficients and state for a block at a settled cutoff
/// ([`Svf::steady`]). Per channel, each sample:
/// `v3 = x - ic2; v1 = a[0]·ic1 + a[1]·v3; v2 = ic2 + a[1]·ic1 + a[2]·v3`, then
/// `ic1 = 2·v1 - ic1 + ε`, `ic2 = 2·v2 - ic2 + ε` (ε = [`SVF_EPSILON`]); low-pass gives
/// `v2`, band-pass `v1`, high-pass `x - k·v1 - v2`, and off gives `x`, its state untouched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SvfSteady {
    pub mode: FilterMode,
    pub a: [f32; 3],
    pub k: f32,
    pub ic1: [f32; 2],
    pub ic2: [f32; 2],
}

/// What the filter adds to its state each sample to keep it out of denormals.
pub(crate) const SVF_EPSILON: f32 = ANTI_DENORMAL;

/// An RBJ biquad, used for the master shelves.
#[derive(Debug, Clone, Copy)]
pub struct Biquad {
    b: [f32; 3],
    a: [f32; 2],
    z: [[f32; 2]; 2],
}

impl Biquad {
    /// Forgets the sound so far: the next sample starts from silence.
    pub fn reset(&mut self) {
        self.z = [[0.0; 2]; 2];
    }

    fn identity() -> Self {
        Self {
            b: [1.0, 0.0, 0.0],
            a: [0.0, 0.0],
            z: [[0.0; 2]; 2],
        }
    }

    /// A low shelf (`high = false`) or high shelf at `freq` with `gain_db`, slope 1.
    pub fn shelf(high: bool, freq: f32, gain_db: f32, sample_rate: f32) -> Self {
        let mut q = Self::identity();
        q.set_shelf(high, freq, gain_db, sample_rate);
        q
    }

    pub fn set_shelf(&mut self, high: bool, freq: f32, gain_db: f32, sample_rate: f32) {
        let a = 10f32.powf(gain_db / 40.0);
        let w0 = 2.0 * PI * freq / sample_rate;
        let (sin, cos) = w0.sin_cos();
        let alpha = sin / 2.0 * std::f32::consts::SQRT_2;
        let sq = 2.0 * a.sqrt() * alpha;
        let (b0, b1, b2, a0, a1, a2) = if high {
            (
                a * ((a + 1.0) + (a - 1.0) * cos + sq),
                -2.0 * a * ((a - 1.0) + (a + 1.0) * cos),
                a * ((a + 1.0) + (a - 1.0) * cos - sq),
                (a + 1.0) - (a - 1.0) * cos + sq,
                2.0 * ((a - 1.0) - (a + 1.0) * cos),
                (a + 1.0) - (a - 1.0) * cos - sq,
            )
        } else {
            (
                a * ((a + 1.0) - (a - 1.0) * cos + sq),
                2.0 * a * ((a - 1.0) - (a + 1.0) * cos),
                a * ((a + 1.0) - (a - 1.0) * cos - sq),
                (a + 1.0) + (a - 1.0) * cos + sq,
                -2.0 * ((a - 1.0) + (a + 1.0) * cos),
                (a + 1.0) + (a - 1.0) * cos - sq,
            )
        };
        self.b = [b0 / a0, b1 / a0, b2 / a0];
        self.a = [a1 / a0, a2 / a0];
    }

    /// Whether the filter leaves the sound as it is: its zeros cancel its poles (a shelf
    /// at 0 dB) and what it holds of past input is far below hearing.
    pub fn passes_through(&self) -> bool {
        let [b0, b1, b2] = self.b;
        b0 == 1.0
            && b1 == self.a[0]
            && b2 == self.a[1]
            && self
                .z
                .iter()
                .flatten()
                .all(|z| z.abs() < PASS_THROUGH_STATE)
    }

    /// [`Biquad::process`] over each of `frames` in place, its state held in registers
    /// through the block: the same values.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn process_block(&mut self, frames: &mut [[f32; 2]]) {
        let mut filter = *self;
        for frame in frames.iter_mut() {
            *frame = filter.process(*frame);
        }
        *self = filter;
    }

    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    #[inline]
    pub fn process(&mut self, frame: [f32; 2]) -> [f32; 2] {
        let mut out = [0.0; 2];
        for ch in 0..2 {
            let x = frame[ch];
            let y = self.b[0] * x + self.z[ch][0];
            self.z[ch][0] = self.b[1] * x - self.a[0] * y + self.z[ch][1];
            self.z[ch][1] = self.b[2] * x - self.a[1] * y + ANTI_DENORMAL;
            out[ch] = y;
        }
        out
    }
}

/// A stereo feedback delay whose time follows the tempo (set in frames by the mixer).
#[derive(Debug)]
pub struct Delay {
    line: [Vec<f32>; 2],
    write: usize,
    time: Smoother,
    pub feedback: f32,
}

impl Delay {
    /// A delay that can reach back `max_s` seconds.
    pub fn new(max_s: f32, sample_rate: f32) -> Self {
        let len = (max_s * sample_rate) as usize + 2;
        Self {
            line: [vec![0.0; len], vec![0.0; len]],
            write: 0,
            time: Smoother::new(sample_rate * 0.375, 0.05, sample_rate),
            feedback: 0.35,
        }
    }

    /// Empties the line: the echoes so far are gone.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn reset(&mut self) {
        self.line.iter_mut().for_each(|line| line.fill(0.0));
        self.time.heal(1.0);
    }

    /// Delay time in frames (clamped to the line).
    pub fn set_time(&mut self, frames: f32) {
        let max = (self.line[0].len() - 2) as f32;
        self.time.set(frames.clamp(1.0, max));
    }

    /// [`Delay::process`] over each of `input` into `wet` (as long): the same values, with
    /// the write position and the time's glide held in registers through the block. While
    /// the time is settled, eight frames at a time (`Delay::steady_chunk`).
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn process_block(&mut self, input: &[[f32; 2]], wet: &mut [[f32; 2]]) {
        let n = input.len().min(wet.len());
        let (input, wet) = (&input[..n], &mut wet[..n]);
        let mut done = 0;
        if self.time.is_settled() {
            let delay = self.time.value();
            for (x, out) in input.chunks_exact(8).zip(wet.chunks_exact_mut(8)) {
                let (Ok(x), Ok(out)) = (x.try_into(), out.try_into()) else {
                    break;
                };
                if !self.steady_chunk(delay, x, out) {
                    break;
                }
                done += 8;
            }
        }
        let (mut time, mut write) = (self.time, self.write);
        for (&x, out) in input[done..].iter().zip(wet[done..].iter_mut()) {
            *out = delay_step(
                &mut self.line,
                &mut write,
                time.next_value(),
                self.feedback,
                x,
            );
        }
        (self.time, self.write) = (time, write);
    }

    /// Eight frames of [`delay_step`] at a settled `delay`, side by side: every frame's
    /// read position and fraction as `delay_step` takes them, then the reads, then the
    /// writes. That is the frame-by-frame order's result wherever the eight read positions
    /// follow one another and lie apart from the eight written, which this checks first;
    /// false, having done nothing, where they do not (near a wrap of the line, or a delay
    /// shorter than the chunk).
    fn steady_chunk(&mut self, delay: f32, input: &[[f32; 2]; 8], wet: &mut [[f32; 2]; 8]) -> bool {
        let len = self.line[0].len();
        let write = self.write;
        // NOTE: positions are below 2^24 (the line is at most seconds long), so i32 holds
        // them and converts to and from f32 as usize does, in a loop that vectorises.
        if write + 8 > len || len >= 1 << 24 {
            return false;
        }
        let mut whole = [0i32; 8];
        let mut frac = [0.0f32; 8];
        for j in 0..8 {
            let read = (write + j) as i32 as f32 + len as f32 - delay;
            whole[j] = read as i32;
            frac[j] = read - whole[j] as f32;
        }
        let first = whole[0] as usize;
        let first = if first >= len { first - len } else { first };
        let consecutive = (0..8).all(|j| {
            let w = whole[j] as usize;
            (if w >= len { w - len } else { w }) == first + j
        });
        // Reads `first..first + 9`, writes `write..write + 8`, none wrapping.
        let apart = first + 9 <= write || write + 8 <= first;
        if !consecutive || !apart || first + 9 > len {
            return false;
        }
        let feedback = self.feedback;
        for (ch, line) in self.line.iter_mut().enumerate() {
            let mut y = [0.0f32; 8];
            if let Some(taps) = line.get(first..first + 9) {
                for j in 0..8 {
                    y[j] = delay_tap(taps[j], taps[j + 1], frac[j]);
                }
            }
            if let Some(slots) = line.get_mut(write..write + 8) {
                for j in 0..8 {
                    slots[j] = delay_feed(input[j][ch], y[j], feedback);
                }
            }
            for j in 0..8 {
                wet[j][ch] = y[j];
            }
        }
        self.write = wrap_next(write + 7, len);
        true
    }

    /// Feeds one frame and returns the delayed (wet) frame. Runs on the JACK thread: no
    /// allocation, locks, system calls or logging.
    #[inline]
    pub fn process(&mut self, input: [f32; 2]) -> [f32; 2] {
        let delay = self.time.next_value();
        delay_step(&mut self.line, &mut self.write, delay, self.feedback, input)
    }
}

/// One frame of a [`Delay`]: reads `delay` frames back from `write` (interpolated),
/// writes the input and the feedback there, and moves `write` on.
#[inline(always)]
fn delay_step(
    lines: &mut [Vec<f32>; 2],
    write: &mut usize,
    delay: f32,
    feedback: f32,
    input: [f32; 2],
) -> [f32; 2] {
    let len = lines[0].len();
    let read = *write as f32 + len as f32 - delay;
    // NOTE: `read` is positive and below 2^24, so truncation is its floor and the whole
    // part converts back exactly (f32::floor is a libm call on baseline x86-64).
    let whole = read as usize;
    let frac = read - whole as f32;
    let i0 = if whole >= len { whole - len } else { whole };
    let i1 = wrap_next(i0, len);
    let mut out = [0.0; 2];
    for (ch, line) in lines.iter_mut().enumerate() {
        let (a, b) = (line.get(i0).copied(), line.get(i1).copied());
        let y = delay_tap(a.unwrap_or(0.0), b.unwrap_or(0.0), frac);
        if let Some(slot) = line.get_mut(*write) {
            *slot = delay_feed(input[ch], y, feedback);
        }
        out[ch] = y;
    }
    *write = wrap_next(*write, len);
    out
}

/// The delayed sample `frac` of the way from `a` to `b`.
#[inline(always)]
fn delay_tap(a: f32, b: f32, frac: f32) -> f32 {
    a * (1.0 - frac) + b * frac
}

/// What the line takes at the write position: the input and the fed-back delayed sample.
#[inline(always)]
fn delay_feed(input: f32, y: f32, feedback: f32) -> f32 {
    input + y * feedback + ANTI_DENORMAL
}

/// A Freeverb-style stereo reverb: eight damped combs and four allpasses per side.
#[derive(Debug)]
pub struct Reverb {
    combs: [[Comb; 8]; 2],
    allpasses: [[Allpass; 4]; 2],
    /// Room size, 0–1.
    size: f32,
    /// High-frequency damping, 0–1.
    damping: f32,
    /// The combs' scratch tile ([`combs_block`]), written before it is read in every
    /// block: kept here so that no block has to clear 8 KiB of stack first.
    rows: Box<[[f32; REVERB_BLOCK]; 16]>,
}

#[derive(Debug)]
struct Comb {
    buf: Vec<f32>,
    pos: usize,
    store: f32,
}

#[derive(Debug)]
struct Allpass {
    buf: Vec<f32>,
    pos: usize,
}

/// Most frames [`Reverb::process_block`] takes at a time.
pub const REVERB_BLOCK: usize = 128;

/// [`Reverb::process_block`]'s body, inlined into a build for the widest vectors the CPU
/// has.
#[inline(always)]
fn reverb_blocks(reverb: &mut Reverb, input: &[[f32; 2]], wet: &mut [[f32; 2]]) {
    let feedback = reverb.size * 0.28 + 0.7;
    let damp = reverb.damping * 0.4;
    // The combs read a whole block's delayed outputs before writing any: a block may be no
    // longer than the shortest comb line (shorter than REVERB_BLOCK below about 5 kHz).
    let step = REVERB_BLOCK.min(reverb.combs[0][0].buf.len());
    let mut mono = [0.0f32; REVERB_BLOCK];
    for (input, wet) in input.chunks(step).zip(wet.chunks_mut(step)) {
        let n = input.len().min(wet.len());
        for (m, f) in mono.iter_mut().zip(input) {
            *m = (f[0] + f[1]) * 0.015;
        }
        let mut acc = [[0.0f32; REVERB_BLOCK]; 2];
        combs_block(
            &mut reverb.combs,
            &mono[..n],
            &mut acc,
            &mut reverb.rows,
            feedback,
            damp,
        );
        for (side, (allpasses, acc)) in reverb.allpasses.iter_mut().zip(&mut acc).enumerate() {
            for ap in allpasses.iter_mut() {
                ap.block(&mut acc[..n]);
            }
            for (w, a) in wet.iter_mut().zip(&acc[..n]) {
                w[side] = *a;
            }
        }
    }
}

/// Both sides' sixteen combs over a block (`mono` in, each side's sum of its combs'
/// outputs into `acc`), in three passes: each comb's delayed outputs are copied to its row
/// of the scratch tile `rows` and added to its side's sum; the sixteen damping recursions run down
/// the rows side by side, the one sequential part ([`damp_rows`]); and each comb's line
/// takes its new values. The operations and their order are those of [`Reverb::process`].
#[inline(always)]
fn combs_block(
    combs: &mut [[Comb; 8]; 2],
    mono: &[f32],
    acc: &mut [[f32; REVERB_BLOCK]; 2],
    rows: &mut [[f32; REVERB_BLOCK]; 16],
    feedback: f32,
    damp: f32,
) {
    let n = mono.len();
    for (side, acc) in acc.iter_mut().enumerate() {
        for (comb, row) in combs[side].iter().zip(&mut rows[side * 8..]) {
            let mut i = 0;
            for run in ring_runs(comb.buf.len(), comb.pos, n) {
                let ys = &comb.buf[run];
                let k = ys.len();
                for ((&y, r), a) in ys.iter().zip(&mut row[i..i + k]).zip(&mut acc[i..i + k]) {
                    *r = y;
                    *a += y;
                }
                i += k;
            }
        }
    }
    let mut stores: [f32; 16] = std::array::from_fn(|k| combs.as_flattened()[k].store);
    damp_rows(rows, &mut stores, n, damp);
    for ((comb, row), store) in combs
        .as_flattened_mut()
        .iter_mut()
        .zip(rows.iter())
        .zip(stores)
    {
        let len = comb.buf.len();
        let mut i = 0;
        for run in ring_runs(len, comb.pos, n) {
            let slots = &mut comb.buf[run];
            let k = slots.len();
            for (slot, (&m, &s)) in slots
                .iter_mut()
                .zip(mono[i..i + k].iter().zip(&row[i..i + k]))
            {
                *slot = m + s * feedback;
            }
            i += k;
        }
        comb.store = store;
        comb.pos = (comb.pos + n) % len;
    }
}

/// The combs' damping: down each of the sixteen rows (a comb's delayed outputs), the
/// one-pole low-pass `store = y·(1 − damp) + store·damp`, each output replacing its input;
/// `stores` carries the filters from block to block.
fn damp_rows(rows: &mut [[f32; REVERB_BLOCK]; 16], stores: &mut [f32; 16], n: usize, damp: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has just been seen to support AVX.
        return unsafe { damp_rows_avx(rows, stores, n, damp) };
    }
    damp_rows_portable(rows, stores, 0..n, damp);
}

/// [`damp_rows`] over the frames `range`, sixteen scalar recursions side by side.
#[inline(always)]
fn damp_rows_portable(
    rows: &mut [[f32; REVERB_BLOCK]; 16],
    stores: &mut [f32; 16],
    range: std::ops::Range<usize>,
    damp: f32,
) {
    for i in range {
        for (store, row) in stores.iter_mut().zip(rows.iter_mut()) {
            *store = row[i] * (1.0 - damp) + *store * damp + ANTI_DENORMAL;
            row[i] = *store;
        }
    }
}

/// [`damp_rows`] eight frames at a time: each side's eight rows are turned into eight
/// vectors of a frame's eight combs, the recursions step down them a frame a vector (the two
/// sides interleaved, so that one's latency hides the other's), and the vectors are turned
/// back into rows. The same operations in the same order as the scalar recursion, so the
/// same values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn damp_rows_avx(
    rows: &mut [[f32; REVERB_BLOCK]; 16],
    stores: &mut [f32; 16],
    n: usize,
    damp: f32,
) {
    use std::arch::x86_64::*;
    let keep = _mm256_set1_ps(1.0 - damp);
    let hold = _mm256_set1_ps(damp);
    let floor = _mm256_set1_ps(ANTI_DENORMAL);
    // SAFETY (loads and stores): each pointer is to eight floats inside a row or `stores`.
    let mut state = unsafe {
        [
            _mm256_loadu_ps(stores.as_ptr()),
            _mm256_loadu_ps(stores.as_ptr().add(8)),
        ]
    };
    let whole = n / 8 * 8;
    for i in (0..whole).step_by(8) {
        let mut frames = [[_mm256_setzero_ps(); 8]; 2];
        for (side, frames) in frames.iter_mut().enumerate() {
            let side_rows: [__m256; 8] = std::array::from_fn(|k| unsafe {
                _mm256_loadu_ps(rows[side * 8 + k][i..i + 8].as_ptr())
            });
            *frames = transpose8(side_rows);
        }
        let [left, right] = &mut frames;
        for frame in left.iter_mut().zip(right.iter_mut()) {
            for (frame, state) in <[_; 2]>::from(frame).into_iter().zip(state.iter_mut()) {
                let y = _mm256_mul_ps(*frame, keep);
                *state = _mm256_add_ps(_mm256_add_ps(y, _mm256_mul_ps(*state, hold)), floor);
                *frame = *state;
            }
        }
        for (side, frames) in frames.iter().enumerate() {
            for (k, row) in transpose8(*frames).iter().enumerate() {
                unsafe { _mm256_storeu_ps(rows[side * 8 + k][i..i + 8].as_mut_ptr(), *row) };
            }
        }
    }
    unsafe {
        _mm256_storeu_ps(stores.as_mut_ptr(), state[0]);
        _mm256_storeu_ps(stores.as_mut_ptr().add(8), state[1]);
    }
    damp_rows_portable(rows, stores, whole..n, damp);
}

/// An 8×8 transpose: lane `k` of output `j` is lane `j` of input `k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(crate) fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// The index ranges of `n` slots of a ring of `len` from `pos` on, split where the ring
/// wraps.
#[inline(always)]
fn ring_runs(
    len: usize,
    mut pos: usize,
    mut n: usize,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    std::iter::from_fn(move || {
        (n > 0).then(|| {
            let run = (len - pos).min(n);
            let range = pos..pos + run;
            (pos, n) = ((pos + run) % len, n - run);
            range
        })
    })
}

impl Allpass {
    /// The allpass over a block in place, split where its line wraps.
    #[inline(always)]
    fn block(&mut self, acc: &mut [f32]) {
        let len = self.buf.len();
        let mut done = 0;
        for run in ring_runs(len, self.pos, acc.len()) {
            let line = &mut self.buf[run];
            let k = line.len();
            for (slot, a) in line.iter_mut().zip(&mut acc[done..done + k]) {
                let buffered = *slot;
                *slot = *a + buffered * 0.5 + ANTI_DENORMAL;
                *a = buffered - *a;
            }
            done += k;
        }
        self.pos = (self.pos + acc.len()) % len;
    }
}

const COMB_TUNING: [usize; 8] = [1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617];
const ALLPASS_TUNING: [usize; 4] = [556, 441, 341, 225];
const STEREO_SPREAD: usize = 23;

impl Reverb {
    pub fn new(sample_rate: f32) -> Self {
        let scale = sample_rate / 44_100.0;
        let len = |n: usize, side: usize| ((n + side * STEREO_SPREAD) as f32 * scale) as usize + 1;
        let combs = [0, 1].map(|side| {
            COMB_TUNING.map(|n| Comb {
                buf: vec![0.0; len(n, side)],
                pos: 0,
                store: 0.0,
            })
        });
        let allpasses = [0, 1].map(|side| {
            ALLPASS_TUNING.map(|n| Allpass {
                buf: vec![0.0; len(n, side)],
                pos: 0,
            })
        });
        Self {
            combs,
            allpasses,
            size: 0.5,
            damping: 0.5,
            rows: Box::new([[0.0; REVERB_BLOCK]; 16]),
        }
    }

    pub fn set(&mut self, size: f32, damping: f32) {
        self.size = size.clamp(0.0, 1.0);
        self.damping = damping.clamp(0.0, 1.0);
    }

    /// Empties every comb and allpass: the tail so far is gone.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn reset(&mut self) {
        for comb in self.combs.iter_mut().flatten() {
            comb.buf.fill(0.0);
            comb.store = 0.0;
        }
        for allpass in self.allpasses.iter_mut().flatten() {
            allpass.buf.fill(0.0);
        }
    }

    pub fn size(&self) -> f32 {
        self.size
    }

    pub fn damping(&self) -> f32 {
        self.damping
    }

    /// Feeds `input` and writes the wet frames to `wet` (as long as `input`): the same,
    /// bit for bit, as [`Reverb::process`] frame by frame, and several times faster. It
    /// works [`REVERB_BLOCK`] frames at a time: the eight combs of a side run in lockstep
    /// through a block (their damping recursions side by side, each line read and written
    /// as one straight run between wraps), then each allpass runs over the block in one
    /// vectorizable pass. Runs on the JACK thread: no allocation, locks, system calls or
    /// logging.
    pub fn process_block(&mut self, input: &[[f32; 2]], wet: &mut [[f32; 2]]) {
        crate::analysis::widened! {
            fn widest(reverb: &mut Reverb, input: &[[f32; 2]], wet: &mut [[f32; 2]]) = reverb_blocks
        }
        widest(self, input, wet);
    }

    /// Feeds one frame and returns the wet frame. Runs on the JACK thread: no allocation,
    /// locks, system calls or logging.
    #[inline]
    pub fn process(&mut self, input: [f32; 2]) -> [f32; 2] {
        let feedback = self.size * 0.28 + 0.7;
        let damp = self.damping * 0.4;
        let mono = (input[0] + input[1]) * 0.015;
        let mut out = [0.0; 2];
        for ((combs, allpasses), out) in
            self.combs.iter_mut().zip(&mut self.allpasses).zip(&mut out)
        {
            let mut acc = 0.0;
            for comb in combs.iter_mut() {
                let len = comb.buf.len();
                let y = comb.buf.get(comb.pos).copied().unwrap_or(0.0);
                comb.store = y * (1.0 - damp) + comb.store * damp + ANTI_DENORMAL;
                if let Some(slot) = comb.buf.get_mut(comb.pos) {
                    *slot = mono + comb.store * feedback;
                }
                comb.pos = wrap_next(comb.pos, len);
                acc += y;
            }
            for ap in allpasses.iter_mut() {
                let len = ap.buf.len();
                let buffered = ap.buf.get(ap.pos).copied().unwrap_or(0.0);
                if let Some(slot) = ap.buf.get_mut(ap.pos) {
                    *slot = acc + buffered * 0.5 + ANTI_DENORMAL;
                }
                acc = buffered - acc;
                ap.pos = wrap_next(ap.pos, len);
            }
            *out = acc;
        }
        out
    }
}

/// [`Compressor::process_block`]'s body, inlined into a build for the widest vectors
/// the CPU has.
#[inline(always)]
fn compress_block(c: &mut Compressor, frames: &mut [[f32; 2]]) {
    const STRETCH: usize = 64;
    let ratio = c.ratio.max(1.0);
    let mut wanted = [0.0f32; STRETCH];
    for frames in frames.chunks_mut(STRETCH) {
        let wanted = &mut wanted[..frames.len()];
        for (w, f) in wanted.iter_mut().zip(frames.iter()) {
            let over = (Compressor::level_db(*f) - c.threshold_db).max(0.0);
            *w = over - over / ratio;
        }
        let mut envelope = c.envelope_db;
        for w in wanted.iter_mut() {
            envelope = c.follow(envelope, *w);
            *w = envelope;
        }
        c.envelope_db = envelope;
        for (f, &envelope) in frames.iter_mut().zip(wanted.iter()) {
            let gain = c.gain(envelope);
            *f = [f[0] * gain, f[1] * gain];
        }
    }
}

/// Decibels in an octave of amplitude (20·log10 2).
const COMPRESSOR_DB_PER_OCTAVE: f32 = 6.020_6;

/// A feed-forward stereo-linked compressor.
#[derive(Debug, Clone, Copy)]
pub struct Compressor {
    pub threshold_db: f32,
    pub ratio: f32,
    pub makeup_db: f32,
    attack: f32,
    release: f32,
    envelope_db: f32,
    sample_rate: f32,
}

impl Compressor {
    pub fn new(sample_rate: f32) -> Self {
        let mut c = Self {
            threshold_db: -12.0,
            ratio: 2.0,
            makeup_db: 0.0,
            attack: 0.0,
            release: 0.0,
            envelope_db: 0.0,
            sample_rate,
        };
        c.set_times(10.0, 150.0);
        c
    }

    /// Attack and release in milliseconds.
    pub fn set_times(&mut self, attack_ms: f32, release_ms: f32) {
        let coeff = |ms: f32| (-1.0 / (ms.max(0.1) * 0.001 * self.sample_rate)).exp();
        self.attack = coeff(attack_ms);
        self.release = coeff(release_ms);
    }

    /// Lets go of any gain reduction at once.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn reset(&mut self) {
        self.envelope_db = 0.0;
    }

    /// Gain reduction currently applied, dB (≥ 0).
    pub fn reduction_db(&self) -> f32 {
        self.envelope_db
    }

    /// [`Compressor::process`] over each of `frames` in place: the same values. The levels
    /// and the gains, in and out of decibels, are taken over a whole stretch in loops that
    /// vectorise; only the envelope's recursion runs frame by frame.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn process_block(&mut self, frames: &mut [[f32; 2]]) {
        crate::analysis::widened! {
            fn widest(compressor: &mut Compressor, frames: &mut [[f32; 2]]) = compress_block
        }
        widest(self, frames);
    }

    /// The louder channel's level, dBFS (silence at -200).
    #[inline(always)]
    fn level_db(frame: [f32; 2]) -> f32 {
        COMPRESSOR_DB_PER_OCTAVE * fast_log2(frame[0].abs().max(frame[1].abs()).max(1.0e-10))
    }

    /// The envelope after `envelope`, towards a reduction of `wanted` dB.
    #[inline(always)]
    fn follow(&self, envelope: f32, wanted: f32) -> f32 {
        let coeff = if wanted > envelope {
            self.attack
        } else {
            self.release
        };
        wanted + (envelope - wanted) * coeff
    }

    /// The gain at a reduction of `envelope` dB, makeup included.
    #[inline(always)]
    fn gain(&self, envelope: f32) -> f32 {
        fast_exp2((self.makeup_db - envelope) / COMPRESSOR_DB_PER_OCTAVE)
    }

    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    #[inline]
    pub fn process(&mut self, frame: [f32; 2]) -> [f32; 2] {
        // NOTE: decibels by fast_log2 and back by fast_exp2 (both within 1e-5 dB):
        // libm's log10 and powf cost more than the rest of an offline chain together.
        let over = (Self::level_db(frame) - self.threshold_db).max(0.0);
        let wanted = over - over / self.ratio.max(1.0);
        self.envelope_db = self.follow(self.envelope_db, wanted);
        let gain = self.gain(self.envelope_db);
        [frame[0] * gain, frame[1] * gain]
    }
}

/// Lookahead of the limiter, in seconds.
pub const LIMITER_LOOKAHEAD_S: f32 = 0.0015;

/// The limiter's lookahead (and so its latency) in frames at `sample_rate`.
pub fn limiter_lookahead(sample_rate: f32) -> usize {
    ((LIMITER_LOOKAHEAD_S * sample_rate) as usize).max(1)
}
/// Room left below the ceiling for inter-sample peaks the 4× estimate cannot see.
const TRUE_PEAK_MARGIN_DB: f32 = 0.3;
/// Release time of the limiter, seconds.
pub const LIMITER_RELEASE_S: f32 = 0.08;
/// Most needs [`LimiterGain::run`] holds in one go.
const HOLD_BLOCK: usize = 1024;

/// A 4× Catmull-Rom estimate of one channel's true (inter-sample) peak.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeakEstimator {
    history: [f32; 3],
}

impl PeakEstimator {
    /// The highest of the sample and three interpolated points before it. Runs on the JACK
    /// thread: no allocation, locks, system calls or logging.
    #[inline]
    pub fn next(&mut self, x: f32) -> f32 {
        let [p0, p1, p2] = self.history;
        let p3 = x;
        let mut peak = p2.abs().max(p3.abs());
        for v in catmull_rom_quarters(p0, p1, p2, p3) {
            // The segment between p1 and p2 lies one sample back; its peak belongs to this
            // window all the same.
            peak = peak.max(v.abs());
        }
        self.history = [p1, p2, p3];
        peak
    }
}

/// The Catmull-Rom curve through four samples at a quarter, half and three quarters of the
/// way between the middle two.
#[inline(always)]
fn catmull_rom_quarters(p0: f32, p1: f32, p2: f32, p3: f32) -> [f32; 3] {
    [0.25f32, 0.5, 0.75].map(|t| {
        0.5 * (2.0 * p1
            + (-p0 + p2) * t
            + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * t * t
            + (-p0 + 3.0 * p1 - 3.0 * p2 + p3) * t * t * t)
    })
}

/// [`PeakEstimator`] over both channels, for offline mastering and the limiter: the same
/// estimates (the larger channel's per frame), a block at a time in a loop that vectorises,
/// or a frame at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct StereoPeaks {
    /// The last three frames seen.
    history: [[f32; 2]; 3],
}

impl StereoPeaks {
    /// Estimates from after `frames` (a loop's first samples follow its last ones).
    pub fn after(frames: &[[f32; 2]]) -> StereoPeaks {
        let mut peaks = StereoPeaks::default();
        let tail = &frames[frames.len().saturating_sub(3)..];
        peaks.history[3 - tail.len()..].copy_from_slice(tail);
        peaks
    }

    /// The estimate for one frame: what [`StereoPeaks::fill`] gives it.
    #[inline]
    pub fn next(&mut self, frame: [f32; 2]) -> f32 {
        let [h0, h1, h2] = self.history;
        let channel = |ch: usize| true_peak(&[h0[ch], h1[ch], h2[ch], frame[ch]]);
        let peak = larger(channel(0), channel(1));
        self.history = [h1, h2, frame];
        peak
    }

    /// The estimate for each of `frames` into `out` (as long as `frames`).
    pub fn fill(&mut self, frames: &[[f32; 2]], out: &mut [f32]) {
        crate::analysis::widened! {
            fn widest(history: &[[f32; 2]; 3], frames: &[[f32; 2]], out: &mut [f32]) = stereo_peaks
        }
        widest(&self.history, frames, out);
        let keep = frames.len().min(3);
        self.history.copy_within(keep.., 0);
        self.history[3 - keep..].copy_from_slice(&frames[frames.len() - keep..]);
    }
}

#[inline(always)]
fn stereo_peaks(history: &[[f32; 2]; 3], frames: &[[f32; 2]], out: &mut [f32]) {
    // The master asks for a chunk of sixteen at a time where it limits in place, and the
    // mixer's limiter for a period at a time: smaller scratches for those.
    if frames.len() <= 16 {
        stereo_peaks_by::<{ 16 + 3 }>(history, frames, out);
    } else if frames.len() <= 64 {
        stereo_peaks_by::<{ 64 + 3 }>(history, frames, out);
    } else {
        stereo_peaks_by::<{ 256 + 3 }>(history, frames, out);
    }
}

/// [`stereo_peaks`] a stretch of `SCRATCH - 3` frames at a time.
#[inline(always)]
fn stereo_peaks_by<const SCRATCH: usize>(
    history: &[[f32; 2]; 3],
    frames: &[[f32; 2]],
    out: &mut [f32],
) {
    // Each channel apart, its three frames before a stretch ahead of it, so that the four
    // samples of each estimate lie side by side and the loop vectorises.
    let stretch = SCRATCH - 3;
    let mut channels = [[0.0f32; SCRATCH]; 2];
    for (ch, samples) in channels.iter_mut().enumerate() {
        for (s, f) in samples.iter_mut().zip(history) {
            *s = f[ch];
        }
    }
    for (frames, out) in frames.chunks(stretch).zip(out.chunks_mut(stretch)) {
        let n = frames.len();
        for (ch, samples) in channels.iter_mut().enumerate() {
            for (s, f) in samples[3..].iter_mut().zip(frames) {
                *s = f[ch];
            }
        }
        // The estimate for the last of four frames, the larger of its channels'.
        let [left, right] = &channels;
        for ((o, l), r) in out.iter_mut().zip(left.windows(4)).zip(right.windows(4)) {
            *o = larger(true_peak(l), true_peak(r));
        }
        for samples in &mut channels {
            samples.copy_within(n..n + 3, 0);
        }
    }
}

/// The larger of `a` and `b`: a comparison, which vectorises as one instruction where
/// `f32::max` takes five for its NaN rule (here a NaN `b` is passed over, a NaN `a` kept).
#[inline(always)]
pub(crate) fn larger(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// The true-peak estimate for the last of four samples `p`: the larger of it, the one
/// before, and the three Catmull-Rom points between those two.
#[inline(always)]
fn true_peak(p: &[f32]) -> f32 {
    catmull_rom_quarters(p[0], p[1], p[2], p[3])
        .into_iter()
        .fold(larger(p[2].abs(), p[3].abs()), |m, v| larger(m, v.abs()))
}

/// The limiter's gain law, apart from its delay line: the gain each sample needs is held
/// over the lookahead window, averaged over the same window and released slowly. Offline
/// mastering runs it over precomputed peaks.
#[derive(Debug)]
pub struct LimiterGain {
    minima: MinQueue,
    /// Set when [`LimiterGain::run`] has held gains without the queue: it is built again
    /// from `recent` before [`LimiterGain::next`] pushes onto it. While it is not set, the
    /// queue is what the law knows of the window.
    minima_stale: bool,
    /// While `minima_stale`, the last window of needs, oldest at `pos` (as `averaged` is),
    /// or in their place the least of each and every need after it: the same minimum over
    /// any window that ends at or after the last.
    recent: Vec<f32>,
    averaged: Vec<f32>,
    pos: usize,
    sum: f64,
    inv_len: f64,
    release: f32,
    envelope: f32,
    /// How many needs in a row, up to the last, asked for no reduction (were at least 1).
    unreduced: usize,
    /// [`LimiterGain::run`]'s working space for the hold over a block, made on its first
    /// call (the realtime limiter never makes it).
    hold: Box<[Vec<f32>; 2]>,
}

impl LimiterGain {
    /// A gain law over a window of `window` samples releasing with coefficient `release`.
    pub fn new(window: usize, release: f32) -> Self {
        let window = window.max(1);
        Self {
            minima: MinQueue::new(window),
            minima_stale: false,
            recent: vec![1.0; window],
            averaged: vec![1.0; window],
            pos: 0,
            sum: window as f64,
            inv_len: 1.0 / window as f64,
            release,
            envelope: 1.0,
            unreduced: 0,
            hold: Box::default(),
        }
    }

    /// The limiter's law at `sample_rate`.
    pub fn for_rate(sample_rate: f32) -> Self {
        Self::with_release(sample_rate, LIMITER_RELEASE_S)
    }

    /// The limiter's law at `sample_rate`, releasing over `release_s` seconds.
    pub fn with_release(sample_rate: f32, release_s: f32) -> Self {
        Self::new(
            limiter_lookahead(sample_rate),
            (-1.0 / (release_s * sample_rate)).exp(),
        )
    }

    /// Feeds the gain this sample needs (at most 1) and returns the gain to apply to the
    /// sample a window ago. Runs on the JACK thread: no allocation, locks, system calls or
    /// logging.
    #[inline]
    pub fn next(&mut self, need: f32) -> f32 {
        if self.minima_stale {
            self.rebuild_minima();
        }
        // Hold: the smallest gain needed anywhere in the window.
        let held = self.minima.push(need);
        // Average the held gains over the window (running sum).
        let old = self.averaged.get(self.pos).copied().unwrap_or(1.0);
        if let Some(slot) = self.averaged.get_mut(self.pos) {
            *slot = held;
        }
        self.sum += f64::from(held) - f64::from(old);
        let smooth = (self.sum * self.inv_len) as f32;
        self.envelope = if smooth < self.envelope {
            smooth
        } else {
            smooth + (self.envelope - smooth) * self.release
        }
        .min(smooth.max(held));
        self.pos = wrap_next(self.pos, self.averaged.len());
        self.unreduced = Self::counted(self.unreduced, need);
        self.envelope.min(1.0)
    }

    /// Forgets every need so far: the law is at rest, at a gain of 1.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn reset(&mut self) {
        self.minima.clear();
        self.minima_stale = false;
        self.recent.fill(1.0);
        self.averaged.fill(1.0);
        self.pos = 0;
        self.sum = self.averaged.len() as f64;
        self.envelope = 1.0;
        self.unreduced = 0;
    }

    /// Makes room for [`LimiterGain::run`] over `max_block` needs at a time, so that it does
    /// not allocate on the realtime thread.
    pub fn reserve(&mut self, max_block: usize) {
        let room = self.averaged.len() + max_block.min(HOLD_BLOCK);
        for scratch in self.hold.iter_mut() {
            scratch.reserve(room.saturating_sub(scratch.len()));
        }
    }

    /// [`LimiterGain::next`] over each of `needs`, into `gains`: the same values,
    /// faster. Over the stretches where nothing in two windows has asked for reduction, the
    /// hold and the average are 1 and stay so: only the release runs there, and it stops
    /// once it reaches its resting value. Takes as many needs as there are gains.
    pub fn run(&mut self, needs: &[f32], gains: &mut [f32]) {
        let n = needs.len().min(gains.len());
        let (needs, gains) = (&needs[..n], &mut gains[..n]);
        let window = self.averaged.len();
        let mut i = 0;
        while i < needs.len() {
            let need = needs[i];
            if Self::resting(self.unreduced, window, need) {
                let run = needs[i..]
                    .iter()
                    .position(|&n| n != 1.0)
                    .unwrap_or(needs.len() - i);
                self.rest(&mut gains[i..i + run]);
                i += run;
            } else if Self::usual(need) && self.sum.is_finite() {
                i += self.steps(&needs[i..], &mut gains[i..]);
            } else {
                gains[i] = self.next(need);
                i += 1;
            }
        }
    }

    /// [`LimiterGain::next`] over `needs` while each is finite and at least 0 (the average,
    /// finite at the start, then stays so) and the law is not at rest, at most
    /// [`HOLD_BLOCK`] of them: nothing the law compares is ever NaN then, so plain
    /// comparisons choose as `min` and `max` do, without their care for NaN. Returns how
    /// many needs it took (at least one).
    ///
    /// The hold is taken over the whole stretch first, branch-free: the minimum over a
    /// window is the smaller of two overlapping power-of-two spans', built by doubling.
    /// What is left runs with its state in locals, the release's recursion its only chain.
    fn steps(&mut self, needs: &[f32], gains: &mut [f32]) -> usize {
        let window = self.averaged.len();
        // The hold is taken over as many needs as the stretch could run to: where it stops
        // (at a need it does not take, or at rest) is found as it goes, and a window only
        // looks back, so what lies past that point changes nothing before it.
        let needs = &needs[..needs.len().min(HOLD_BLOCK)];
        if !self.minima_stale {
            self.minima.suffix_minima(&mut self.recent, self.pos);
        }
        // The window before the stretch: the last window of needs less its oldest. A NaN
        // among them holds as the queue holds it (see MinQueue::push), which plain
        // comparisons do not: the step law takes over until it has left.
        let history = || {
            let (older, newer) = self.recent.split_at(self.pos);
            newer.iter().skip(1).chain(older)
        };
        if history().any(|v| v.is_nan()) {
            gains[0] = self.next(needs[0]);
            return 1;
        }
        let [spans, doubled] = &mut *self.hold;
        spans.clear();
        spans.extend(history().copied().chain(needs.iter().copied()));
        let smaller = |a: f32, b: f32| if b < a { b } else { a };
        // spans[i] is the least of the `span` values from i on.
        let mut span = 1;
        while 2 * span <= window {
            let reach = spans.len() - span;
            doubled.clear();
            doubled.extend(
                spans[..reach]
                    .iter()
                    .zip(&spans[span..])
                    .map(|(&a, &b)| smaller(a, b)),
            );
            std::mem::swap(spans, doubled);
            span *= 2;
        }
        let held = spans[..needs.len()]
            .iter()
            .zip(&spans[window - span..])
            .map(|(&a, &b)| smaller(smaller(a, b), 1.0));

        let (mut sum, mut envelope, mut pos) = (self.sum, self.envelope, self.pos);
        let (inv_len, release) = (self.inv_len, self.release);
        let (mut unreduced, mut taken) = (self.unreduced, 0);
        // With a release of 0 to 1 the envelope never rises past the average (it moves
        // towards it from below), which the hold never sits under: so neither caps it,
        // and the recursion is left as short as it can be.
        let capped = !(0.0..=1.0).contains(&release);
        for ((held, &need), gain) in held.zip(needs).zip(gains.iter_mut()) {
            if taken > 0 && (!Self::usual(need) || Self::resting(unreduced, window, need)) {
                break;
            }
            let old = self.averaged.get(pos).copied().unwrap_or(1.0);
            if let Some(slot) = self.averaged.get_mut(pos) {
                *slot = held;
            }
            if let Some(slot) = self.recent.get_mut(pos) {
                *slot = need;
            }
            sum += f64::from(held) - f64::from(old);
            let smooth = (sum * inv_len) as f32;
            let released = if smooth < envelope {
                smooth
            } else {
                smooth + (envelope - smooth) * release
            };
            envelope = if capped {
                let cap = if held > smooth { held } else { smooth };
                if cap < released { cap } else { released }
            } else {
                released
            };
            pos = wrap_next(pos, window);
            *gain = if envelope < 1.0 { envelope } else { 1.0 };
            unreduced = Self::counted(unreduced, need);
            taken += 1;
        }
        (self.sum, self.envelope, self.pos) = (sum, envelope, pos);
        self.unreduced = unreduced;
        self.minima_stale = true;
        taken
    }

    /// Builds the queue of minima again from the last window of needs, after
    /// [`LimiterGain::steps`] has held gains without it.
    fn rebuild_minima(&mut self) {
        self.minima.clear();
        let (older, newer) = self.recent.split_at(self.pos);
        for &need in newer.iter().chain(older) {
            self.minima.push(need);
        }
        self.minima_stale = false;
    }

    /// Whether a need of exactly 1, `unreduced` needs after the last under 1, finds the law
    /// at rest: two windows of needs of 1 or more ([`LimiterGain::rest`]).
    fn resting(unreduced: usize, window: usize, need: f32) -> bool {
        unreduced >= 2 * window && need == 1.0
    }

    /// The count of needs in a row that asked for no reduction, after `need`.
    fn counted(unreduced: usize, need: f32) -> usize {
        if need >= 1.0 {
            unreduced.saturating_add(1)
        } else {
            0
        }
    }

    /// Whether a need is one a limiter asks for (finite, at least 0), which
    /// [`LimiterGain::steps`] takes.
    fn usual(need: f32) -> bool {
        need.is_finite() && need >= 0.0
    }

    /// `gains.len()` steps of a need of exactly 1, two windows or more after the last need
    /// under 1: every held gain in the window is 1, so the hold gives 1, the average loses
    /// a 1 for a 1 (its sum unchanged) and the release alone moves.
    fn rest(&mut self, gains: &mut [f32]) {
        let steps = gains.len();
        if steps == 0 {
            return;
        }
        let smooth = (self.sum * self.inv_len) as f32;
        let cap = smooth.max(1.0);
        let release = self.release;
        let mut envelope = self.envelope;
        let mut done = 0;
        if smooth == 1.0 && envelope <= 1.0 && (0.0..=1.0).contains(&release) {
            // The usual case, the whole window at 1: the envelope rises towards 1 and
            // never past it, so neither the attack nor the caps choose anything else.
            for gain in gains.iter_mut() {
                let next = 1.0 + (envelope - 1.0) * release;
                *gain = next;
                done += 1;
                if next == envelope {
                    break;
                }
                envelope = next;
            }
        } else {
            for gain in gains.iter_mut() {
                let next = if smooth < envelope {
                    smooth
                } else {
                    smooth + (envelope - smooth) * release
                }
                .min(cap);
                *gain = next.min(1.0);
                done += 1;
                if next == envelope {
                    break;
                }
                envelope = next;
            }
        }
        // At rest: every further step gives the same.
        gains[done..].fill(envelope.min(1.0));
        self.envelope = envelope;
        // Every need of the window is at least 1, so one 1 stands for them all.
        self.minima.push_many_ones(steps);
        self.minima_stale = false;
        self.pos = (self.pos + steps) % self.averaged.len();
        self.unreduced = self.unreduced.saturating_add(steps);
    }
}

/// A lookahead brick-wall limiter that holds inter-sample (true) peaks under a ceiling.
///
/// Peaks are estimated on a 4× Catmull-Rom interpolation of the signal; the needed gain is
/// held over the lookahead window and averaged over the same window, so the gain at any
/// peak is at most what that peak needs: no overshoot, and no hard corners to distort.
#[derive(Debug)]
pub struct Limiter {
    ceiling: f32,
    delay: [Vec<f32>; 2],
    pos: usize,
    peaks: StereoPeaks,
    law: LimiterGain,
    /// [`Limiter::process_block`]'s needs and gains, one block long ([`Limiter::reserve`]).
    needs: Vec<f32>,
    gains: Vec<f32>,
}

impl Limiter {
    pub fn new(ceiling_db: f32, sample_rate: f32) -> Self {
        let law = LimiterGain::for_rate(sample_rate);
        let len = law.averaged.len();
        let mut limiter = Self {
            ceiling: 1.0,
            delay: [vec![0.0; len], vec![0.0; len]],
            pos: 0,
            peaks: StereoPeaks::default(),
            law,
            needs: Vec::new(),
            gains: Vec::new(),
        };
        limiter.set_ceiling(ceiling_db);
        limiter
    }

    /// Lookahead latency in frames.
    pub fn latency(&self) -> usize {
        self.delay[0].len()
    }

    pub fn set_ceiling(&mut self, ceiling_db: f32) {
        self.ceiling = ceiling_gain(ceiling_db);
    }

    /// Empties the lookahead line and lets go of any gain reduction.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn reset(&mut self) {
        self.delay.iter_mut().for_each(|line| line.fill(0.0));
        self.peaks = StereoPeaks::default();
        self.law.reset();
    }

    /// The current gain, 0–1.
    pub fn gain(&self) -> f32 {
        self.law.envelope.min(1.0)
    }

    /// Makes room for [`Limiter::process_block`] on blocks of up to `max_block` frames, so
    /// that it runs them whole without allocating.
    pub fn reserve(&mut self, max_block: usize) {
        self.needs = vec![1.0; max_block];
        self.gains = vec![1.0; max_block];
        self.law.reserve(max_block);
    }

    /// [`Limiter::process`] over each of `frames` in place: the same values, with the gain
    /// law run over the block ([`LimiterGain::run`]). Blocks longer than the room
    /// [`Limiter::reserve`] made go in pieces; without it, a frame at a time.
    ///
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    pub fn process_block(&mut self, frames: &mut [[f32; 2]]) {
        if self.needs.is_empty() {
            frames.iter_mut().for_each(|f| *f = self.process(*f));
            return;
        }
        for chunk in frames.chunks_mut(self.needs.len()) {
            let n = chunk.len();
            let (needs, gains) = (&mut self.needs[..n], &mut self.gains[..n]);
            self.peaks.fill(chunk, needs);
            for need in needs.iter_mut() {
                *need = limiter_need(*need, self.ceiling);
            }
            self.law.run(needs, gains);
            limiter_delay(&mut self.delay, &mut self.pos, chunk, gains);
        }
    }

    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    #[inline]
    pub fn process(&mut self, frame: [f32; 2]) -> [f32; 2] {
        let need = limiter_need(self.peaks.next(frame), self.ceiling);
        let envelope = self.law.next(need);
        let mut frames = [frame];
        limiter_delay(&mut self.delay, &mut self.pos, &mut frames, &[envelope]);
        frames[0]
    }
}

/// The gain `frame` needs for its estimated true peak to stay under `ceiling` (at most 1).
#[inline(always)]
fn limiter_need(peak: f32, ceiling: f32) -> f32 {
    if peak > ceiling { ceiling / peak } else { 1.0 }
}

/// Puts `frames` through the limiter's lookahead lines from `pos`, in place: each frame
/// goes into the line and the frame it replaces, a window old, comes out at its gain in
/// `gains` (as long as `frames`); moves `pos` on.
#[inline(always)]
fn limiter_delay(
    lines: &mut [Vec<f32>; 2],
    pos: &mut usize,
    frames: &mut [[f32; 2]],
    gains: &[f32],
) {
    let len = lines[0].len();
    let mut done = 0;
    for run in ring_runs(len, *pos, frames.len()) {
        let k = run.len();
        for (ch, line) in lines.iter_mut().enumerate() {
            let slots = line.get_mut(run.clone()).unwrap_or_default();
            let frames = frames.get_mut(done..done + k).unwrap_or_default();
            let gains = gains.get(done..done + k).unwrap_or_default();
            for ((slot, f), &gain) in slots.iter_mut().zip(frames).zip(gains) {
                let delayed = *slot;
                *slot = f[ch];
                f[ch] = delayed * gain;
            }
        }
        done += k;
    }
    let next = *pos + frames.len();
    *pos = if next < len { next } else { next % len };
}

/// The linear level the limiter holds peaks under for a ceiling in dBTP (margin included).
pub fn ceiling_gain(ceiling_db: f32) -> f32 {
    db_to_gain(ceiling_db.min(0.0) - TRUE_PEAK_MARGIN_DB)
}

/// The minimum of the last `window` values pushed, in O(1) amortised per push: a ring of
/// (sequence number, value) pairs whose values ascend from the front.
#[derive(Debug)]
struct MinQueue {
    seq: Vec<u64>,
    values: Vec<f32>,
    head: usize,
    len: usize,
    window: u64,
    count: u64,
}

impl MinQueue {
    fn new(window: usize) -> Self {
        let cap = window + 1;
        Self {
            seq: vec![0; cap],
            values: vec![0.0; cap],
            head: 0,
            len: 0,
            window: window as u64,
            count: 0,
        }
    }

    /// Adds `value` and returns the minimum of the window, `value` included (at most 1).
    /// Runs on the JACK thread: no allocation, locks, system calls or logging.
    #[inline]
    fn push(&mut self, value: f32) -> f32 {
        let cap = self.values.len();
        let at = |i: usize| if i >= cap { i - cap } else { i };
        // The queue's ends in locals while it changes, written back once.
        let (mut head, mut len, count) = (self.head, self.len, self.count);
        // Drop from the back every value no smaller than the new one: it can never be the
        // minimum again.
        while len > 0
            && self
                .values
                .get(at(head + len - 1))
                .is_some_and(|&v| v >= value)
        {
            len -= 1;
        }
        let slot = at(head + len);
        if let (Some(s), Some(v)) = (self.seq.get_mut(slot), self.values.get_mut(slot)) {
            *s = count;
            *v = value;
            len += 1;
        }
        // Drop from the front what has left the window.
        while len > 1
            && self
                .seq
                .get(head)
                .is_some_and(|&s| s + self.window <= count)
        {
            head = at(head + 1);
            len -= 1;
        }
        (self.head, self.len, self.count) = (head, len, count + 1);
        self.values.get(head).copied().unwrap_or(1.0).min(1.0)
    }

    /// Empties the queue, as new.
    fn clear(&mut self) {
        (self.head, self.len, self.count) = (0, 0, 0);
    }

    /// Writes into `ring` (a window long, the slot at `oldest` holding the value about to
    /// leave the window) the least of each value still in the window and every value after
    /// it: the first entry of the queue at or after it, since each entry is smaller than
    /// all that came after it. Values before the first pushed are 1 (the most a hold gives).
    fn suffix_minima(&self, ring: &mut [f32], oldest: usize) {
        let window = ring.len();
        let cap = self.values.len();
        let mut entry = 0;
        for age in (1..window).rev() {
            // The value pushed `age` pushes ago, `age` − 1 after the one that leaves next.
            let slot = (oldest + window - age) % window;
            let Some(seq) = self.count.checked_sub(age as u64) else {
                ring[slot] = 1.0;
                continue;
            };
            while entry + 1 < self.len && self.seq[(self.head + entry) % cap] < seq {
                entry += 1;
            }
            ring[slot] = self.values[(self.head + entry) % cap];
        }
    }

    /// `steps` pushes of 1 onto a queue whose window holds nothing under 1: each push
    /// drops every value (none is smaller), so what is left is the last of them alone.
    fn push_many_ones(&mut self, steps: usize) {
        if steps == 0 {
            return;
        }
        self.count += steps as u64;
        self.len = 1;
        if let (Some(s), Some(v)) = (self.seq.get_mut(self.head), self.values.get_mut(self.head)) {
            *s = self.count - 1;
            *v = 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform noise in [-0.5, 0.5) from a linear congruential generator seeded with `seed`.
    fn noise(seed: u32) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    const SR: f32 = 48_000.0;

    #[test]
    fn fast_log2_and_exp2_match_the_library() {
        let mut x = 1.0e-10f32;
        while x < 1.0e7 {
            let (fast, exact) = (fast_log2(x), x.log2());
            assert!(
                (fast - exact).abs() <= 2.0e-6 * exact.abs().max(1.0),
                "log2 {x}: {fast} vs {exact}"
            );
            x *= 1.0137;
        }
        let mut e = -60.0f32;
        while e < 60.0 {
            let (fast, exact) = (fast_exp2(e), e.exp2());
            assert!(
                (fast - exact).abs() <= 5.0e-7 * exact,
                "exp2 {e}: {fast} vs {exact}"
            );
            e += 0.0137;
        }
        assert_eq!(fast_exp2(0.0), 1.0);
        assert_eq!(fast_exp2(-1000.0), f32::MIN_POSITIVE);
    }

    #[test]
    fn the_min_queue_is_the_window_minimum() {
        let values: Vec<f32> = (0..2000u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 1000.0)
            .collect();
        for window in [1usize, 2, 7, 72] {
            let mut q = MinQueue::new(window);
            for (i, &v) in values.iter().enumerate() {
                let lo = (i + 1).saturating_sub(window);
                let expected = values[lo..=i].iter().copied().fold(1.0f32, f32::min);
                assert_eq!(q.push(v), expected, "window {window} at {i}");
            }
        }
    }

    fn sine(freq: f32, frames: usize, amp: f32) -> Vec<[f32; 2]> {
        (0..frames)
            .map(|i| {
                let v = amp * (2.0 * PI * freq * i as f32 / SR).sin();
                [v, v]
            })
            .collect()
    }

    fn rms(frames: &[[f32; 2]]) -> f32 {
        (frames.iter().map(|f| f[0] * f[0]).sum::<f32>() / frames.len() as f32).sqrt()
    }

    #[test]
    fn the_smoother_glides_and_settles() {
        let mut s = Smoother::new(0.0, 0.01, SR);
        s.set(1.0);
        let first = s.next_value();
        assert!(first > 0.0 && first < 0.02, "no jump: {first}");
        for _ in 0..960 {
            s.next_value();
        }
        assert!((s.value() - 1.0).abs() < 0.002, "{}", s.value());
        for _ in 0..4800 {
            s.next_value();
        }
        assert!(s.is_settled());
    }

    #[test]
    fn advancing_a_smoother_is_stepping_it_frame_by_frame() {
        let mut stepped = Smoother::new(0.0, 0.01, SR);
        stepped.set(1.0);
        let mut advanced = stepped;
        for frames in [1, 63, 64, 2000, 4000] {
            let last = (0..frames).map(|_| stepped.next_value()).last();
            assert_eq!(Some(advanced.advance(frames)), last, "after {frames} more");
        }
        assert!(advanced.is_settled());
        assert_eq!(advanced.advance(64), 1.0);
    }

    #[test]
    fn filters_pass_and_stop_what_they_should() {
        // 12 dB/octave for low- and high-pass, 6 dB/octave each side for band-pass.
        let cases = [
            (FilterMode::LowPass, 100.0, 8000.0, 0.05),
            (FilterMode::HighPass, 8000.0, 100.0, 0.05),
            (FilterMode::BandPass, 1000.0, 8000.0, 0.15),
            (FilterMode::BandPass, 1000.0, 125.0, 0.15),
        ];
        for (mode, pass, stop, bound) in cases {
            let mut f = Svf::new(SR);
            f.set(mode, 1000.0, 0.1);
            let gain = |f: &mut Svf, hz| {
                let out: Vec<_> = sine(hz, 9600, 0.5)
                    .into_iter()
                    .map(|x| f.process(x))
                    .collect();
                rms(&out[4800..]) / (0.5 / 2f32.sqrt())
            };
            let passed = gain(&mut f, pass);
            let stopped = gain(&mut f, stop);
            assert!(passed > 0.5, "{mode:?} passes {pass} Hz: {passed}");
            assert!(stopped < bound, "{mode:?} stops {stop} Hz: {stopped}");
        }
    }

    #[test]
    fn shelves_boost_their_band_only() {
        let mut low = Biquad::shelf(false, 200.0, 6.0, SR);
        let out: Vec<_> = sine(50.0, 9600, 0.1)
            .into_iter()
            .map(|x| low.process(x))
            .collect();
        let boost = gain_to_db(rms(&out[4800..]) / (0.1 / 2f32.sqrt()));
        assert!((boost - 6.0).abs() < 0.5, "{boost}");
        let out: Vec<_> = sine(5000.0, 9600, 0.1)
            .into_iter()
            .map(|x| low.process(x))
            .collect();
        let flat = gain_to_db(rms(&out[4800..]) / (0.1 / 2f32.sqrt()));
        assert!(flat.abs() < 0.3, "{flat}");
    }

    #[test]
    fn a_shelf_passes_through_at_0_db_once_its_past_has_died_away() {
        for high in [false, true] {
            let freq = if high { 8000.0 } else { 120.0 };
            let mut shelf = Biquad::shelf(high, freq, 0.0, SR);
            assert!(shelf.passes_through(), "high {high}: flat from the start");
            let music = sine(90.0, 4800, 0.5);
            for &x in &music {
                assert_eq!(shelf.process(x), x, "high {high}: flat is the input itself");
            }
            shelf.set_shelf(high, freq, 6.0, SR);
            assert!(
                !shelf.passes_through(),
                "high {high}: a boost shapes the sound"
            );
            let mut boosted = music.clone();
            shelf.process_block(&mut boosted);
            shelf.set_shelf(high, freq, 0.0, SR);
            assert!(
                !shelf.passes_through(),
                "high {high}: the boost still rings"
            );
            let quiet = (0..48_000).find(|_| {
                shelf.process([0.0; 2]);
                shelf.passes_through()
            });
            assert!(quiet.is_some(), "high {high}: the ringing dies away");
        }
    }

    #[test]
    fn the_block_delay_is_the_frame_by_frame_one_bit_for_bit() {
        let mut next = noise(11);
        let input: Vec<[f32; 2]> = (0..12_000).map(|_| [next(), next()]).collect();
        // A line of 962 frames, so the writes wrap often. Times: long, at the line's end,
        // shorter than a chunk, the shortest, and a glide.
        let times = [
            (700.3, None),
            (959.9, None),
            (5.5, None),
            (1.0, None),
            (500.0, Some(123.7)),
        ];
        for (time, glide_to) in times {
            let mut framewise = Delay::new(0.02, SR);
            framewise.time.reset(time);
            framewise.set_time(glide_to.unwrap_or(time));
            framewise.feedback = 0.6;
            let mut blockwise = Delay::new(0.02, SR);
            blockwise.time = framewise.time;
            blockwise.feedback = 0.6;
            let by_frame: Vec<[f32; 2]> = input.iter().map(|&x| framewise.process(x)).collect();
            let mut by_block = vec![[0.0f32; 2]; input.len()];
            let mut at = 0;
            for n in [64, 37, 100, 8, 3].into_iter().cycle() {
                let end = (at + n).min(input.len());
                blockwise.process_block(&input[at..end], &mut by_block[at..end]);
                at = end;
                if at == input.len() {
                    break;
                }
            }
            let bits = |v: &[[f32; 2]]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&by_frame) == bits(&by_block),
                "time {time}, glide {glide_to:?}"
            );
            assert_eq!(framewise.write, blockwise.write);
        }
    }

    #[test]
    fn the_delay_repeats_after_its_time_with_feedback() {
        let mut d = Delay::new(1.0, SR);
        d.set_time(4800.0);
        d.time.reset(4800.0);
        d.feedback = 0.5;
        let mut out = Vec::new();
        for i in 0..15_000 {
            let x = if i == 0 { 1.0 } else { 0.0 };
            out.push(d.process([x, x])[0]);
        }
        let peaks: Vec<usize> = (0..out.len()).filter(|&i| out[i].abs() > 0.2).collect();
        assert_eq!(peaks, vec![4800, 9600, 14_400]);
        assert!((out[9600] - 0.5).abs() < 1e-3);
    }

    #[test]
    fn the_reverb_has_a_tail_that_decays() {
        let mut r = Reverb::new(SR);
        r.set(0.8, 0.5);
        let mut energy = [0.0f32; 4];
        for i in 0..(4 * 24_000) {
            let x = if i < 64 { 0.5 } else { 0.0 };
            let y = r.process([x, x]);
            energy[i / 24_000] += y[0] * y[0] + y[1] * y[1];
        }
        assert!(energy[0] > 0.0);
        assert!(energy[1] > 0.0, "a tail");
        assert!(energy[3] < energy[1] * 0.5, "that decays: {energy:?}");
    }

    #[test]
    fn the_block_reverb_is_the_frame_by_frame_one_bit_for_bit() {
        let mut next = noise(11);
        // Noise bursts and silence, so the tail rings through several blocks on its own.
        let input: Vec<[f32; 2]> = (0..20_000)
            .map(|i| {
                if (i / 3_000) % 2 == 0 {
                    [next(), 0.3 * next()]
                } else {
                    [0.0; 2]
                }
            })
            .collect();
        for (rate, size, damping) in [
            (48_000.0, 0.8, 0.5),
            (44_100.0, 0.3, 0.9),
            (8_000.0, 1.0, 0.0),
            (4_000.0, 0.5, 0.5),
        ] {
            let mut one = Reverb::new(rate);
            one.set(size, damping);
            let want: Vec<[f32; 2]> = input.iter().map(|&f| one.process(f)).collect();
            // Uneven calls: some shorter than a block, some spanning many, some of one frame.
            let mut blocks = Reverb::new(rate);
            blocks.set(size, damping);
            let mut got = vec![[0.0f32; 2]; input.len()];
            let mut at = 0;
            for len in [1usize, 64, 127, 128, 129, 1_000, 3, 5_000].iter().cycle() {
                if at == input.len() {
                    break;
                }
                let end = (at + len).min(input.len());
                blocks.process_block(&input[at..end], &mut got[at..end]);
                at = end;
            }
            let first_off = want.iter().zip(&got).position(|(a, b)| {
                a[0].to_bits() != b[0].to_bits() || a[1].to_bits() != b[1].to_bits()
            });
            assert_eq!(first_off, None, "{rate} Hz");
            assert!(got.iter().any(|f| f[0] != f[1]), "the sides differ");
        }
    }

    #[test]
    fn the_combs_damping_is_the_same_in_vectors_as_in_scalars() {
        let mut next = noise(3);
        let mut rows = [[0.0f32; REVERB_BLOCK]; 16];
        rows.as_flattened_mut().fill_with(&mut next);
        let stores: [f32; 16] = std::array::from_fn(|k| k as f32 * 0.01 - 0.07);
        for n in [REVERB_BLOCK, 101, 7] {
            let (mut a, mut b) = (rows, rows);
            let (mut sa, mut sb) = (stores, stores);
            damp_rows(&mut a, &mut sa, n, 0.3);
            damp_rows_portable(&mut b, &mut sb, 0..n, 0.3);
            assert!(
                a.as_flattened()
                    .iter()
                    .zip(b.as_flattened())
                    .all(|(x, y)| x.to_bits() == y.to_bits())
            );
            assert!(sa.iter().zip(&sb).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert_ne!(a, rows, "the rows were damped");
        }
    }

    #[test]
    fn block_peak_estimates_are_the_sample_by_sample_ones() {
        let mut next = noise(7);
        let frames: Vec<[f32; 2]> = (0..3_000).map(|_| [next(), next()]).collect();
        let mut one = [PeakEstimator::default(); 2];
        // As a loop: primed with the last three frames.
        for f in &frames[frames.len() - 3..] {
            one[0].next(f[0]);
            one[1].next(f[1]);
        }
        let expected: Vec<f32> = frames
            .iter()
            .map(|f| one[0].next(f[0]).max(one[1].next(f[1])))
            .collect();
        let mut blocks = StereoPeaks::after(&frames);
        let mut got = vec![0.0; frames.len()];
        let mut start = 0;
        // Blocks of one, two and three frames cross the history; longer ones run through, in
        // the small scratch (up to 16) and the large.
        for len in [1, 2, 3, 1, 700, 5, 16, 17, 2_000].into_iter().cycle() {
            let end = frames.len().min(start + len);
            blocks.fill(&frames[start..end], &mut got[start..end]);
            start = end;
            if start == frames.len() {
                break;
            }
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn the_limiter_holds_true_peaks_under_the_ceiling() {
        let ceiling = -1.0;
        let mut l = Limiter::new(ceiling, SR);
        // A loud sine near a quarter of the rate: sample peaks under-read its true peak.
        let input = sine(11_025.0, 48_000, 1.6);
        let out: Vec<_> = input.into_iter().map(|x| l.process(x)).collect();
        // Check the true peak of the output on an 8x linear-phase estimate (dense sinc).
        let samples: Vec<f32> = out.iter().map(|f| f[0]).collect();
        let mut true_peak = 0.0f32;
        for i in 64..samples.len() - 64 {
            for k in 0..8 {
                let t = i as f32 + k as f32 / 8.0;
                let mut acc = 0.0;
                for (j, sample) in samples.iter().enumerate().take(i + 32).skip(i - 32) {
                    let x = t - j as f32;
                    let sinc = if x == 0.0 {
                        1.0
                    } else {
                        (PI * x).sin() / (PI * x)
                    };
                    let window = 0.5 + 0.5 * (PI * x / 32.0).cos();
                    acc += sample * sinc * window;
                }
                true_peak = true_peak.max(acc.abs());
            }
        }
        assert!(
            gain_to_db(true_peak) <= ceiling + 0.05,
            "true peak {} dBTP",
            gain_to_db(true_peak)
        );
        // And it does not squash quiet material.
        let mut l = Limiter::new(ceiling, SR);
        let quiet: Vec<_> = sine(440.0, 4800, 0.25)
            .into_iter()
            .map(|x| l.process(x))
            .collect();
        assert!((l.gain() - 1.0).abs() < 1e-6);
        assert!((rms(&quiet[200..]) - 0.25 / 2f32.sqrt()).abs() < 0.01);
    }

    #[test]
    fn the_block_limiter_is_the_frame_by_frame_one_bit_for_bit() {
        // Loud noise that needs limiting, then quiet stretches where the law rests.
        let mut next = noise(5);
        let input: Vec<[f32; 2]> = (0..9_000)
            .map(|i| {
                let level = if (i / 1500) % 2 == 0 { 3.0 } else { 0.2 };
                [next() * level, next() * level]
            })
            .collect();
        let mut framewise = Limiter::new(-1.0, SR);
        let by_frame: Vec<[f32; 2]> = input.iter().map(|&x| framewise.process(x)).collect();
        let mut blockwise = Limiter::new(-1.0, SR);
        blockwise.reserve(64);
        let mut by_block = input.clone();
        let mut at = 0;
        // Blocks shorter and longer than the reserve and than the lookahead line.
        for n in [64, 1, 37, 300, 2, 64, 129].into_iter().cycle() {
            let end = (at + n).min(by_block.len());
            blockwise.process_block(&mut by_block[at..end]);
            at = end;
            if at == by_block.len() {
                break;
            }
        }
        assert!(blockwise.latency() < 300, "a block outruns the line");
        let bits = |v: &[[f32; 2]]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&by_frame) == bits(&by_block));
        let ceiling = ceiling_gain(-1.0);
        assert!(
            by_frame.iter().flatten().all(|x| x.abs() <= ceiling),
            "limited"
        );
        assert!(
            input.iter().flatten().any(|x| x.abs() > 1.0),
            "loud enough to limit"
        );
    }

    #[test]
    fn the_gain_law_over_a_block_is_the_law_step_by_step() {
        // Sparse dips under long runs of 1 (the rest path), dips closer than two windows
        // (the full law), needs over 1, and blocks that end inside a run.
        let mut noise = noise(7);
        let mut random = move || noise() + 0.5;
        let mut needs = Vec::new();
        for _ in 0..400 {
            let gap = match random() {
                r if r < 0.3 => (random() * 20.0) as usize,
                r if r < 0.9 => (random() * 400.0) as usize,
                _ => 20_000,
            };
            needs.extend(std::iter::repeat_n(1.0, gap));
            let dip = 0.2 + 0.8 * random();
            needs.extend((0..1 + (random() * 30.0) as usize).map(|_| dip * (0.9 + 0.1 * random())));
            if random() < 0.1 {
                needs.push(1.5);
            }
        }
        // A loud master's needs: a different reduction nearly every sample, for longer than
        // a block holds at once.
        needs.extend((0..5_000).map(|_| {
            let r = random();
            if r < 0.2 { 1.0 } else { 0.3 + 0.7 * r }
        }));
        // A NaN the hold keeps (at the front of its queue) while dips follow it.
        needs.push(f32::NAN);
        needs.extend((0..300).map(|_| 0.4 + 0.6 * random()));
        // Needs no limiter asks for, NaN last of all (it spoils the average for good): the
        // block law must still give what the step law gives.
        for odd in [f32::INFINITY, -0.5, 1.0, f32::NEG_INFINITY, 0.5, f32::NAN] {
            needs.push(odd);
            needs.extend(std::iter::repeat_n(1.0, 500));
        }
        // A release outside 0–1 is no limiter's, but the two laws must still agree.
        for (window, release) in [
            (72, (-1.0f32 / 3840.0).exp()),
            (5, 0.99),
            (1, 0.5),
            (3, -0.5),
            (7, 1.5),
        ] {
            let mut stepped = LimiterGain::new(window, release);
            let expected: Vec<f32> = needs.iter().map(|&n| stepped.next(n)).collect();
            let mut blocked = LimiterGain::new(window, release);
            let mut got = vec![0.0; needs.len()];
            let mut start = 0;
            // Some stretches step by step in between, as a caller might mix the two.
            let stretches = [
                (1, true),
                (1_000, true),
                (37, false),
                (333, true),
                (50_000, true),
                (5, false),
            ];
            for (len, blocks) in stretches.into_iter().cycle() {
                let end = needs.len().min(start + len);
                if blocks {
                    blocked.run(&needs[start..end], &mut got[start..end]);
                } else {
                    for (g, &n) in got[start..end].iter_mut().zip(&needs[start..end]) {
                        *g = blocked.next(n);
                    }
                }
                start = end;
                if start == needs.len() {
                    break;
                }
            }
            let bits = |v: &[f32]| v.iter().map(|g| g.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&expected), "window {window}");
            // The state it leaves goes on as the stepped law's does.
            for n in [1.0, 0.5, 1.0, 1.0, 0.7] {
                assert_eq!(blocked.next(n), stepped.next(n));
            }
        }
    }

    #[test]
    fn the_compressor_reduces_loud_material_by_its_ratio() {
        let mut c = Compressor::new(SR);
        c.threshold_db = -20.0;
        c.ratio = 4.0;
        c.set_times(1.0, 50.0);
        let loud = sine(200.0, 48_000, 1.0); // peaks at 0 dBFS: 20 dB over
        let out: Vec<_> = loud.into_iter().map(|x| c.process(x)).collect();
        let reduction = c.reduction_db();
        assert!((reduction - 15.0).abs() < 1.0, "{reduction}");
        assert!(rms(&out[24_000..]) < 0.25);
    }

    #[test]
    fn the_block_compressor_is_the_frame_by_frame_one_bit_for_bit() {
        // Noise that swells over the threshold and falls back: attack and release both run.
        let mut next = noise(3);
        let input: Vec<[f32; 2]> = (0..9_000)
            .map(|i| {
                let level = 0.1 + 2.0 * (i as f32 / 9_000.0 * 3.0 * PI).sin().abs();
                [next() * level, next() * level]
            })
            .collect();
        let mut framewise = Compressor::new(SR);
        framewise.makeup_db = 2.0;
        let mut blockwise = framewise;
        let by_frame: Vec<[f32; 2]> = input.iter().map(|&x| framewise.process(x)).collect();
        let mut by_block = input.clone();
        let mut at = 0;
        for n in [64, 1, 37, 300, 2, 129].into_iter().cycle() {
            let end = (at + n).min(by_block.len());
            blockwise.process_block(&mut by_block[at..end]);
            at = end;
            if at == by_block.len() {
                break;
            }
        }
        let bits = |v: &[[f32; 2]]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&by_frame) == bits(&by_block));
        assert!(framewise.reduction_db() > 0.0, "it compressed");
    }
}
