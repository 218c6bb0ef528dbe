//! Time-stretch and pitch-shift of stereo audio, offline, over Rubber Band (rubberband-sys,
//! which builds Rubber Band 4 in).
//!
//! [`Engine::Finer`] is Rubber Band's R3 engine, for quality; [`Engine::Faster`] its R2
//! engine, several times quicker. Both run in Rubber Band's offline mode: the whole input is
//! studied first, then processed, so the output is exactly `ratio` times the input's length
//! (to the frame) and starts with no latency to trim.
//!
//! Both stretch mid and side rather than left and right, so the stereo image holds. R2
//! plans its stretch (where to keep transients whole) from the study of the two channels'
//! mix and then processes each channel on its own with that plan, so with
//! [`Stretch::parallel`] djinn runs two one-channel R2 stretchers on two threads, each
//! studying the same mix and processing mid or side: the output is bit for bit what one
//! stereo stretcher gives (a test checks), in about half the time. Rubber Band's own
//! threads are left out of the built-in library; R3 analyses the channels together and
//! always runs on one thread.

use std::os::raw::c_uint;

use rubberband_sys as rb;

use crate::music::Key;

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
    /// R2 only: stretch mid and side on two threads (the same output, about twice as
    /// fast). Off for work beside the daemon's audio; R3 ignores it.
    pub parallel: bool,
}

impl Stretch {
    /// The stretch that takes audio at `from_bpm` to `to_bpm`, transposed by `semitones`,
    /// with R3 on the calling thread.
    pub fn tempo(from_bpm: f64, to_bpm: f64, semitones: f64) -> Stretch {
        Stretch {
            time_ratio: from_bpm / to_bpm,
            semitones,
            engine: Engine::Finer,
            parallel: false,
        }
    }

    /// The threads the stretch runs on: two for R2 asked to run in parallel, else one.
    pub fn threads(&self) -> usize {
        if self.parallel && self.engine == Engine::Faster {
            2
        } else {
            1
        }
    }
}

/// The semitones that move music in key `from` onto the notes of key `to` the nearest way,
/// at most six up or down. Keys with the same notes need none: an A minor loop already
/// fits a set in C major, and moving it to C minor would clash with it. Between keys of
/// one scale this is the distance between their tonics.
pub fn nearest_transposition(from: Key, to: Key) -> i32 {
    let (from, to) = (from.relative_major(), to.relative_major());
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
    progress: impl FnMut(f64),
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
    let pitch = 2f64.powf(settings.semitones / 12.0);
    let base = rb::RubberBandOption_RubberBandOptionProcessOffline
        | rb::RubberBandOption_RubberBandOptionThreadingNever
        | rb::RubberBandOption_RubberBandOptionPitchHighQuality;
    let setup = |channels: usize, options: c_uint| {
        let rubber = Rubber::new(sample_rate, channels, options, ratio, pitch)?;
        rubber.expect(input.len());
        Ok(rubber)
    };
    let mut output = match settings.engine {
        Engine::Faster if settings.threads() == 2 => {
            let options = base | rb::RubberBandOption_RubberBandOptionEngineFaster;
            let mid = setup(1, options)?;
            let side = setup(1, options)?;
            // R2's own mid/side, channel by channel: (l ± r) / 2, each studied on the mix
            // of both channels, which is the mid.
            let mid_of: View<1> = |[l, r]| [(l + r) / 2.0];
            let side_of: View<1> = |[l, r]| [(l - r) / 2.0];
            let (mid, side) = std::thread::scope(|scope| {
                let side = scope.spawn(move || side.run(input, wanted, mid_of, side_of, |_| {}));
                let mid = mid.run(input, wanted, mid_of, mid_of, progress);
                (
                    mid,
                    side.join().expect("the side channel's stretch panicked"),
                )
            });
            mid.iter()
                .zip(&side)
                .map(|([m], [s])| [m + s, m - s])
                .collect()
        }
        engine => {
            let engine = match engine {
                Engine::Finer => rb::RubberBandOption_RubberBandOptionEngineFiner,
                Engine::Faster => rb::RubberBandOption_RubberBandOptionEngineFaster,
            };
            let options = base | rb::RubberBandOption_RubberBandOptionChannelsTogether | engine;
            setup(2, options)?.run(input, wanted, |frame| frame, |frame| frame, progress)
        }
    };
    output.resize(wanted, [0.0; 2]);
    Ok(output)
}

/// One of Rubber Band's two offline passes over the input: study or process.
type Pass = unsafe extern "C" fn(rb::RubberBandState, *const *const f32, c_uint, i32);

/// What a stretcher's channels are made of, from a stereo frame.
type View<const N: usize> = fn([f32; 2]) -> [f32; N];

/// An owned Rubber Band stretcher.
struct Rubber {
    state: rb::RubberBandState,
    channels: usize,
}

// SAFETY: a stretcher made with ThreadingNever keeps no thread of its own and no reference
// to any other; it is used by one thread at a time.
unsafe impl Send for Rubber {}

impl Rubber {
    fn new(
        rate: u32,
        channels: usize,
        options: c_uint,
        ratio: f64,
        pitch: f64,
    ) -> Result<Rubber, StretchError> {
        // SAFETY: plain constructor; a null result is an error, checked below.
        let state =
            unsafe { rb::rubberband_new(rate, channels as c_uint, options as i32, ratio, pitch) };
        if state.is_null() {
            return Err(StretchError::Start);
        }
        Ok(Rubber { state, channels })
    }

    fn expect(&self, frames: usize) {
        // SAFETY: `self.state` is a live stretcher.
        unsafe {
            rb::rubberband_set_expected_input_duration(self.state, frames as c_uint);
            rb::rubberband_set_max_process_size(self.state, BLOCK as c_uint);
        }
    }

    /// Studies `input` seen through `study`, then processes it seen through `process` (each
    /// gives this stretcher's `N` channels of a stereo frame), and returns what comes out:
    /// at least `wanted` frames, or all there is. `progress` gets the fraction done, half
    /// for each pass.
    fn run<const N: usize>(
        &self,
        input: &[[f32; 2]],
        wanted: usize,
        study: View<N>,
        process: View<N>,
        mut progress: impl FnMut(f64),
    ) -> Vec<[f32; N]> {
        assert_eq!(N, self.channels);
        let mut planar: [Vec<f32>; N] = std::array::from_fn(|_| vec![0f32; BLOCK]);
        let mut retrieved: [Vec<f32>; N] = std::array::from_fn(|_| vec![0f32; BLOCK]);
        let mut output = Vec::with_capacity(wanted + BLOCK);
        let blocks = input.chunks(BLOCK).count();
        let passes: [(Pass, View<N>, f64); 2] = [
            (rb::rubberband_study, study, 0.0),
            (rb::rubberband_process, process, 0.5),
        ];
        for (pass, view, half) in passes {
            for (index, chunk) in input.chunks(BLOCK).enumerate() {
                for (i, &frame) in chunk.iter().enumerate() {
                    for (channel, sample) in planar.iter_mut().zip(view(frame)) {
                        channel[i] = sample;
                    }
                }
                let last = index + 1 == blocks;
                self.give(pass, &planar, chunk.len(), last);
                self.drain(&mut retrieved, &mut output);
                progress(half + 0.5 * (index + 1) as f64 / blocks as f64);
            }
        }
        // The tail: everything Rubber Band still holds once the input is final.
        while self.available() > 0 {
            self.drain(&mut retrieved, &mut output);
        }
        output
    }

    /// Hands Rubber Band the first `len` samples of each channel for `pass`.
    fn give<const N: usize>(&self, pass: Pass, planar: &[Vec<f32>; N], len: usize, last: bool) {
        let channels: [*const f32; N] = std::array::from_fn(|c| planar[c][..len].as_ptr());
        // SAFETY: `self.state` is a live stretcher of N channels; each pointer is valid for
        // `len` samples.
        unsafe { pass(self.state, channels.as_ptr(), len as c_uint, last.into()) };
    }

    fn available(&self) -> usize {
        // SAFETY: `self.state` is a live stretcher.
        let n = unsafe { rb::rubberband_available(self.state) };
        n.max(0) as usize
    }

    /// Moves what Rubber Band has ready onto `output`.
    fn drain<const N: usize>(&self, planar: &mut [Vec<f32>; N], output: &mut Vec<[f32; N]>) {
        loop {
            let n = self.available().min(BLOCK);
            if n == 0 {
                return;
            }
            let channels: [*mut f32; N] = std::array::from_fn(|c| planar[c].as_mut_ptr());
            // SAFETY: N channel pointers, each valid for BLOCK ≥ `n` samples.
            let got =
                unsafe { rb::rubberband_retrieve(self.state, channels.as_ptr(), n as c_uint) };
            output.extend((0..got as usize).map(|i| std::array::from_fn(|c| planar[c][i])));
        }
    }
}

impl Drop for Rubber {
    fn drop(&mut self) {
        // SAFETY: created by rubberband_new and dropped once.
        unsafe { rb::rubberband_delete(self.state) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposition_lands_on_the_keys_notes_the_short_way() {
        let t = |from: &str, to: &str| {
            nearest_transposition(from.parse().unwrap(), to.parse().unwrap())
        };
        assert_eq!(t("C major", "D major"), 2);
        assert_eq!(t("C major", "A major"), -3);
        assert_eq!(t("F# minor", "C minor"), 6);
        assert_eq!(t("A minor", "E minor"), -5);
        // Keys that share their notes need nothing; others move onto the target's notes.
        assert_eq!(t("A minor", "C major"), 0);
        assert_eq!(t("Eb major", "C minor"), 0);
        assert_eq!(t("E dorian", "D major"), 0);
        assert_eq!(t("A minor", "D major"), 2);
        assert_eq!(t("C major", "C minor"), 3);
    }

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
                parallel: false,
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
            parallel: false,
        };
        let out = stretch(&input, 48_000, settings, |_| {}).unwrap();
        assert_eq!(out.len(), 48_000);
        let f = frequency(&out);
        let want = 440.0 * 2f32.powf(7.0 / 12.0);
        assert!((f - want).abs() < 6.0, "{f} Hz, want {want}");
    }

    /// A stereo test signal whose sides differ: a chord in the middle, clicks on the left
    /// and a higher tone on the right only.
    fn wide(frames: usize) -> Vec<[f32; 2]> {
        (0..frames)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let tau = 2.0 * std::f32::consts::PI;
                let chord = 0.2 * ((tau * 220.0 * t).sin() + (tau * 277.2 * t).sin());
                let click = if i % 12_000 < 60 { 0.6 } else { 0.0 };
                let tone = 0.15 * (tau * 1_320.0 * t).sin();
                [chord + click, chord + tone]
            })
            .collect()
    }

    #[test]
    fn r2_on_two_threads_gives_the_same_output_as_on_one() {
        let input = wide(96_000);
        for semitones in [0.0, 3.0] {
            let one = Stretch {
                time_ratio: 120.0 / 128.0,
                semitones,
                engine: Engine::Faster,
                parallel: false,
            };
            let two = Stretch {
                parallel: true,
                ..one
            };
            let a = stretch(&input, 48_000, one, |_| {}).unwrap();
            let b = stretch(&input, 48_000, two, |_| {}).unwrap();
            assert_eq!(a.len(), 90_000);
            assert!(a.iter().any(|f| f[0] != f[1]), "the sides should differ");
            let worst = a
                .iter()
                .zip(&b)
                .flat_map(|(x, y)| [(x[0] - y[0]).abs(), (x[1] - y[1]).abs()])
                .fold(0f32, f32::max);
            assert_eq!(worst, 0.0, "{semitones} semitones");
        }
    }

    #[test]
    fn nonsense_is_refused() {
        let input = sine(440.0, 1_000);
        let bad = Stretch {
            time_ratio: 20.0,
            semitones: 0.0,
            engine: Engine::Finer,
            parallel: false,
        };
        assert_eq!(
            stretch(&input, 48_000, bad, |_| {}),
            Err(StretchError::Ratio(20.0))
        );
        let bad = Stretch {
            time_ratio: 1.0,
            semitones: f64::NAN,
            engine: Engine::Finer,
            parallel: false,
        };
        assert!(matches!(
            stretch(&input, 48_000, bad, |_| {}),
            Err(StretchError::Semitones(_))
        ));
    }
}
