//! Time-stretch and pitch-shift of stereo audio, offline, over Rubber Band (rubberband-sys,
//! which builds Rubber Band 4 in).
//!
//! [`Engine::Finer`] is Rubber Band's R3 engine, for quality; [`Engine::Faster`] its R2
//! engine, several times quicker. Both run in Rubber Band's offline mode: the whole input is
//! studied first, then processed, so the output is exactly `ratio` times the input's length
//! (to the frame) and starts with no latency to trim.

use std::os::raw::c_uint;

use rubberband_sys as rb;

use crate::music::PitchClass;

/// Which Rubber Band engine to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// R3, "finer": the best quality; the default.
    #[default]
    Finer,
    /// R2, "faster": several times quicker, for live use.
    Faster,
}

/// What to do to the audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    /// Output length over input length: 2.0 plays half as fast.
    pub time_ratio: f64,
    /// Transposition in semitones (0: keep the pitch).
    pub semitones: f64,
    pub engine: Engine,
}

impl Stretch {
    /// The stretch that takes audio at `from_bpm` to `to_bpm`, transposed by `semitones`.
    pub fn tempo(from_bpm: f64, to_bpm: f64, semitones: f64) -> Stretch {
        Stretch {
            time_ratio: from_bpm / to_bpm,
            semitones,
            engine: Engine::Finer,
        }
    }
}

/// The semitones that take music in a key on `from` to one on `to` the nearest way: at most
/// six up or down.
pub fn nearest_transposition(from: PitchClass, to: PitchClass) -> i32 {
    let up = (i32::from(to.semitones()) - i32::from(from.semitones())).rem_euclid(12);
    if up > 6 { up - 12 } else { up }
}

/// Why a stretch could not be done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StretchError {
    /// The ratio is outside what makes sense for music.
    #[error("time ratio {0} is out of range: use 1/8 to 8 (a tempo change of at most 8x)")]
    Ratio(f64),
    /// The transposition is more than three octaves either way.
    #[error("{0} semitones is out of range: use -36 to 36")]
    Semitones(f64),
    /// Rubber Band could not be set up.
    #[error("Rubber Band would not start")]
    Start,
}

/// Frames handed to Rubber Band at a time.
const BLOCK: usize = 4096;

/// Stretches and transposes `input` (stereo frames at `sample_rate`); `progress` is called
/// with the fraction done. The output has `round(len × time_ratio)` frames.
pub fn stretch(
    input: &[[f32; 2]],
    sample_rate: u32,
    settings: Stretch,
    mut progress: impl FnMut(f64),
) -> Result<Vec<[f32; 2]>, StretchError> {
    let ratio = settings.time_ratio;
    if !(ratio.is_finite() && (0.125..=8.0).contains(&ratio)) {
        return Err(StretchError::Ratio(ratio));
    }
    if !(settings.semitones.is_finite() && settings.semitones.abs() <= 36.0) {
        return Err(StretchError::Semitones(settings.semitones));
    }
    let wanted = (input.len() as f64 * ratio).round() as usize;
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let engine = match settings.engine {
        Engine::Finer => rb::RubberBandOption_RubberBandOptionEngineFiner,
        Engine::Faster => rb::RubberBandOption_RubberBandOptionEngineFaster,
    };
    let options = rb::RubberBandOption_RubberBandOptionProcessOffline
        | rb::RubberBandOption_RubberBandOptionThreadingNever
        | rb::RubberBandOption_RubberBandOptionPitchHighQuality
        | rb::RubberBandOption_RubberBandOptionChannelsTogether
        | engine;
    let pitch = 2f64.powf(settings.semitones / 12.0);
    let state = Rubber::new(sample_rate, options, ratio, pitch)?;
    state.expect(input.len());

    let mut left = vec![0f32; BLOCK];
    let mut right = vec![0f32; BLOCK];
    let mut output = Vec::with_capacity(wanted + BLOCK);
    let mut out_l = vec![0f32; BLOCK];
    let mut out_r = vec![0f32; BLOCK];
    // Study the whole input, then process it; each pass is half the progress.
    let blocks = input.chunks(BLOCK).count();
    for (pass, half) in [
        (rb::rubberband_study as Pass, 0.0),
        (rb::rubberband_process, 0.5),
    ] {
        for (index, chunk) in input.chunks(BLOCK).enumerate() {
            split(chunk, &mut left, &mut right);
            let last = index + 1 == blocks;
            state.give(pass, &left[..chunk.len()], &right[..chunk.len()], last);
            state.drain(&mut out_l, &mut out_r, &mut output);
            progress(half + 0.5 * (index + 1) as f64 / blocks as f64);
        }
    }
    // The tail: everything Rubber Band still holds once the input is final.
    while state.available() > 0 {
        state.drain(&mut out_l, &mut out_r, &mut output);
    }
    output.resize(wanted, [0.0; 2]);
    Ok(output)
}

fn split(chunk: &[[f32; 2]], left: &mut [f32], right: &mut [f32]) {
    for ((frame, l), r) in chunk.iter().zip(left.iter_mut()).zip(right.iter_mut()) {
        *l = frame[0];
        *r = frame[1];
    }
}

/// One of Rubber Band's two offline passes over the input: study or process.
type Pass = unsafe extern "C" fn(rb::RubberBandState, *const *const f32, c_uint, i32);

/// An owned Rubber Band stretcher for two channels.
struct Rubber(rb::RubberBandState);

impl Rubber {
    fn new(rate: u32, options: c_uint, ratio: f64, pitch: f64) -> Result<Rubber, StretchError> {
        // SAFETY: plain constructor; a null result is an error, checked below.
        let state = unsafe { rb::rubberband_new(rate, 2, options as i32, ratio, pitch) };
        if state.is_null() {
            return Err(StretchError::Start);
        }
        Ok(Rubber(state))
    }

    fn expect(&self, frames: usize) {
        // SAFETY: `self.0` is a live stretcher.
        unsafe {
            rb::rubberband_set_expected_input_duration(self.0, frames as c_uint);
            rb::rubberband_set_max_process_size(self.0, BLOCK as c_uint);
        }
    }

    /// Hands Rubber Band a block of both channels for `pass` (study or process).
    fn give(&self, pass: Pass, left: &[f32], right: &[f32], last: bool) {
        let channels = [left.as_ptr(), right.as_ptr()];
        // SAFETY: `self.0` is a live stretcher; two channel pointers, each valid for
        // `left.len()` samples.
        unsafe { pass(self.0, channels.as_ptr(), left.len() as c_uint, last.into()) };
    }

    fn available(&self) -> usize {
        // SAFETY: `self.0` is a live stretcher.
        let n = unsafe { rb::rubberband_available(self.0) };
        n.max(0) as usize
    }

    /// Moves what Rubber Band has ready onto `output`.
    fn drain(&self, left: &mut [f32], right: &mut [f32], output: &mut Vec<[f32; 2]>) {
        loop {
            let n = self.available().min(left.len());
            if n == 0 {
                return;
            }
            let channels = [left.as_mut_ptr(), right.as_mut_ptr()];
            // SAFETY: two channel pointers, each valid for `n` samples.
            let got = unsafe { rb::rubberband_retrieve(self.0, channels.as_ptr(), n as c_uint) };
            let got = got as usize;
            output.extend(
                left.iter()
                    .zip(right.iter())
                    .take(got)
                    .map(|(l, r)| [*l, *r]),
            );
        }
    }
}

impl Drop for Rubber {
    fn drop(&mut self) {
        // SAFETY: created by rubberband_new and dropped once.
        unsafe { rb::rubberband_delete(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, frames: usize) -> Vec<[f32; 2]> {
        (0..frames)
            .map(|i| {
                let v = 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / 48_000.0).sin();
                [v, v]
            })
            .collect()
    }

    /// Zero crossings per second of the left channel's middle half, halved: the frequency
    /// of a sine.
    fn frequency(audio: &[[f32; 2]]) -> f32 {
        let middle = &audio[audio.len() / 4..audio.len() * 3 / 4];
        let crossings = middle
            .windows(2)
            .filter(|w| (w[0][0] < 0.0) != (w[1][0] < 0.0))
            .count();
        crossings as f32 / 2.0 / (middle.len() as f32 / 48_000.0)
    }

    #[test]
    fn a_stretch_keeps_the_pitch_and_lands_on_the_exact_length() {
        let input = sine(440.0, 48_000);
        for engine in [Engine::Finer, Engine::Faster] {
            let settings = Stretch {
                time_ratio: 120.0 / 128.0,
                semitones: 0.0,
                engine,
            };
            let out = stretch(&input, 48_000, settings, |_| {}).unwrap();
            assert_eq!(out.len(), 45_000, "{engine:?}");
            let f = frequency(&out);
            assert!((f - 440.0).abs() < 4.0, "{engine:?}: {f} Hz");
        }
    }

    #[test]
    fn a_transposition_moves_the_pitch_and_keeps_the_length() {
        let input = sine(440.0, 48_000);
        let settings = Stretch {
            time_ratio: 1.0,
            semitones: 7.0,
            engine: Engine::Finer,
        };
        let out = stretch(&input, 48_000, settings, |_| {}).unwrap();
        assert_eq!(out.len(), 48_000);
        let f = frequency(&out);
        let want = 440.0 * 2f32.powf(7.0 / 12.0);
        assert!((f - want).abs() < 6.0, "{f} Hz, want {want}");
    }

    #[test]
    fn nonsense_is_refused() {
        let input = sine(440.0, 1_000);
        let bad = Stretch {
            time_ratio: 20.0,
            semitones: 0.0,
            engine: Engine::Finer,
        };
        assert_eq!(
            stretch(&input, 48_000, bad, |_| {}),
            Err(StretchError::Ratio(20.0))
        );
        let bad = Stretch {
            time_ratio: 1.0,
            semitones: f64::NAN,
            engine: Engine::Finer,
        };
        assert!(matches!(
            stretch(&input, 48_000, bad, |_| {}),
            Err(StretchError::Semitones(_))
        ));
    }
}
