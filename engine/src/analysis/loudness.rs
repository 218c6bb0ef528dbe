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
