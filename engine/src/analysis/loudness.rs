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
pub fn k_energy_sums(frames: &[[f32; 2]], sample_rate: u32, chunk: usize) -> Vec<f64> {
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(frames.len() / chunk + 1);
    let (mut acc, mut count) = (0.0f64, 0usize);
    k_weigh(frames, sample_rate, |e| {
        acc += e;
        count += 1;
        if count == chunk {
            out.push(acc);
            (acc, count) = (0.0, 0);
        }
    });
    if count > 0 {
        out.push(acc);
    }
    out
}

/// Runs the K filter over `frames`, handing each frame's energy to `sink`.
fn k_weigh(frames: &[[f32; 2]], sample_rate: u32, mut sink: impl FnMut(f64)) {
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
    let pass_b = [1.0, -2.0, 1.0];
    let pass_a = [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0];
    // Two biquads per channel, transposed direct form II.
    let mut state = [[0.0f64; 4]; 2];
    for f in frames {
        {
            let mut e = 0.0;
            for (ch, z) in state.iter_mut().enumerate() {
                let x = f64::from(f[ch]);
                let y = shelf_b[0] * x + z[0];
                z[0] = shelf_b[1] * x - shelf_a[0] * y + z[1];
                z[1] = shelf_b[2] * x - shelf_a[1] * y;
                let w = pass_b[0] * y + z[2];
                z[2] = pass_b[1] * y - pass_a[0] * w + z[3];
                z[3] = pass_b[2] * y - pass_a[1] * w;
                e += w * w;
            }
            sink(e);
        }
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
/// channel as plain convolutions, which vectorise.
pub fn true_peak(frames: &[[f32; 2]], sample_rate: u32) -> f64 {
    const TAPS: usize = 48;
    let factor = if sample_rate < 96_000 {
        4
    } else if sample_rate < 192_000 {
        2
    } else {
        1
    };
    let mut peak = 0.0f32;
    for f in frames {
        peak = peak.max(f[0].abs()).max(f[1].abs());
    }
    if factor == 1 || frames.is_empty() {
        return f64::from(peak);
    }
    let taps = TAPS / factor;
    // coefficient of tap k for phase p is coeffs[k * factor + p].
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
    // Reversed so that output n is a dot product with x[n..n + taps]. Phase 0 of this
    // windowed sinc is the input itself, delayed: the sample peak, already counted.
    let filters: Vec<Vec<f32>> = (1..factor)
        .map(|p| (0..taps).rev().map(|k| coeffs[k * factor + p]).collect())
        .collect();
    const BLOCK: usize = 16_384;
    let mut x = Vec::with_capacity(BLOCK + taps);
    for ch in 0..2 {
        // The interpolator starts from silence, as the meter's does; each block carries the
        // previous block's last samples.
        x.clear();
        x.resize(taps - 1, 0.0);
        for block in frames.chunks(BLOCK) {
            x.extend(block.iter().map(|f| f[ch]));
            for h in &filters {
                peak = peak.max(peak_of_convolution(&x, h));
            }
            let keep = x.len() - (taps - 1);
            x.drain(..keep);
        }
    }
    f64::from(peak)
}

/// max |Σ h[k]·x[n + k]| over n.
fn peak_of_convolution(x: &[f32], h: &[f32]) -> f32 {
    const LANES: usize = 8;
    let outputs = x.len() + 1 - h.len();
    let mut best = [0.0f32; LANES];
    let mut n = 0;
    while n + LANES <= outputs {
        let mut acc = [0.0f32; LANES];
        for (k, &c) in h.iter().enumerate() {
            let xs = &x[n + k..n + k + LANES];
            for lane in 0..LANES {
                acc[lane] += c * xs[lane];
            }
        }
        for lane in 0..LANES {
            let a = acc[lane].abs();
            if a > best[lane] {
                best[lane] = a;
            }
        }
        n += LANES;
    }
    let mut peak = best.iter().copied().fold(0.0, f32::max);
    for n in n..outputs {
        let v: f32 = h.iter().zip(&x[n..]).map(|(c, s)| c * s).sum();
        peak = peak.max(v.abs());
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
    let mut sample_peak = 0.0f32;
    for f in frames {
        sample_peak = sample_peak.max(f[0].abs()).max(f[1].abs());
    }
    LoudnessReport {
        integrated_lufs: gated_loudness(&subs, sub_len),
        range_lu: loudness_range(&subs, sub_len),
        true_peak_dbtp: to_db(true_peak(frames, sample_rate)),
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
        // Bright, peaky material: a saw-like buzz with clicks, loud and quiet in turn.
        let rate = 48_000u32;
        let audio: Vec<[f32; 2]> = (0..rate as usize * 20)
            .map(|n| {
                let t = n as f32 / rate as f32;
                let level = if ((t * 0.5) as u32).is_multiple_of(2) {
                    0.5
                } else {
                    0.1
                };
                let buzz = ((t * 997.0).fract() - 0.5) * level;
                let click = if n % 12_000 == 0 { 0.9 } else { 0.0 };
                [buzz + click, buzz * 0.7 - click * 0.5]
            })
            .collect();
        let fast = measure_fast(&audio, rate);
        let meter = measure(&audio, rate).unwrap();
        assert!(
            (fast.integrated_lufs - meter.integrated_lufs).abs() < 0.02,
            "{fast:?} {meter:?}"
        );
        assert!(
            (fast.true_peak_dbtp - meter.true_peak_dbtp).abs() < 0.01,
            "{fast:?} {meter:?}"
        );
        assert!((fast.sample_peak_dbfs - meter.sample_peak_dbfs).abs() < 1e-6);
        assert!(
            (fast.range_lu - meter.range_lu).abs() < 0.3,
            "{fast:?} {meter:?}"
        );
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
