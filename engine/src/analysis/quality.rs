//! Quality assessment: is this audio ready to go out? Loudness against the target, true
//! peak against the ceiling, clipping, DC offset, silence and phase, folded into four
//! scores whose formulas are documented on [`Assessment`].

use serde::Serialize;

use super::loudness::{self, LoudnessError, LoudnessReport};

/// What the audio is judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub lufs: f64,
    pub ceiling_dbtp: f64,
}

/// A fault that makes audio unfit to ship.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// `true_peak`, `clipping`, `dc_offset`, `silence`, `phase` or `loudness`.
    pub kind: &'static str,
    pub message: String,
}

/// Measurements behind the scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// Samples at or above 0.999 full scale in runs of three or more, as a fraction.
    pub clipped_fraction: f64,
    /// Mean sample value of the worse channel.
    pub dc_offset: f64,
    /// Fraction of 100 ms windows below -60 dBFS RMS.
    pub silence_fraction: f64,
    /// Correlation of left and right, -1 (inverted) to 1 (mono).
    pub stereo_correlation: f64,
    /// Peak to RMS, dB.
    pub crest_db: f64,
    /// Standard deviation of the short-term (3 s) loudness over non-silent windows, LU.
    pub short_term_spread_lu: f64,
    pub seconds: f64,
}

/// The verdict on a piece of audio. Every score is in [0, 1]:
///
/// - `mix_readiness = 0.5·L + 0.3·P + 0.2·S` where L = max(0, 1 − |integrated − target| / 6),
///   P = 1 at or under the ceiling, else max(0, 1 − (true peak − ceiling) / 3), and
///   S = clamp((correlation + 0.5) / 0.8, 0, 1).
/// - `perceptual_quality = 0.4·(1 − min(1, 1000·clipped fraction)) + 0.3·max(0, 1 − |DC| / 0.02)
///   + 0.3·D`, D = clamp((crest − 3) / 5, 0, 1): squashed audio with under 8 dB crest loses it.
/// - `stability = (1 − min(1, short-term spread / 6 LU)) · (1 − silence fraction)`.
/// - `overall_score = 0.4·mix_readiness + 0.35·perceptual_quality + 0.25·stability`, times
///   0.6 when there is any violation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    pub overall_score: f64,
    pub mix_readiness: f64,
    pub perceptual_quality: f64,
    pub stability: f64,
    pub loudness: LoudnessReport,
    pub metrics: Metrics,
    pub violations: Vec<Violation>,
    pub warnings: Vec<String>,
}

/// Assesses stereo `frames` at `sample_rate` against `target`.
pub fn assess(
    frames: &[[f32; 2]],
    sample_rate: u32,
    target: Target,
) -> Result<Assessment, LoudnessError> {
    let loudness = loudness::measure(frames, sample_rate)?;
    let metrics = metrics(frames, sample_rate)?;
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    let mut violate = |kind, message: String| violations.push(Violation { kind, message });

    let silent = !loudness.integrated_lufs.is_finite() || loudness.integrated_lufs < -70.0;
    if silent || metrics.silence_fraction > 0.5 {
        violate(
            "silence",
            format!(
                "{:.0} % of the audio is silent (below -60 dBFS)",
                metrics.silence_fraction * 100.0
            ),
        );
    } else if metrics.silence_fraction > 0.1 {
        warnings.push(format!(
            "{:.0} % of the audio is silent",
            metrics.silence_fraction * 100.0
        ));
    }
    if loudness.true_peak_dbtp > target.ceiling_dbtp + 0.1 {
        violate(
            "true_peak",
            format!(
                "true peak {:.2} dBTP is over the {:.1} dBTP ceiling",
                loudness.true_peak_dbtp, target.ceiling_dbtp
            ),
        );
    }
    if metrics.clipped_fraction > 1e-5 {
        violate(
            "clipping",
            format!(
                "{:.3} % of samples are clipped at full scale",
                metrics.clipped_fraction * 100.0
            ),
        );
    }
    if metrics.dc_offset.abs() > 0.01 {
        violate(
            "dc_offset",
            format!("DC offset of {:.4} (over 0.01)", metrics.dc_offset),
        );
    } else if metrics.dc_offset.abs() > 0.002 {
        warnings.push(format!("small DC offset of {:.4}", metrics.dc_offset));
    }
    if !silent && metrics.stereo_correlation < -0.3 {
        violate(
            "phase",
            format!(
                "left and right cancel (correlation {:.2}): the mono fold-down loses the music",
                metrics.stereo_correlation
            ),
        );
    } else if !silent && metrics.stereo_correlation < 0.0 {
        warnings.push(format!(
            "wide, partly out-of-phase stereo (correlation {:.2})",
            metrics.stereo_correlation
        ));
    }
    if !silent && (loudness.integrated_lufs - target.lufs).abs() > 1.0 {
        violate(
            "loudness",
            format!(
                "integrated loudness {:.1} LUFS is off the {:.1} LUFS target by {:+.1} LU",
                loudness.integrated_lufs,
                target.lufs,
                loudness.integrated_lufs - target.lufs
            ),
        );
    }
    if metrics.seconds < 3.0 {
        warnings.push(format!(
            "only {:.1} s long: loudness needs 3 s or more to be reliable",
            metrics.seconds
        ));
    }
    if !silent && metrics.crest_db < 6.0 {
        warnings.push(format!(
            "crest factor {:.1} dB: heavily compressed",
            metrics.crest_db
        ));
    }
    if loudness.range_lu > 15.0 {
        warnings.push(format!(
            "loudness range {:.1} LU is wide for playback in a mix",
            loudness.range_lu
        ));
    }

    let l = if silent {
        0.0
    } else {
        (1.0 - (loudness.integrated_lufs - target.lufs).abs() / 6.0).max(0.0)
    };
    let p = if loudness.true_peak_dbtp <= target.ceiling_dbtp {
        1.0
    } else {
        (1.0 - (loudness.true_peak_dbtp - target.ceiling_dbtp) / 3.0).max(0.0)
    };
    let s = ((metrics.stereo_correlation + 0.5) / 0.8).clamp(0.0, 1.0);
    let mix_readiness = 0.5 * l + 0.3 * p + 0.2 * s;
    let d = ((metrics.crest_db - 3.0) / 5.0).clamp(0.0, 1.0);
    let perceptual_quality = 0.4 * (1.0 - (1000.0 * metrics.clipped_fraction).min(1.0))
        + 0.3 * (1.0 - metrics.dc_offset.abs() / 0.02).max(0.0)
        + 0.3 * d;
    let stability =
        (1.0 - (metrics.short_term_spread_lu / 6.0).min(1.0)) * (1.0 - metrics.silence_fraction);
    let mut overall = 0.4 * mix_readiness + 0.35 * perceptual_quality + 0.25 * stability;
    if !violations.is_empty() {
        overall *= 0.6;
    }
    Ok(Assessment {
        overall_score: overall.clamp(0.0, 1.0),
        mix_readiness: mix_readiness.clamp(0.0, 1.0),
        perceptual_quality: perceptual_quality.clamp(0.0, 1.0),
        stability: stability.clamp(0.0, 1.0),
        loudness,
        metrics,
        violations,
        warnings,
    })
}

fn metrics(frames: &[[f32; 2]], sample_rate: u32) -> Result<Metrics, LoudnessError> {
    let n = frames.len().max(1) as f64;
    let mut sum = [0.0f64; 2];
    let mut lr = 0.0f64;
    let mut energy = [0.0f64; 2];
    let mut peak = 0.0f32;
    let mut clipped = 0usize;
    let mut run = [0usize; 2];
    for f in frames {
        for ch in 0..2 {
            let x = f[ch];
            sum[ch] += f64::from(x);
            energy[ch] += f64::from(x) * f64::from(x);
            peak = peak.max(x.abs());
            if x.abs() >= 0.999 {
                run[ch] += 1;
                // Count a run once it is three long, then every sample after.
                clipped += match run[ch] {
                    3 => 3,
                    r if r > 3 => 1,
                    _ => 0,
                };
            } else {
                run[ch] = 0;
            }
        }
        lr += f64::from(f[0]) * f64::from(f[1]);
    }
    let dc = [sum[0] / n, sum[1] / n];
    let dc_offset = if dc[0].abs() > dc[1].abs() {
        dc[0]
    } else {
        dc[1]
    };
    let correlation = if energy[0] > 0.0 && energy[1] > 0.0 {
        lr / (energy[0] * energy[1]).sqrt()
    } else {
        1.0
    };
    let rms = ((energy[0] + energy[1]) / (2.0 * n)).sqrt();
    let crest_db = if rms > 0.0 {
        20.0 * (f64::from(peak) / rms).log10()
    } else {
        0.0
    };
    let window = (sample_rate / 10).max(1) as usize;
    let windows: Vec<f64> = frames
        .chunks(window)
        .map(|w| {
            let e: f64 = w
                .iter()
                .map(|f| f64::from(f[0]).powi(2) + f64::from(f[1]).powi(2))
                .sum();
            (e / (2.0 * w.len() as f64)).sqrt()
        })
        .collect();
    let silence_fraction = if windows.is_empty() {
        1.0
    } else {
        windows.iter().filter(|&&r| r < 1e-3).count() as f64 / windows.len() as f64
    };
    Ok(Metrics {
        clipped_fraction: clipped as f64 / (2.0 * n),
        dc_offset,
        silence_fraction,
        stereo_correlation: correlation,
        crest_db,
        short_term_spread_lu: short_term_spread(frames, sample_rate)?,
        seconds: frames.len() as f64 / f64::from(sample_rate),
    })
}

/// Standard deviation of the 3 s loudness, read every second, over windows above -70 LUFS.
fn short_term_spread(frames: &[[f32; 2]], sample_rate: u32) -> Result<f64, LoudnessError> {
    let mut meter = ebur128::EbuR128::new(2, sample_rate, ebur128::Mode::S)
        .map_err(|_| LoudnessError::Rate(sample_rate))?;
    let mut values = Vec::new();
    let second = sample_rate as usize;
    for (i, chunk) in frames.chunks(second).enumerate() {
        meter.add_frames_f32(chunk.as_flattened())?;
        if i >= 2 {
            let v = meter.loudness_shortterm()?;
            if v.is_finite() && v > -70.0 {
                values.push(v);
            }
        }
    }
    if values.len() < 2 {
        return Ok(0.0);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    Ok(var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;
    const TARGET: Target = Target {
        lufs: -14.0,
        ceiling_dbtp: -1.0,
    };

    /// Ten seconds of two detuned tones with a slow pulse, at about -14 LUFS.
    fn music() -> Vec<[f32; 2]> {
        (0..RATE * 10)
            .map(|n| {
                let t = n as f32 / RATE as f32;
                let pulse = 0.6 + 0.4 * (std::f32::consts::TAU * 2.0 * t).sin().max(0.0);
                let l = 0.2 * pulse * (std::f32::consts::TAU * 220.0 * t).sin();
                let r = 0.2 * pulse * (std::f32::consts::TAU * 221.0 * t).sin();
                [l, r]
            })
            .collect()
    }

    fn kinds(a: &Assessment) -> Vec<&'static str> {
        a.violations.iter().map(|v| v.kind).collect()
    }

    fn on_target(mut audio: Vec<[f32; 2]>) -> Vec<[f32; 2]> {
        let now = loudness::integrated(&audio, RATE).unwrap();
        let g = 10f32.powf(((TARGET.lufs - now) / 20.0) as f32);
        audio.iter_mut().for_each(|f| *f = [f[0] * g, f[1] * g]);
        audio
    }

    #[test]
    fn clean_audio_passes() {
        let a = assess(&on_target(music()), RATE, TARGET).unwrap();
        assert!(a.violations.is_empty(), "{:?}", a.violations);
        assert!(a.overall_score > 0.8, "{a:?}");
    }

    #[test]
    fn planted_faults_are_flagged() {
        let clipped: Vec<[f32; 2]> = music()
            .iter()
            .map(|f| [(f[0] * 8.0).clamp(-1.0, 1.0), (f[1] * 8.0).clamp(-1.0, 1.0)])
            .collect();
        assert!(kinds(&assess(&clipped, RATE, TARGET).unwrap()).contains(&"clipping"));

        let dc: Vec<[f32; 2]> = on_target(music())
            .iter()
            .map(|f| [f[0] + 0.05, f[1] + 0.05])
            .collect();
        assert!(kinds(&assess(&dc, RATE, TARGET).unwrap()).contains(&"dc_offset"));

        let silent = vec![[0.0f32; 2]; RATE as usize * 10];
        assert!(kinds(&assess(&silent, RATE, TARGET).unwrap()).contains(&"silence"));

        let inverted: Vec<[f32; 2]> = on_target(music()).iter().map(|f| [f[0], -f[0]]).collect();
        assert!(kinds(&assess(&inverted, RATE, TARGET).unwrap()).contains(&"phase"));

        let quiet: Vec<[f32; 2]> = on_target(music())
            .iter()
            .map(|f| [f[0] * 0.25, f[1] * 0.25])
            .collect();
        assert!(kinds(&assess(&quiet, RATE, TARGET).unwrap()).contains(&"loudness"));
    }
}
