//! Listening to audio: loudness, tempo, key, pitch content, spectral bands and an overall
//! quality assessment.
//!
//! Plain functions over stereo `[f32; 2]` frames; nothing here runs on the JACK thread.

pub mod bands;
pub mod chroma;
pub mod describe;
pub mod key;
pub mod loudness;
pub mod quality;
pub mod tempo;

pub use loudness::{LoudnessError, LoudnessReport};

use realfft::RealFftPlanner;
use realfft::num_complex::Complex;

/// The short-time spectra of the mono sum of `frames`: Hann-windowed frames of `len`
/// samples, `hop` apart, from the start while a whole frame fits. `each` gets every spectrum
/// (`len / 2 + 1` bins) in order.
pub(crate) fn for_each_spectrum(
    frames: &[[f32; 2]],
    len: usize,
    hop: usize,
    mut each: impl FnMut(&[Complex<f32>]),
) {
    if len == 0 || hop == 0 || frames.len() < len {
        return;
    }
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(len);
    let window: Vec<f32> = (0..len)
        .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / len as f32).cos())
        .collect();
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let mut start = 0;
    while start + len <= frames.len() {
        for ((x, f), w) in input
            .iter_mut()
            .zip(&frames[start..start + len])
            .zip(&window)
        {
            *x = (f[0] + f[1]) * 0.5 * w;
        }
        start += hop;
        if fft
            .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
            .is_err()
        {
            return;
        }
        each(&spectrum);
    }
}
