//! Loudness as EBU R 128 defines it (integrated LUFS, loudness range, true peak), measured
//! with the `ebur128` crate, the same algorithm as libebur128 and ffmpeg's ebur128 filter.

use serde::Serialize;

/// What went wrong measuring loudness.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoudnessError {
    /// The sample rate is outside what the meter supports.
    #[error("cannot measure loudness at {0} Hz: the meter takes 16 Hz to 2.8 MHz")]
    Rate(u32),
    /// The meter failed inside.
    #[error("loudness meter failed: {0}")]
    Meter(String),
}

impl From<ebur128::Error> for LoudnessError {
    fn from(e: ebur128::Error) -> Self {
        LoudnessError::Meter(format!("{e:?}"))
    }
}

/// The loudness of a piece of stereo audio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoudnessReport {
    /// Integrated loudness, LUFS (gated). `-inf` for digital silence.
    pub integrated_lufs: f64,
    /// Loudness range, LU.
    pub range_lu: f64,
    /// True peak (4× oversampled), dBTP.
    pub true_peak_dbtp: f64,
    /// Highest sample, dBFS.
    pub sample_peak_dbfs: f64,
}

fn to_db(linear: f64) -> f64 {
    if linear > 0.0 {
        20.0 * linear.log10()
    } else {
        f64::NEG_INFINITY
    }
}

/// How many frames go to the meter per call: large enough to amortise the call, small
/// enough to stay in cache.
const CHUNK_FRAMES: usize = 16_384;

fn feed(meter: &mut ebur128::EbuR128, frames: &[[f32; 2]]) -> Result<(), LoudnessError> {
    for chunk in frames.chunks(CHUNK_FRAMES) {
        meter.add_frames_f32(chunk.as_flattened())?;
    }
    Ok(())
}

/// Integrated loudness, LUFS, true peak and range included.
pub fn measure(frames: &[[f32; 2]], sample_rate: u32) -> Result<LoudnessReport, LoudnessError> {
    use ebur128::Mode;
    let mut meter = ebur128::EbuR128::new(
        2,
        sample_rate,
        Mode::I | Mode::LRA | Mode::TRUE_PEAK | Mode::SAMPLE_PEAK,
    )
    .map_err(|_| LoudnessError::Rate(sample_rate))?;
    feed(&mut meter, frames)?;
    let peak = |f: &dyn Fn(u32) -> Result<f64, ebur128::Error>| -> Result<f64, LoudnessError> {
        Ok(f(0)?.max(f(1)?))
    };
    Ok(LoudnessReport {
        integrated_lufs: meter.loudness_global()?,
        range_lu: meter.loudness_range()?,
        true_peak_dbtp: to_db(peak(&|c| meter.true_peak(c))?),
        sample_peak_dbfs: to_db(peak(&|c| meter.sample_peak(c))?),
    })
}

/// Integrated loudness only, LUFS: the cheap measurement normalisation iterates on.
pub fn integrated(frames: &[[f32; 2]], sample_rate: u32) -> Result<f64, LoudnessError> {
    let mut meter = ebur128::EbuR128::new(2, sample_rate, ebur128::Mode::I)
        .map_err(|_| LoudnessError::Rate(sample_rate))?;
    feed(&mut meter, frames)?;
    Ok(meter.loudness_global()?)
}

/// K-weighted energy (left² + right² after the BS.1770 K filter, the quantity integrated
/// loudness averages) summed over consecutive `chunk`-frame chunks; the last may be short.
/// The filter coefficients are derived for any rate the way libebur128 (and so the
/// `ebur128` crate) derives them.
///
/// A long piece is filtered as four stretches side by side, so that the filters'
/// recursions, each waiting on its last output, overlap. Each stretch after the first starts
/// a fifth of a second early, from silence, and sums from its own start: by then the
/// filters have forgotten the silence (the high pass's double pole at 38 Hz has decayed to
/// about 10^-19), so the sums are those of one run through, to double precision.
pub fn k_energy_sums(frames: &[[f32; 2]], sample_rate: u32, chunk: usize) -> Vec<f64> {
    let chunk = chunk.max(1);
    let filter = KFilter::new(sample_rate);
    let warm = (sample_rate / 5) as usize;
    if frames.len() < 4 * SEGMENTS * warm {
        return k_energy_in_turn(&filter, frames, chunk);
    }
    let mut out = vec![0.0; frames.len().div_ceil(chunk)];
    // Stretches of whole chunks, so every chunk is summed by one of them.
    let stretch = frames.len().div_ceil(SEGMENTS).div_ceil(chunk) * chunk;
    super::widened! {
        fn widest(filter: &KFilter, frames: &[[f32; 2]], out: &mut [f64], chunk: usize, stretch: usize, warm: usize) = k_energy_side_by_side
    }
    widest(&filter, frames, &mut out, chunk, stretch, warm);
    out
}

/// [`k_energy_sums`] in one run through.
fn k_energy_in_turn(filter: &KFilter, frames: &[[f32; 2]], chunk: usize) -> Vec<f64> {
    let mut state = [[[0.0f64; 1]; 4]; 2];
    frames
        .chunks(chunk)
        .map(|frames| {
            let mut sum = 0.0;
            for f in frames {
                for (z, x) in state.iter_mut().zip(f) {
                    let w = filter.step(z, 0, f64::from(*x));
                    sum += w * w;
                }
            }
            sum
        })
        .collect()
}

/// Stretches [`k_energy_sums`] filters side by side.
const SEGMENTS: usize = 4;

#[inline(always)]
fn k_energy_side_by_side(
    filter: &KFilter,
    frames: &[[f32; 2]],
    out: &mut [f64],
    chunk: usize,
    stretch: usize,
    warm: usize,
) {
    // Lane j reads frame j·stretch − warm + i at step i; frames outside the piece are
    // silence, and only those of its own stretch are summed.
    let len = frames.len();
    let mut state = [[[0.0f64; SEGMENTS]; 4]; 2];
    // One step of every lane, both channels: the K-weighted energy of each lane's frame.
    #[inline(always)]
    fn step(
        filter: &KFilter,
        state: &mut [[[f64; SEGMENTS]; 4]; 2],
        x: [[f32; SEGMENTS]; 2],
    ) -> [f64; SEGMENTS] {
        let mut e = [0.0f64; SEGMENTS];
        for (x, z) in x.iter().zip(state) {
            for j in 0..SEGMENTS {
                let w = filter.step(z, j, f64::from(x[j]));
                e[j] += w * w;
            }
        }
        e
    }
    // The lanes' frames at `at(j)`, silence where there is none.
    #[inline(always)]
    fn lanes(
        frames: &[[f32; 2]],
        at: impl Fn(usize) -> Option<usize>,
    ) -> ([[f32; SEGMENTS]; 2], [f64; SEGMENTS]) {
        let mut x = [[0.0f32; SEGMENTS]; 2];
        let mut counted = [0.0f64; SEGMENTS];
        for j in 0..SEGMENTS {
            if let Some(f) = at(j).and_then(|at| frames.get(at)) {
                x[0][j] = f[0];
                x[1][j] = f[1];
                counted[j] = 1.0;
            }
        }
        (x, counted)
    }
    // Warming up: each lane runs through the frames before its stretch.
    for i in 0..warm {
        let (x, _) = lanes(frames, |j| (j * stretch + i).checked_sub(warm));
        step(filter, &mut state, x);
    }
    // Every lane's frame is in the piece up to `whole` (the last lane's stretch may end
    // early): there they are read without asking.
    let whole = len.saturating_sub((SEGMENTS - 1) * stretch).min(stretch);
    for first in (0..stretch).step_by(chunk) {
        let last = stretch.min(first + chunk);
        let mut sums = [0.0f64; SEGMENTS];
        let direct = last.min(whole.max(first));
        for q in first..direct {
            let x = std::array::from_fn(|c| std::array::from_fn(|j| frames[j * stretch + q][c]));
            let e = step(filter, &mut state, x);
            for j in 0..SEGMENTS {
                sums[j] += e[j];
            }
        }
        for q in direct..last {
            let (x, counted) = lanes(frames, |j| Some(j * stretch + q));
            let e = step(filter, &mut state, x);
            for j in 0..SEGMENTS {
                sums[j] += e[j] * counted[j];
            }
        }
        for (j, sum) in sums.iter().enumerate() {
            if let Some(slot) = out.get_mut((j * stretch + first) / chunk) {
                *slot += *sum;
            }
        }
    }
}

/// The BS.1770 K filter: a high shelf, then a high pass, as two biquads per channel
/// (transposed direct form II). The high pass's numerator is 1, -2, 1 at every rate, so its
/// multiplications by 1 are left out and its -2 written in (the same values).
struct KFilter {
    shelf_b: [f64; 3],
    shelf_a: [f64; 2],
    pass_a: [f64; 2],
}

impl KFilter {
    fn new(sample_rate: u32) -> KFilter {
        let rate = f64::from(sample_rate);
        // High shelf (head effects).
        let (f0, g, q) = (
            1_681.974_450_955_533,
            3.999_843_853_973_347,
            0.707_175_236_955_419_6,
        );
        let k = (std::f64::consts::PI * f0 / rate).tan();
        let vh = 10f64.powf(g / 20.0);
        let vb = vh.powf(0.499_666_774_154_541_6);
        let a0 = 1.0 + k / q + k * k;
        let shelf_b = [
            (vh + vb * k / q + k * k) / a0,
            2.0 * (k * k - vh) / a0,
            (vh - vb * k / q + k * k) / a0,
        ];
        let shelf_a = [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0];
        // High pass (RLB weighting).
        let (f0, q) = (38.135_470_876_024_44, 0.500_327_037_323_877_3);
        let k = (std::f64::consts::PI * f0 / rate).tan();
        let a0 = 1.0 + k / q + k * k;
        KFilter {
            shelf_b,
            shelf_a,
            pass_a: [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
        }
    }

    /// One sample through lane `j` of the state `z` (four values per lane).
    #[inline(always)]
    fn step<const L: usize>(&self, z: &mut [[f64; L]; 4], j: usize, x: f64) -> f64 {
        let (b, a) = (&self.shelf_b, &self.shelf_a);
        let y = b[0] * x + z[0][j];
        z[0][j] = b[1] * x - a[0] * y + z[1][j];
        z[1][j] = b[2] * x - a[1] * y;
        let a = &self.pass_a;
        let w = y + z[2][j];
        z[2][j] = -2.0 * y - a[0] * w + z[3][j];
        z[3][j] = y - a[1] * w;
        w
    }
}

/// Integrated loudness (LUFS) from K-weighted energy summed over consecutive 100 ms
/// sub-blocks of `sub_len` frames: 400 ms blocks every 100 ms, gated at -70 LUFS and
/// 10 LU below the mean, as BS.1770-4 says.
pub fn gated_loudness(sub_blocks: &[f64], sub_len: usize) -> f64 {
    let to_lufs = |e: f64| -0.691 + 10.0 * e.log10();
    let blocks: Vec<f64> = sub_blocks
        .windows(4)
        .map(|w| w.iter().sum::<f64>() / (4 * sub_len) as f64)
        .filter(|&e| e > 0.0 && to_lufs(e) > -70.0)
        .collect();
    if blocks.is_empty() {
        return f64::NEG_INFINITY;
    }
    let mean = blocks.iter().sum::<f64>() / blocks.len() as f64;
    let relative = to_lufs(mean) - 10.0;
    let kept: Vec<f64> = blocks
        .into_iter()
        .filter(|&e| to_lufs(e) > relative)
        .collect();
    if kept.is_empty() {
        return f64::NEG_INFINITY;
    }
    to_lufs(kept.iter().sum::<f64>() / kept.len() as f64)
}

/// Loudness range (LU) from 100 ms sub-block energies, as EBU Tech 3342 defines it: 3 s
/// windows every 100 ms, gated at -70 LUFS and 20 LU below their mean, the spread between
/// the 10th and 95th percentiles.
pub fn loudness_range(sub_blocks: &[f64], sub_len: usize) -> f64 {
    let to_lufs = |e: f64| -0.691 + 10.0 * e.log10();
    let windows: Vec<f64> = sub_blocks
        .windows(30)
        .map(|w| w.iter().sum::<f64>() / (30 * sub_len) as f64)
        .filter(|&e| e > 0.0 && to_lufs(e) > -70.0)
        .collect();
    if windows.is_empty() {
        return 0.0;
    }
    let mean = windows.iter().sum::<f64>() / windows.len() as f64;
    let relative = to_lufs(mean) - 20.0;
    let mut kept: Vec<f64> = windows
        .into_iter()
        .map(to_lufs)
        .filter(|&l| l > relative)
        .collect();
    if kept.is_empty() {
        return 0.0;
    }
    kept.sort_by(f64::total_cmp);
    let at = |q: f64| kept[((kept.len() - 1) as f64 * q).round() as usize];
    at(0.95) - at(0.10)
}

/// The true peak (linear) of `frames`: the largest absolute value of the signal upsampled
/// 4× (2× from 96 kHz, none from 192 kHz) by the 48-tap windowed-sinc interpolator the
/// `ebur128` crate uses, or the sample peak when that is higher. Computed channel by
/// channel as plain convolutions, every phase from the same loads, which vectorise.
pub fn true_peak(frames: &[[f32; 2]], sample_rate: u32) -> f64 {
    f64::from(peaks(frames, sample_rate).1)
}

/// The sample peak and the true peak ([`true_peak`]) of `frames`, linear, in one pass.
fn peaks(frames: &[[f32; 2]], sample_rate: u32) -> (f32, f32) {
    if sample_rate >= 192_000 {
        let peak = sample_peak(frames);
        (peak, peak)
    } else if sample_rate >= 96_000 {
        peaks_between::<1>(frames)
    } else {
        peaks_between::<3>(frames)
    }
}

/// The largest absolute sample of `frames`.
pub fn sample_peak(frames: &[[f32; 2]]) -> f32 {
    super::widened! {
        fn widest(frames: &[[f32; 2]]) -> f32 = sample_peak_portable
    }
    widest(frames)
}

#[inline(always)]
fn sample_peak_portable(frames: &[[f32; 2]]) -> f32 {
    const LANES: usize = 8;
    let mut best = [0.0f32; 2 * LANES];
    let chunks = frames.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        let samples = chunk.as_flattened();
        for (b, &s) in best.iter_mut().zip(samples) {
            let a = s.abs();
            if a > *b {
                *b = a;
            }
        }
    }
    rest.iter()
        .flatten()
        .chain(&best)
        .fold(0.0, |m: f32, &s| if s.abs() > m { s.abs() } else { m })
}

/// The interpolator's taps: the 48-tap windowed sinc for an upsampling `factor`, as the
/// meter designs it, split into its phases (phase 0, the input itself, left out), each
/// reversed so that output n of a phase is a dot product with `x[n..n + taps]`:
/// `taps[k][p]` is tap k of phase p + 1.
fn interpolator<const PHASES: usize>() -> Vec<[f32; PHASES]> {
    const TAPS: usize = 48;
    let factor = PHASES + 1;
    let coeffs: Vec<f32> = (0..TAPS)
        .map(|j| {
            let j = j as f64;
            let window = TAPS as f64;
            let w = 0.5 * (1.0 - (2.0 * std::f64::consts::PI * j / window).cos());
            let m = j - window / 2.0;
            let x = m * std::f64::consts::PI / factor as f64;
            (if m.abs() > 1e-6 { w * x.sin() / x } else { w }) as f32
        })
        .collect();
    let taps = TAPS / factor;
    (0..taps)
        .rev()
        .map(|k| std::array::from_fn(|p| coeffs[k * factor + p + 1]))
        .collect()
}

/// The sample peak of `frames`, and the largest absolute value of `frames` upsampled
/// `PHASES + 1` times or that sample peak, whichever is higher: a block of frames at a time,
/// both channels while it is in cache. Interpolated values that cannot reach the sample
/// peak so far are not computed: that is most of them on loud music, whose sample peak is
/// not far under its true peak.
fn peaks_between<const PHASES: usize>(frames: &[[f32; 2]]) -> (f32, f32) {
    let taps = interpolator::<PHASES>();
    let gain = largest_gain(&taps);
    const BLOCK: usize = 4_096;
    let (mut sample, mut peak) = (0.0f32, 0.0f32);
    // The interpolator starts from silence, as the meter's does; each block carries the
    // previous block's last samples.
    let mut x = [(); 2].map(|_| {
        let mut x = Vec::with_capacity(BLOCK + taps.len());
        x.resize(taps.len() - 1, 0.0);
        x
    });
    for block in frames.chunks(BLOCK) {
        sample = sample.max(sample_peak(block));
        let quiet = quiet_below(gain, sample);
        for (ch, x) in x.iter_mut().enumerate() {
            x.extend(block.iter().map(|f| f[ch]));
            peak = peak.max(peak_of_phases(x, &taps, quiet));
            let keep = x.len() - (taps.len() - 1);
            x.drain(..keep);
        }
    }
    (sample, peak.max(sample))
}

/// The largest of the phases' sums of absolute taps: no output is larger than its largest
/// input times this.
fn largest_gain<const PHASES: usize>(taps: &[[f32; PHASES]]) -> f64 {
    (0..PHASES)
        .map(|p| taps.iter().map(|h| f64::from(h[p].abs())).sum::<f64>())
        .fold(0.0, f64::max)
}

/// The level at or under which every input of a run of outputs must lie for none of those
/// outputs to exceed `floor`: an output is a sum of taps times inputs, so it is at most the
/// largest input times `gain` ([`largest_gain`]). The bound is widened by far more than the
/// rounding of a sum of a few dozen products can add, so a run it passes over could not
/// have raised the peak.
fn quiet_below(gain: f64, floor: f32) -> f32 {
    let quiet = f64::from(floor) / (gain * (1.0 + 1e-4));
    // Rounded to f32 downwards, so the bound still holds.
    let q = quiet as f32;
    if f64::from(q) > quiet {
        q.next_down()
    } else {
        q
    }
}

/// max |Σ taps[k][p]·x[n + k]| over n and p, leaving out runs of [`OUTPUT_RUN`] outputs
/// whose inputs are all at or under `quiet` (at 0, only runs of silence, whose outputs are
/// 0).
fn peak_of_phases<const PHASES: usize>(x: &[f32], taps: &[[f32; PHASES]], quiet: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just been seen to support AVX2.
        return unsafe { peak_of_phases_avx2(x, taps, quiet) };
    }
    peak_of_phases_portable(x, taps, quiet)
}

/// Outputs [`peak_of_phases`] computes at a time, and leaves out at a time.
const OUTPUT_RUN: usize = 16;

/// [`peak_of_phases`] sixteen outputs at a time in AVX2 registers, summing in the same
/// order as the portable loop (so to the same values). Written with intrinsics because the
/// auto-vectorised loop comes out scalar in some builds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn peak_of_phases_avx2<const PHASES: usize>(x: &[f32], taps: &[[f32; PHASES]], quiet: f32) -> f32 {
    use std::arch::x86_64::*;
    const LANES: usize = OUTPUT_RUN;
    let outputs = x.len() + 1 - taps.len();
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let quiet_v = _mm256_set1_ps(quiet);
    // The inputs of a run: eight at a time, the last eight ending on its last input.
    let reach = LANES + taps.len() - 1;
    let mut best = _mm256_setzero_ps();
    let mut n = 0;
    while n + LANES <= outputs {
        let inputs = &x[n..n + reach];
        let mut loud = _mm256_setzero_ps();
        for at in (0..reach - 8).step_by(8).chain([reach - 8]) {
            let xs: &[f32; 8] = inputs[at..at + 8].try_into().unwrap();
            // SAFETY: `xs` holds eight floats.
            let v = unsafe { _mm256_loadu_ps(xs.as_ptr()) };
            loud = _mm256_or_ps(
                loud,
                _mm256_cmp_ps::<_CMP_NLE_UQ>(_mm256_and_ps(v, magnitude), quiet_v),
            );
        }
        if _mm256_movemask_ps(loud) == 0 {
            n += LANES;
            continue;
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; PHASES];
        for (k, h) in taps.iter().enumerate() {
            let xs: &[f32; LANES] = x[n + k..n + k + LANES].try_into().unwrap();
            // SAFETY: `xs` holds sixteen floats: two unaligned loads of eight.
            let (low, high) = unsafe {
                (
                    _mm256_loadu_ps(xs.as_ptr()),
                    _mm256_loadu_ps(xs.as_ptr().add(8)),
                )
            };
            for (acc, &c) in acc.iter_mut().zip(h) {
                let c = _mm256_set1_ps(c);
                acc[0] = _mm256_add_ps(acc[0], _mm256_mul_ps(c, low));
                acc[1] = _mm256_add_ps(acc[1], _mm256_mul_ps(c, high));
            }
        }
        for [low, high] in acc {
            best = _mm256_max_ps(best, _mm256_and_ps(low, magnitude));
            best = _mm256_max_ps(best, _mm256_and_ps(high, magnitude));
        }
        n += LANES;
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), best) };
    let rest = peak_of_phases_portable(&x[n..], taps, quiet);
    lanes.iter().copied().fold(rest, f32::max)
}

#[inline(always)]
fn peak_of_phases_portable<const PHASES: usize>(
    x: &[f32],
    taps: &[[f32; PHASES]],
    quiet: f32,
) -> f32 {
    // Sixteen outputs of every phase at once: enough independent sums that the additions'
    // latency hides behind the loads and multiplications.
    const LANES: usize = OUTPUT_RUN;
    let outputs = x.len() + 1 - taps.len();
    let reach = LANES + taps.len() - 1;
    let mut best = [0.0f32; LANES];
    let mut n = 0;
    while n + LANES <= outputs {
        if x[n..n + reach].iter().all(|s| s.abs() <= quiet) {
            n += LANES;
            continue;
        }
        let mut acc = [[0.0f32; LANES]; PHASES];
        for (k, h) in taps.iter().enumerate() {
            let xs: &[f32; LANES] = x[n + k..n + k + LANES].try_into().unwrap();
            for (acc, &c) in acc.iter_mut().zip(h) {
                for lane in 0..LANES {
                    acc[lane] += c * xs[lane];
                }
            }
        }
        for acc in &acc {
            for lane in 0..LANES {
                let a = acc[lane].abs();
                if a > best[lane] {
                    best[lane] = a;
                }
            }
        }
        n += LANES;
    }
    let mut peak = best.iter().copied().fold(0.0, f32::max);
    for n in n..outputs {
        for p in 0..PHASES {
            let v: f32 = taps.iter().zip(&x[n..]).map(|(h, s)| h[p] * s).sum();
            peak = peak.max(v.abs());
        }
    }
    peak
}

/// The same report as [`measure`], from this module's own K-weighted gating and
/// interpolator: the algorithms of BS.1770-4 and EBU 3342 the `ebur128` crate implements,
/// checked against it in the tests, several times faster. The master uses it to verify each
/// pass; anything that reports loudness to users measures with [`measure`].
pub fn measure_fast(frames: &[[f32; 2]], sample_rate: u32) -> LoudnessReport {
    let sub_len = (sample_rate / 10).max(1) as usize;
    let mut subs = k_energy_sums(frames, sample_rate, sub_len);
    if !frames.len().is_multiple_of(sub_len) {
        subs.pop();
    }
    let (sample_peak, true_peak) = peaks(frames, sample_rate);
    LoudnessReport {
        integrated_lufs: gated_loudness(&subs, sub_len),
        range_lu: loudness_range(&subs, sub_len),
        true_peak_dbtp: to_db(f64::from(true_peak)),
        sample_peak_dbfs: to_db(f64::from(sample_peak)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 kHz stereo sine at `dbfs` peak.
    fn sine(dbfs: f64, seconds: f64, rate: u32) -> Vec<[f32; 2]> {
        let amp = 10f64.powf(dbfs / 20.0);
        (0..(seconds * f64::from(rate)) as usize)
            .map(|n| {
                let s = (amp * (std::f64::consts::TAU * 1000.0 * n as f64 / f64::from(rate)).sin())
                    as f32;
                [s, s]
            })
            .collect()
    }

    #[test]
    fn a_full_scale_1k_sine_in_both_channels_reads_as_r128_says() {
        // EBU Tech 3341: a 0 dBFS 1 kHz sine in one channel reads -3.01 LUFS; in two, 0.
        let report = measure(&sine(-20.0, 5.0, 48_000), 48_000).unwrap();
        assert!((report.integrated_lufs - -20.0).abs() < 0.1, "{report:?}");
        assert!((report.true_peak_dbtp - -20.0).abs() < 0.1, "{report:?}");
        assert!((report.sample_peak_dbfs - -20.0).abs() < 0.05, "{report:?}");
        assert!(report.range_lu < 0.5);
    }

    #[test]
    fn the_k_weighted_gate_matches_the_meter() {
        // A pulsing two-tone signal with quiet stretches, so both gates matter.
        let rate = 44_100u32;
        let audio: Vec<[f32; 2]> = (0..rate as usize * 12)
            .map(|n| {
                let t = n as f32 / rate as f32;
                let level = if (t as u32) % 4 == 3 { 0.02 } else { 0.3 };
                let l = level * (std::f32::consts::TAU * 80.0 * t).sin();
                let r = level * 0.5 * (std::f32::consts::TAU * 5000.0 * t).sin();
                [l, r]
            })
            .collect();
        let sub_len = rate as usize / 10;
        let mut subs = k_energy_sums(&audio, rate, sub_len);
        if !audio.len().is_multiple_of(sub_len) {
            subs.pop();
        }
        let ours = gated_loudness(&subs, sub_len);
        let meter = integrated(&audio, rate).unwrap();
        assert!((ours - meter).abs() < 0.02, "{ours} vs {meter}");
    }

    #[test]
    fn the_fast_report_matches_the_meter() {
        // At the rates the meter upsamples 4× and 2×, and the one it reads as is.
        for rate in [48_000u32, 96_000, 192_000] {
            // Bright, peaky material: a saw-like buzz with clicks, loud and quiet in turn.
            let audio: Vec<[f32; 2]> = (0..rate as usize * 20)
                .map(|n| {
                    let t = n as f32 / rate as f32;
                    let level = if ((t * 0.5) as u32).is_multiple_of(2) {
                        0.5
                    } else {
                        0.1
                    };
                    let buzz = ((t * 997.0).fract() - 0.5) * level;
                    let click = if n % 12_001 == 0 { 0.9 } else { 0.0 };
                    [buzz + click, buzz * 0.7 - click * 0.5]
                })
                .collect();
            let fast = measure_fast(&audio, rate);
            let meter = measure(&audio, rate).unwrap();
            assert!(
                (fast.integrated_lufs - meter.integrated_lufs).abs() < 0.02,
                "{rate} Hz: {fast:?} {meter:?}"
            );
            assert!(
                (fast.true_peak_dbtp - meter.true_peak_dbtp).abs() < 0.01,
                "{rate} Hz: {fast:?} {meter:?}"
            );
            assert!((fast.sample_peak_dbfs - meter.sample_peak_dbfs).abs() < 1e-6);
            assert!(
                (fast.range_lu - meter.range_lu).abs() < 0.3,
                "{rate} Hz: {fast:?} {meter:?}"
            );
        }
    }

    #[test]
    fn side_by_side_k_filtering_sums_what_one_run_through_sums() {
        let rate = 48_000;
        // Music-like: a low note, a bright buzz and a sudden loud stretch, 11.3 s long so
        // neither the stretches nor the last chunk come out even.
        let audio: Vec<[f32; 2]> = (0..(rate as f32 * 11.3) as usize)
            .map(|n| {
                let t = n as f32 / rate as f32;
                let low = 0.4 * (std::f32::consts::TAU * 55.0 * t).sin();
                let buzz = 0.2 * ((t * 997.0).fract() - 0.5);
                let loud = if (6.0..6.5).contains(&t) { 0.5 } else { 0.0 };
                [low + buzz + loud, low - buzz]
            })
            .collect();
        let filter = KFilter::new(rate);
        for chunk in [16, 4_800, 7] {
            let side = k_energy_sums(&audio, rate, chunk);
            let turn = k_energy_in_turn(&filter, &audio, chunk);
            assert_eq!(side.len(), turn.len());
            for (i, (a, b)) in side.iter().zip(&turn).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1e-6),
                    "chunk {chunk}, sum {i}: {a} against {b}"
                );
            }
        }
    }

    #[test]
    fn the_interpolator_reads_the_same_on_every_path() {
        // Noise-like samples, and lengths that leave partial blocks of outputs.
        let mut state = 1u32;
        let x: Vec<f32> = (0..1_000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let four = interpolator::<3>();
        let two = interpolator::<1>();
        for len in [24, 27, 39, 40, 500, 1_000] {
            let x = &x[..len];
            for quiet in [0.0, 0.3, 0.45] {
                assert_eq!(
                    peak_of_phases(x, &four, quiet),
                    peak_of_phases_portable(x, &four, quiet),
                    "{len}, {quiet}"
                );
                assert_eq!(
                    peak_of_phases(x, &two, quiet),
                    peak_of_phases_portable(x, &two, quiet),
                    "{len}, {quiet}"
                );
            }
        }
    }

    #[test]
    fn outputs_passed_over_as_quiet_never_reach_the_floor() {
        let taps = interpolator::<3>();
        // Inputs of one sign pattern, matched to the largest phase's taps: its output at
        // one point is exactly the bound the quiet level is drawn from.
        let phase = (0..3)
            .max_by(|&a, &b| {
                let sum = |p: usize| taps.iter().map(|h| h[p].abs()).sum::<f32>();
                sum(a).total_cmp(&sum(b))
            })
            .unwrap();
        let mut x = vec![0.0f32; 64];
        for (k, h) in taps.iter().enumerate() {
            x[20 + k] = 0.5 * h[phase].signum();
        }
        let whole = peak_of_phases(&x, &taps, 0.0);
        // A floor just under the true peak must not let any output be passed over...
        let floor = whole * 0.9999;
        let quiet = quiet_below(largest_gain(&taps), floor);
        assert!(quiet < 0.5, "{quiet}");
        assert_eq!(peak_of_phases(&x, &taps, quiet).max(floor), whole);
        // ...and one above it gives the floor, every output under it.
        let floor = whole * 1.001;
        assert_eq!(
            peak_of_phases(&x, &taps, quiet_below(largest_gain(&taps), floor)).max(floor),
            floor
        );
        // Through the whole measurement, over several blocks: what it leaves out as quiet
        // changes nothing.
        let frames: Vec<[f32; 2]> = x
            .iter()
            .cycle()
            .take(20_000)
            .enumerate()
            .map(|(i, &s)| {
                let fade = 1.0 - i as f32 / 40_000.0;
                [s * fade, -0.5 * s * fade]
            })
            .collect();
        let every = |ch: usize| {
            let mut padded = vec![0.0; taps.len() - 1];
            padded.extend(frames.iter().map(|f| f[ch]));
            peak_of_phases_portable(&padded, &taps, 0.0)
        };
        let plain = every(0).max(every(1)).max(sample_peak(&frames));
        assert_eq!(true_peak(&frames, 48_000), f64::from(plain));
    }

    #[test]
    fn silence_is_minus_infinity() {
        let report = measure(&vec![[0.0; 2]; 48_000], 48_000).unwrap();
        assert!(report.integrated_lufs.is_infinite() && report.integrated_lufs < 0.0);
        assert!(report.true_peak_dbtp.is_infinite());
    }

    #[test]
    fn integrated_matches_the_full_measurement() {
        let audio = sine(-14.0, 3.0, 44_100);
        let fast = integrated(&audio, 44_100).unwrap();
        let full = measure(&audio, 44_100).unwrap();
        assert!((fast - full.integrated_lufs).abs() < 1e-9);
    }
}
