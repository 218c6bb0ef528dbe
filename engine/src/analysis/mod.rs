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

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// Defines `$name`, which runs the `#[inline(always)]` function `$portable` compiled for
/// AVX2 where the CPU has it (twice the lanes of the baseline x86-64 build for its loops),
/// and as it is otherwise.
macro_rules! widened {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $portable:ident) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has just been seen to support AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}
pub(crate) use widened;

/// The mono sum of `frames`, handed to `each` a block at a time: what a reader that takes
/// its signal in pieces is fed from stereo frames, with no full-length copy.
pub(crate) fn for_each_mono_block(frames: &[[f32; 2]], mut each: impl FnMut(&[f32])) {
    let mut block = Vec::with_capacity(4096);
    for chunk in frames.chunks(4096) {
        block.clear();
        block.extend(chunk.iter().map(|f| 0.5 * (f[0] + f[1])));
        each(&block);
    }
}

/// The mono sum of `frames`.
pub fn mono(frames: &[[f32; 2]]) -> Vec<f32> {
    frames.iter().map(|f| 0.5 * (f[0] + f[1])).collect()
}

/// A signal brought down to a lower rate as it arrives, by as many [`halve`] stages as keep
/// the rate at or above a floor: what a file is decoded into when only its analysis needs
/// it, so that the full-rate signal is never held whole.
pub struct Downsampler {
    stages: Vec<Halving>,
    rate: u32,
    /// Each stage's new output, on its way to the next.
    between: Vec<f32>,
}

impl Downsampler {
    /// Halves `sample_rate` for as long as half of it is still at least `min_rate`.
    pub fn new(sample_rate: u32, min_rate: u32) -> Self {
        let (mut stages, mut rate) = (Vec::new(), sample_rate);
        while rate / 2 >= min_rate.max(1) {
            stages.push(Halving::default());
            rate /= 2;
        }
        Self {
            stages,
            rate,
            between: Vec::new(),
        }
    }

    /// The rate it brings the signal down to.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Takes the next samples.
    pub fn push(&mut self, samples: &[f32]) {
        let Some((first, rest)) = self.stages.split_first_mut() else {
            self.between.extend_from_slice(samples);
            return;
        };
        first.push(samples);
        let mut upstream = first;
        for stage in rest {
            self.between.clear();
            self.between.append(&mut upstream.out);
            stage.push(&self.between);
            upstream = stage;
        }
    }

    /// Takes the next samples and hands `each` what they bring at the lower rate: the
    /// samples themselves when there is nothing to bring down.
    pub fn push_through(&mut self, samples: &[f32], each: impl FnOnce(&[f32])) {
        if self.stages.is_empty() {
            each(samples);
        } else {
            self.push(samples);
            each(&self.take());
        }
    }

    /// Hands `each` the rest of the signal at the lower rate (see [`Self::finish`]), if any.
    pub fn finish_through(self, each: impl FnOnce(&[f32])) {
        let rest = self.finish();
        if !rest.is_empty() {
            each(&rest);
        }
    }

    /// The output made so far and not yet taken.
    pub fn take(&mut self) -> Vec<f32> {
        match self.stages.last_mut() {
            Some(last) => std::mem::take(&mut last.out),
            None => std::mem::take(&mut self.between),
        }
    }

    /// The rest of the signal at the lower rate (all of it, if none was taken), its end
    /// mirrored as [`halve`]'s is.
    pub fn finish(mut self) -> Vec<f32> {
        if self.stages.is_empty() {
            return self.between;
        }
        let mut carried = self.stages.remove(0).finish();
        for mut stage in self.stages {
            stage.push(&carried);
            carried = stage.finish();
        }
        carried
    }
}

/// One streaming [`halve`]: the samples not yet used, and the output so far.
#[derive(Default)]
struct Halving {
    /// Once started, the input from x[2·made - PAD] on (before the first output,
    /// x[-PAD..0] mirrored in front); before that, the input as it came.
    pending: Vec<f32>,
    /// Input samples taken.
    seen: usize,
    /// Output samples made.
    made: usize,
    started: bool,
    out: Vec<f32>,
}

/// Input samples mirrored in front of a halving's first and after its last sample: as far
/// as its filter reaches, and even, so that a sample keeps its parity.
const PAD: usize = 2 * HALF_BAND.len();

impl Halving {
    fn push(&mut self, samples: &[f32]) {
        self.pending.extend_from_slice(samples);
        self.seen += samples.len();
        if !self.started {
            if self.pending.len() < 2 * PAD {
                return;
            }
            // x[-k] = x[k]: PAD samples mirrored in front.
            let head: Vec<f32> = (1..=PAD).rev().map(|k| self.pending[k]).collect();
            self.pending.splice(0..0, head);
            self.started = true;
        }
        self.emit();
    }

    /// Makes every output whose inputs have all arrived, and drops the inputs no later
    /// output needs.
    fn emit(&mut self) {
        // Output m needs x[2m - PAD + 1 ..= 2m + PAD - 1], and pending starts at
        // x[2·made - PAD]: the next `count` outputs need 2·count + 2·PAD - 2 samples.
        let count = (self.pending.len() + 2).saturating_sub(2 * PAD) / 2;
        if count == 0 {
            return;
        }
        halve_into(&self.pending, count, &mut self.out);
        self.made += count;
        self.pending.drain(..2 * count);
    }

    fn finish(mut self) -> Vec<f32> {
        let n = self.seen;
        if !self.started {
            // Too short to stream: mirrored on both ends at once.
            return halve_short(&self.pending);
        }
        // x[last + k] = x[last - k]: PAD samples mirrored after the end.
        let (last, from) = (n - 1, 2 * self.made - PAD);
        let tail: Vec<f32> = (1..=PAD).map(|k| self.pending[last - k - from]).collect();
        self.pending.extend(tail);
        self.emit();
        // The mirrored tail can complete one output past the last.
        let extra = self.made.saturating_sub(n.div_ceil(2));
        self.out.truncate(self.out.len().saturating_sub(extra));
        self.out
    }
}

/// [`halve`] of a signal shorter than a streaming halving starts on, sample by sample.
fn halve_short(x: &[f32]) -> Vec<f32> {
    (0..x.len().div_ceil(2))
        .map(|m| mirrored_output(x, m))
        .collect()
}

/// Output `m` of [`halve`] of `x`, the ends of `x` mirrored.
fn mirrored_output(x: &[f32], m: usize) -> f32 {
    let last = x.len() as isize - 1;
    let at = |i: isize| {
        let i = if i < 0 {
            -i
        } else if i > last {
            2 * last - i
        } else {
            i
        };
        x[i.clamp(0, last) as usize]
    };
    let c = 2 * m as isize;
    0.5 * x[2 * m]
        + HALF_BAND
            .iter()
            .enumerate()
            .map(|(t, h)| h * (at(c - 2 * t as isize - 1) + at(c + 2 * t as isize + 1)))
            .sum::<f32>()
}

/// The odd-offset taps of the half-band low-pass [`halve`] uses, from the centre out
/// (offsets 1, 3, …, 25; the centre tap is ½, the even offsets are zero): a 51-tap sinc
/// under a Kaiser window (β = 7.5), flat within 0.002 dB to 0.2 of the input rate and down
/// 75 dB from 0.3 of it.
const HALF_BAND: [f32; 13] = [
    0.316_537_92,
    -0.100_885_88,
    0.055_294_34,
    -0.034_410_06,
    0.022_177_188,
    -0.014_241_496,
    0.008_904_375,
    -0.005_320_544,
    0.002_978_677,
    -0.001_521_477,
    0.000_678_351,
    -0.000_239_859,
    0.000_047_481,
];

/// `signal` low-passed at a quarter of its rate and every other sample kept: half the rate,
/// with no aliasing below 0.2 of the input rate (0.4 of the output's). The ends are
/// mirrored, so that the first and last samples keep their level.
pub fn halve(signal: &[f32]) -> Vec<f32> {
    let mut halving = Halving::default();
    halving.push(signal);
    halving.finish()
}

widened! {
    /// Appends `count` outputs of the half-band filter to `out`, where `w[0]` is the input
    /// `PAD` samples before the first output's centre (`w` holds at least `2·count + 2·PAD - 2`
    /// samples).
    fn halve_into(w: &[f32], count: usize, out: &mut Vec<f32>) = halve_into_portable
}

#[inline(always)]
fn halve_into_portable(w: &[f32], count: usize, out: &mut Vec<f32>) {
    const TAPS: usize = HALF_BAND.len();
    /// Outputs per block: its inputs stay in the first-level cache.
    const BLOCK: usize = 1024;
    // Per block, the inputs split by parity: the output at m is ½·x[2m] plus, for each tap
    // t, h[t]·(x[2m + 2t + 1] + x[2m - 2t - 1]), which are plain slices of the odd samples,
    // so the sums vectorize.
    let mut even = [0.0f32; BLOCK];
    let mut odd = [0.0f32; BLOCK + 2 * TAPS];
    let mut done = 0;
    while done < count {
        let n = BLOCK.min(count - done);
        // x[2m] for the block's first m is w[PAD + 2·done]; odd[k] is x[2(m + k - TAPS) + 1].
        let centre = PAD + 2 * done;
        for (e, &x) in even[..n].iter_mut().zip(w[centre..].iter().step_by(2)) {
            *e = x;
        }
        let odd_from = centre + 1 - 2 * TAPS;
        for (o, &x) in odd[..n + 2 * TAPS]
            .iter_mut()
            .zip(w[odd_from..].iter().step_by(2))
        {
            *o = x;
        }
        let start = out.len();
        out.extend(even[..n].iter().map(|&e| 0.5 * e));
        let block = &mut out[start..];
        for (t, &h) in HALF_BAND.iter().enumerate() {
            let after = &odd[TAPS + t..TAPS + t + n];
            let before = &odd[TAPS - 1 - t..TAPS - 1 - t + n];
            for ((y, &a), &b) in block.iter_mut().zip(after).zip(before) {
                *y += h * (a + b);
            }
        }
        done += n;
    }
}

/// The short-time magnitude spectra of `signal`: Hann-windowed frames of `len` samples,
/// `hop` apart, from the start while a whole frame fits. `each` gets the magnitudes of the
/// first `bins` bins (at most `len / 2 + 1`) of every frame, in order.
pub(crate) fn for_each_magnitudes(
    signal: &[f32],
    len: usize,
    hop: usize,
    bins: usize,
    mut each: impl FnMut(&[f32]),
) {
    let mut spectrogram = Spectrogram::new(len, hop, bins);
    spectrogram.push(signal, &mut each);
    spectrogram.finish(&mut each);
}

/// [`for_each_magnitudes`] of a signal that arrives in pieces: the same frames, in the same
/// order, whatever the pieces.
///
/// Two frames share one complex FFT, one as its real part and the next as its imaginary
/// part, and are told apart by the symmetry of real spectra: for `Z = FFT(a + ib)`,
/// `|A[k]| = |Z[k] + conj(Z[N-k])| / 2` and `|B[k]| = |Z[k] - conj(Z[N-k])| / 2`. That is
/// half the transforms, and none of a real FFT's scalar post-processing.
pub(crate) struct Spectrogram {
    len: usize,
    hop: usize,
    fft: std::sync::Arc<dyn rustfft::Fft<f32>>,
    window: Vec<f32>,
    buffer: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    a: Vec<f32>,
    b: Vec<f32>,
    /// The signal from the start of the next frame on.
    pending: Vec<f32>,
}

impl Spectrogram {
    pub(crate) fn new(len: usize, hop: usize, bins: usize) -> Self {
        let (len, hop) = (len.max(2), hop.max(1));
        let bins = bins.clamp(1, len / 2 + 1);
        let fft = FftPlanner::<f32>::new().plan_fft_forward(len);
        let window = (0..len)
            .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / len as f32).cos())
            .collect();
        let scratch = vec![Complex::new(0.0f32, 0.0); fft.get_inplace_scratch_len()];
        Self {
            len,
            hop,
            fft,
            window,
            buffer: vec![Complex::new(0.0f32, 0.0); len],
            scratch,
            a: vec![0.0; bins],
            b: vec![0.0; bins],
            pending: Vec::new(),
        }
    }

    /// Takes the next samples; `each` gets every frame they complete.
    pub(crate) fn push(&mut self, samples: &[f32], each: &mut impl FnMut(&[f32])) {
        if self.pending.is_empty() {
            // Straight from the caller's samples; only what is left over is kept.
            let used = self.pairs(samples, each);
            self.pending.extend_from_slice(&samples[used..]);
        } else {
            self.pending.extend_from_slice(samples);
            let pending = std::mem::take(&mut self.pending);
            let used = self.pairs(&pending, each);
            self.pending = pending;
            self.pending.drain(..used);
        }
    }

    /// The last frame, when one is left without a partner.
    pub(crate) fn finish(mut self, each: &mut impl FnMut(&[f32])) {
        if self.pending.len() >= self.len {
            let pending = std::mem::take(&mut self.pending);
            self.transform(&pending[..self.len], &[]);
            each(&self.a);
        }
    }

    /// Transforms every pair of frames that `signal` (starting on a frame) holds whole;
    /// returns where the next frame starts.
    fn pairs(&mut self, signal: &[f32], each: &mut impl FnMut(&[f32])) -> usize {
        let (len, hop) = (self.len, self.hop);
        let mut start = 0;
        while start + hop + len <= signal.len() {
            self.transform(
                &signal[start..start + len],
                &signal[start + hop..start + hop + len],
            );
            each(&self.a);
            each(&self.b);
            start += 2 * hop;
        }
        start.min(signal.len())
    }

    /// The magnitudes of frame `re` into `a` and of frame `im` (if any) into `b`.
    fn transform(&mut self, re: &[f32], im: &[f32]) {
        fill(&mut self.buffer, re, im, &self.window);
        self.fft
            .process_with_scratch(&mut self.buffer, &mut self.scratch);
        separate(&self.buffer, &mut self.a, &mut self.b);
    }
}

widened! {
    /// Windows `re` into the real part of `buffer` and `im` (or silence, when it is empty)
    /// into the imaginary part.
    fn fill(buffer: &mut [Complex<f32>], re: &[f32], im: &[f32], window: &[f32]) = fill_portable
}

#[inline(always)]
fn fill_portable(buffer: &mut [Complex<f32>], re: &[f32], im: &[f32], window: &[f32]) {
    if im.is_empty() {
        for ((z, &x), &w) in buffer.iter_mut().zip(re).zip(window) {
            *z = Complex::new(x * w, 0.0);
        }
    } else {
        for (((z, &x), &y), &w) in buffer.iter_mut().zip(re).zip(im).zip(window) {
            *z = Complex::new(x * w, y * w);
        }
    }
}

widened! {
    /// The magnitudes of the two real frames packed into the spectrum `z`, into `a` and `b`
    /// (as many bins as they hold).
    fn separate(z: &[Complex<f32>], a: &mut [f32], b: &mut [f32]) = separate_portable
}

#[inline(always)]
fn separate_portable(z: &[Complex<f32>], a: &mut [f32], b: &mut [f32]) {
    let (len, bins) = (z.len(), a.len().min(b.len()));
    a[0] = z[0].re.abs();
    b[0] = z[0].im.abs();
    let mirrored = z[len + 1 - bins..].iter().rev();
    for (((z, w), ma), mb) in z[1..bins]
        .iter()
        .zip(mirrored)
        .zip(&mut a[1..])
        .zip(&mut b[1..])
    {
        let (sum_re, diff_im) = (z.re + w.re, z.im - w.im);
        let (sum_im, diff_re) = (z.im + w.im, z.re - w.re);
        *ma = 0.5 * (sum_re * sum_re + diff_im * diff_im).sqrt();
        *mb = 0.5 * (sum_im * sum_im + diff_re * diff_re).sqrt();
    }
}

/// The natural logarithm of `x` ≥ 1 to within 1e-6: [`crate::dsp::fast_log2`] scaled.
#[inline(always)]
pub(crate) fn ln_from_one(x: f32) -> f32 {
    crate::dsp::fast_log2(x) * std::f32::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_frames_give_each_frame_its_own_spectrum() {
        // Seven frames (an odd count: the last one has no partner), each a different
        // tone, against a direct DFT of the same windowed mono frame.
        let (len, hop) = (64usize, 48usize);
        let frames: Vec<[f32; 2]> = (0..len + 6 * hop)
            .map(|n| {
                let f = (n / hop) as f32 + 2.0;
                let x = (std::f32::consts::TAU * f * n as f32 / len as f32).sin();
                [x, 0.5 * x + 0.1]
            })
            .collect();
        let mono = mono(&frames);
        let mut got = Vec::new();
        for_each_magnitudes(&mono, len, hop, len / 2 + 1, |m| got.push(m.to_vec()));
        assert_eq!(got.len(), 7);
        for (i, magnitudes) in got.iter().enumerate() {
            for (k, m) in magnitudes.iter().enumerate() {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for n in 0..len {
                    let f = frames[i * hop + n];
                    let w = 0.5 - 0.5 * (std::f64::consts::TAU * n as f64 / len as f64).cos();
                    let x = f64::from(f[0] + f[1]) * 0.5 * w;
                    let phase = -std::f64::consts::TAU * (k * n) as f64 / len as f64;
                    re += x * phase.cos();
                    im += x * phase.sin();
                }
                let want = re.hypot(im);
                assert!(
                    (f64::from(*m) - want).abs() < 1e-4 * (1.0 + want),
                    "frame {i} bin {k}: {m} vs {want}"
                );
            }
        }
    }

    /// The level of a sine of `cycles` per sample after [`halve`], in dB.
    fn halved_gain_db(cycles: f32) -> f32 {
        // The phase in f64: f32's rounding of it would be broadband noise of its own.
        let x: Vec<f32> = (0..8192)
            .map(|n| (std::f64::consts::TAU * f64::from(cycles) * f64::from(n)).sin() as f32)
            .collect();
        let y = halve(&x);
        let rms = |s: &[f32]| (s.iter().map(|v| v * v).sum::<f32>() / s.len() as f32).sqrt();
        20.0 * (rms(&y[64..y.len() - 64]) / rms(&x[128..x.len() - 128])).log10()
    }

    #[test]
    fn halving_keeps_the_band_below_a_fifth_of_the_rate_and_rejects_what_would_alias() {
        for cycles in [0.01, 0.05, 0.1, 0.15, 0.2] {
            let g = halved_gain_db(cycles);
            assert!(g.abs() < 0.1, "{cycles}: {g} dB");
        }
        for cycles in [0.3, 0.35, 0.4, 0.45] {
            let g = halved_gain_db(cycles);
            assert!(g < -74.0, "{cycles}: {g} dB");
        }
        for n in [1, 2, 7, 101] {
            let y = halve(&vec![1.0; n]);
            assert_eq!(y.len(), n.div_ceil(2));
            assert!(y.iter().all(|v| (v - 1.0).abs() < 1e-3), "{n}: {y:?}");
        }
    }

    #[test]
    fn halving_in_blocks_is_the_plain_filter_with_mirrored_ends() {
        for len in [1usize, 2, 3, 50, 2047, 2048, 2049, 5001] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
                .collect();
            // The plain filter, one output at a time.
            let want: Vec<f32> = (0..len.div_ceil(2))
                .map(|m| mirrored_output(&x, m))
                .collect();
            let got = halve(&x);
            assert_eq!(got.len(), want.len());
            for (m, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-5, "len {len}, output {m}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn a_spectrogram_in_pieces_is_the_spectrogram_whole() {
        let x: Vec<f32> = (0..5_000)
            .map(|i| ((i * 7_919) % 211) as f32 / 100.0 - 1.0)
            .collect();
        let mut whole = Vec::new();
        for_each_magnitudes(&x, 256, 96, 129, |m| whole.push(m.to_vec()));
        assert_eq!(whole.len(), (5_000 - 256) / 96 + 1);
        for piece in [1usize, 95, 96, 300, 4_999] {
            let mut got = Vec::new();
            let mut spectrogram = Spectrogram::new(256, 96, 129);
            for p in x.chunks(piece) {
                spectrogram.push(p, &mut |m: &[f32]| got.push(m.to_vec()));
            }
            spectrogram.finish(&mut |m: &[f32]| got.push(m.to_vec()));
            assert_eq!(got, whole, "pieces of {piece}");
        }
    }

    #[test]
    fn a_signal_halved_as_it_arrives_is_the_signal_halved_whole() {
        let x: Vec<f32> = (0..20_011)
            .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
            .collect();
        let whole = halve(&halve(&x));
        for chunk in [1usize, 7, 51, 52, 1000, 4096] {
            let mut down = Downsampler::new(48_000, 12_000);
            assert_eq!(down.rate(), 12_000);
            for c in x.chunks(chunk) {
                down.push(c);
            }
            let got = down.finish();
            let got = if chunk == 1000 {
                // Taken as it comes, then the rest.
                let mut down = Downsampler::new(48_000, 12_000);
                let mut taken = Vec::new();
                for c in x.chunks(chunk) {
                    down.push(c);
                    taken.extend(down.take());
                }
                taken.extend(down.finish());
                taken
            } else {
                got
            };
            assert_eq!(got.len(), whole.len(), "chunks of {chunk}");
            for (m, (g, w)) in got.iter().zip(&whole).enumerate() {
                assert!(
                    (g - w).abs() < 1e-6,
                    "chunks of {chunk}, output {m}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn ln_from_one_matches_the_library_logarithm() {
        assert_eq!(super::ln_from_one(1.0), 0.0);
        let mut x = 1.0f32;
        while x < 1e7 {
            let (fast, exact) = (super::ln_from_one(x), x.ln());
            assert!(
                (fast - exact).abs() <= 1e-6 * exact.max(1.0),
                "{x}: {fast} vs {exact}"
            );
            x *= 1.0137;
        }
    }
}
