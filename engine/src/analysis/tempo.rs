//! Tempo from onsets: a spectral-flux onset envelope, its autocorrelation, and a comb over
//! candidate tempi that scores every multiple of the beat period up to four bars, which
//! pins the tempo to a small fraction of a BPM on music that keeps time.

use realfft::RealFftPlanner;
use serde::Serialize;

/// The lowest rate onsets are read at: 44.1 and 48 kHz audio as it is (the hats' and
/// cymbals' air above 12 kHz is part of what marks time, and of what tells the end of the
/// music from its release tail), 88.2 and 96 kHz halved.
pub const ONSET_RATE: u32 = 40_000;
/// STFT frame and hop of the onset envelope (≈ 21 ms and 2.7 ms at 48 kHz).
const FRAME: usize = 1024;
const HOP: usize = 128;

/// A tempo estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TempoEstimate {
    pub bpm: f64,
    /// How much the winning period stands out, 0–1.
    pub confidence: f64,
}

/// Where the low band of [`Envelopes::low`] ends, Hz: kick and snare bodies, bass notes.
const LOW_BAND_HZ: f32 = 500.0;

/// Onset envelopes of the whole spectrum and of its low band.
pub struct Envelopes {
    /// Seconds from one value to the next.
    pub hop_s: f64,
    pub full: Vec<f32>,
    /// Onsets below 500 Hz only: kick, snare body and bass, which mark beats, where hats
    /// mark their subdivisions.
    pub low: Vec<f32>,
}

/// Onset strength per hop, of the whole spectrum and of its low band, each with its slow
/// trend removed.
pub fn onset_envelopes(frames: &[[f32; 2]], sample_rate: u32) -> Envelopes {
    let mut reader = OnsetReader::new(sample_rate);
    super::for_each_mono_block(frames, |block| reader.push(block));
    reader.finish()
}

/// [`onset_envelopes`] of a mono signal that arrives in pieces.
pub struct OnsetReader {
    /// Brings the signal to the rate onsets are read at.
    down: super::Downsampler,
    spectrogram: super::Spectrogram,
    flux: Flux,
}

/// The rise of the log spectrum, frame by frame.
struct Flux {
    low_bins: usize,
    /// Each bin's last log magnitude.
    previous: Vec<f32>,
    full: Vec<f32>,
    low: Vec<f32>,
}

impl Flux {
    fn frame(&mut self, magnitudes: &[f32]) {
        let (low_previous, high_previous) = self.previous.split_at_mut(self.low_bins);
        let low_flux = rises(&magnitudes[..self.low_bins], low_previous);
        let high_flux = rises(&magnitudes[self.low_bins..], high_previous);
        self.full.push(low_flux + high_flux);
        self.low.push(low_flux);
    }
}

impl OnsetReader {
    /// Reads a signal at `sample_rate`.
    pub fn new(sample_rate: u32) -> Self {
        let down = super::Downsampler::new(sample_rate, ONSET_RATE);
        let bins = FRAME / 2 + 1;
        let low_bins =
            ((LOW_BAND_HZ * FRAME as f32 / down.rate().max(1) as f32) as usize).clamp(2, bins);
        Self {
            down,
            spectrogram: super::Spectrogram::new(FRAME, HOP, bins),
            flux: Flux {
                low_bins,
                previous: vec![0.0; bins],
                full: Vec::new(),
                low: Vec::new(),
            },
        }
    }

    /// Takes the next samples.
    pub fn push(&mut self, samples: &[f32]) {
        let Self {
            down,
            spectrogram,
            flux,
        } = self;
        down.push_through(samples, |lower| {
            spectrogram.push(lower, &mut |m: &[f32]| flux.frame(m));
        });
    }

    /// The envelopes of everything taken.
    pub fn finish(self) -> Envelopes {
        let Self {
            down,
            mut spectrogram,
            mut flux,
        } = self;
        let hop_s = HOP as f64 / f64::from(down.rate().max(1));
        down.finish_through(|rest| spectrogram.push(rest, &mut |m: &[f32]| flux.frame(m)));
        spectrogram.finish(&mut |m: &[f32]| flux.frame(m));
        Envelopes {
            hop_s,
            full: detrend(&flux.full),
            low: detrend(&flux.low),
        }
    }
}

super::widened! {
    /// The summed rise of each bin's log magnitude from `previous`, which takes the new
    /// levels.
    fn rises(magnitudes: &[f32], previous: &mut [f32]) -> f32 = rises_portable
}

#[inline(always)]
fn rises_portable(magnitudes: &[f32], previous: &mut [f32]) -> f32 {
    const LANES: usize = 8;
    // Eight running sums, so that the loop vectorizes (a single f32 sum is a serial chain).
    let mut sums = [0.0f32; LANES];
    let rise = |m: f32, p: &mut f32| {
        let level = super::ln_from_one(1.0 + 100.0 * m);
        let r = (level - *p).max(0.0);
        *p = level;
        r
    };
    let mut m = magnitudes.chunks_exact(LANES);
    let mut p = previous.chunks_exact_mut(LANES);
    for (ms, ps) in (&mut m).zip(&mut p) {
        for ((s, &x), q) in sums.iter_mut().zip(ms).zip(ps) {
            *s += rise(x, q);
        }
    }
    let tail: f32 = m
        .remainder()
        .iter()
        .zip(p.into_remainder())
        .map(|(&x, q)| rise(x, q))
        .sum();
    sums.iter().sum::<f32>() + tail
}

/// Removes the slow trend so that sustained loudness does not read as rhythm.
fn detrend(envelope: &[f32]) -> Vec<f32> {
    let smooth = 32;
    // The mean of envelope[i - smooth .. i + smooth] from a running sum, kept in f64 so that
    // adding and taking away leaves no drift.
    let mut sum: f64 = envelope[..smooth.min(envelope.len())]
        .iter()
        .map(|&e| f64::from(e))
        .sum();
    let mut out = Vec::with_capacity(envelope.len());
    for i in 0..envelope.len() {
        if i > 0 {
            if let Some(&e) = envelope.get(i + smooth - 1) {
                sum += f64::from(e);
            }
            if i > smooth {
                sum -= f64::from(envelope[i - smooth - 1]);
            }
        }
        let lo = i.saturating_sub(smooth);
        let hi = (i + smooth).min(envelope.len());
        let mean = (sum / (hi - lo) as f64) as f32;
        out.push((envelope[i] - mean).max(0.0));
    }
    out
}

/// Autocorrelation of `x` for lags 0..max_lag, by FFT.
fn autocorrelation(x: &[f32], max_lag: usize) -> Vec<f64> {
    // Zero padding to len + max_lag keeps every lag asked for clear of the wrap-around.
    let n = (x.len() + max_lag.min(x.len())).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let mut input = forward.make_input_vec();
    for (d, s) in input.iter_mut().zip(x) {
        *d = f64::from(*s);
    }
    let mut spectrum = forward.make_output_vec();
    if forward.process(&mut input, &mut spectrum).is_err() {
        return vec![0.0; max_lag];
    }
    for c in spectrum.iter_mut() {
        *c = realfft::num_complex::Complex::new(c.norm_sqr(), 0.0);
    }
    let mut out = inverse.make_output_vec();
    if inverse.process(&mut spectrum, &mut out).is_err() {
        return vec![0.0; max_lag];
    }
    out.truncate(max_lag.min(x.len()));
    // Unbiased: each lag averaged over the overlap it has.
    for (lag, v) in out.iter_mut().enumerate() {
        *v /= (x.len() - lag) as f64;
    }
    out
}

fn interpolate(r: &[f64], lag: f64) -> f64 {
    // Lags are never negative: truncating floors them (f64::floor is a library call on
    // baseline x86-64, and this runs some ninety thousand times a file).
    let i = lag as usize;
    let frac = lag - i as f64;
    match (r.get(i), r.get(i + 1)) {
        (Some(a), Some(b)) => a + (b - a) * frac,
        _ => 0.0,
    }
}

/// The tempo of `frames` where music is usually counted, 70 to 180 BPM: the search for
/// audio that comes with no tempo range of its own (a file to analyse or fit).
pub fn estimate_music(frames: &[[f32; 2]], sample_rate: u32) -> Option<TempoEstimate> {
    estimate(frames, sample_rate, 70.0, 180.0)
}

/// How well another tempo octave must score, against the best, to be considered at all.
const OCTAVE_SCORE: f64 = 0.8;
/// Low-band off-beat strength, against the beat's, below which the off-beats of a bare
/// pulse are subdivisions (clicks accented on the bar: 0.6 at half their tempo).
const OFFBEAT_RATIO: f64 = 0.5;
/// Onsets at the slower octave's sixteenths, against its eighths, in the whole spectrum,
/// from which the faster octave is the beat: the hats and cymbals that mark the
/// subdivisions play its eighths. fluidsynth band takes: 0.01–0.02 at the beat, 0.73–0.87 at
/// half of it; djinn's styles: at most 0.07 at the beat, 0.87–0.94 at half of it.
const SIXTEENTHS_WHOLE: f64 = 0.35;
/// The same in the two bands balanced (each at its own scale), from which the faster octave
/// is the beat: a kick on every beat with a hat between (which the whole spectrum, ruled by
/// the hats, misses). djinn's styles: at most 0.52 at the beat, 0.71 and up at half of it.
const SIXTEENTHS_BALANCED: f64 = 0.62;
/// Below this in the balanced bands, nothing sounds between the slower octave's eighths: a
/// bare pulse, told by its off-beats (music with drums: 0.14 and up).
const BARE_PULSE: f64 = 0.05;
/// Phase bins per beat when the envelope is folded onto one beat.
const PHASE_BINS: usize = 32;

/// The onset envelope folded onto one beat of `period` hops: the mean strength at each
/// phase, in [`PHASE_BINS`] bins.
fn fold(envelope: &[f32], period: f64) -> [f64; PHASE_BINS] {
    let mut sum = [0.0f64; PHASE_BINS];
    let mut count = [0u32; PHASE_BINS];
    for (i, &e) in envelope.iter().enumerate() {
        let turns = i as f64 / period;
        // Non-negative: truncating takes the whole turns off.
        let phase = turns - (turns as u64) as f64;
        let bin = ((phase * PHASE_BINS as f64) as usize).min(PHASE_BINS - 1);
        sum[bin] += f64::from(e);
        count[bin] += 1;
    }
    for (s, c) in sum.iter_mut().zip(count) {
        *s /= f64::from(c.max(1));
    }
    sum
}

/// The strongest phase bin of a fold.
fn strongest(folded: &[f64; PHASE_BINS]) -> usize {
    (0..PHASE_BINS)
        .max_by(|&a, &b| folded[a].total_cmp(&folded[b]))
        .unwrap_or(0)
}

/// The strongest of the bins within `reach` of `bin` in a fold (an onset can straddle two).
fn peak_within(folded: &[f64; PHASE_BINS], bin: usize, reach: usize) -> f64 {
    (0..=2 * reach)
        .map(|d| folded[(bin + PHASE_BINS + d - reach) % PHASE_BINS])
        .fold(0.0, f64::max)
}

/// How strong the onsets halfway between beats are, against the beats', in an envelope
/// folded onto one beat.
fn offbeat_ratio(folded: &[f64; PHASE_BINS]) -> f64 {
    let on = strongest(folded);
    let beat = peak_within(folded, on, 1);
    if beat <= 0.0 {
        return 1.0;
    }
    peak_within(folded, on + PHASE_BINS / 2, 1) / beat
}

/// How strong the onsets at the sixteenths of a folded beat are against those at its
/// eighths, the eighths placed on its strongest phase.
fn sixteenths(folded: &[f64; PHASE_BINS]) -> f64 {
    let on = strongest(folded);
    let at = |offset: usize, reach: usize| peak_within(folded, on + offset, reach);
    let eighths = at(0, 1) + at(PHASE_BINS / 2, 1);
    // A swung sixteenth comes late: it is looked for further off.
    let sixteenths = at(PHASE_BINS / 4, 2) + at(3 * PHASE_BINS / 4, 2);
    if eighths <= 0.0 {
        0.0
    } else {
        sixteenths / eighths
    }
}

/// Of two tempo octaves that both fit the onsets, whether the faster is the beat, given the
/// slower's beat of `period` hops: where the music's subdivisions (hats, shakers, a hat
/// between kicks) fall on the slower's sixteenths, it is the faster octave's eighths that
/// they mark. A bare pulse with nothing between its eighths is the faster tempo when its
/// off-beats are about as strong as its beats.
fn faster_is_the_beat(envelopes: &Envelopes, period: f64) -> bool {
    let whole = fold(&envelopes.full, period);
    let low = fold(&envelopes.low, period);
    let scale = |f: &[f64; PHASE_BINS]| {
        let top = f.iter().copied().fold(0.0, f64::max);
        if top > 0.0 { 1.0 / top } else { 0.0 }
    };
    let (w, l) = (scale(&whole), scale(&low));
    let mut balanced = [0.0; PHASE_BINS];
    for (b, (x, y)) in balanced.iter_mut().zip(whole.iter().zip(&low)) {
        *b = x * w + y * l;
    }
    let both = sixteenths(&balanced);
    if both < BARE_PULSE {
        // Told by the low band's accents where it has any.
        let accents = if l > 0.0 { &low } else { &whole };
        return offbeat_ratio(accents) >= OFFBEAT_RATIO;
    }
    sixteenths(&whole) >= SIXTEENTHS_WHOLE || both >= SIXTEENTHS_BALANCED
}

/// Where the beats of `frames` fall, in seconds, at `bpm`: the strongest phase of the
/// onset envelope folded onto one beat, then every beat from the start to the last onset,
/// each moved to the strongest onset within 30 ms when there is one.
pub fn beat_times(frames: &[[f32; 2]], sample_rate: u32, bpm: f64) -> Vec<f64> {
    let envelopes = onset_envelopes(frames, sample_rate);
    beats_in(&envelopes.full, envelopes.hop_s, bpm)
}

/// The tempo of `frames` where music is usually counted (70–180 BPM) and its beat times,
/// from one onset envelope.
pub fn tempo_and_beats(frames: &[[f32; 2]], sample_rate: u32) -> (Option<TempoEstimate>, Vec<f64>) {
    tempo_and_beats_of(&onset_envelopes(frames, sample_rate))
}

/// The tempo (70–180 BPM) and beat times that `envelopes` show.
pub fn tempo_and_beats_of(envelopes: &Envelopes) -> (Option<TempoEstimate>, Vec<f64>) {
    let tempo = estimate_in(envelopes, 70.0, 180.0);
    let beats = tempo
        .map(|t| beats_in(&envelopes.full, envelopes.hop_s, t.bpm))
        .unwrap_or_default();
    (tempo, beats)
}

fn beats_in(envelope: &[f32], hop_s: f64, bpm: f64) -> Vec<f64> {
    if envelope.is_empty() || bpm <= 0.0 {
        return Vec::new();
    }
    let period = 60.0 / bpm / hop_s;
    let on = strongest(&fold(envelope, period));
    // The onset envelope's hop h covers the frame starting at h·HOP; its centre is half a
    // frame later.
    let centre = FRAME as f64 / 2.0 / HOP as f64;
    let mut t = (on as f64 + 0.5) / PHASE_BINS as f64 * period;
    // A beat in the first half frame sits at a hop before the first one.
    if t - period + centre >= 0.0 {
        t -= period;
    }
    let reach = (0.03 / hop_s).round() as usize;
    let mean = envelope.iter().map(|&e| f64::from(e)).sum::<f64>() / envelope.len() as f64;
    // The music ends with its last onset; a release tail has no beats.
    let end = envelope
        .iter()
        .rposition(|&e| f64::from(e) > mean)
        .map_or(0.0, |i| i as f64 + period / 2.0)
        .min(envelope.len() as f64);
    let mut beats = Vec::new();
    while t < end {
        let at = t.round().max(0.0) as usize;
        let lo = at.saturating_sub(reach);
        let hi = (at + reach + 1).min(envelope.len());
        let (best, strength) = (lo..hi)
            .map(|i| (i, f64::from(envelope[i])))
            .fold((at, 0.0), |a, b| if b.1 > a.1 { b } else { a });
        let hop = if strength > mean { best as f64 } else { t };
        beats.push((hop + centre) * hop_s);
        t += period;
    }
    beats
}

/// The tempo of `frames` within `min_bpm..=max_bpm`, or `None` when there is too little
/// rhythm to tell (silence, a drone, under two seconds).
pub fn estimate(
    frames: &[[f32; 2]],
    sample_rate: u32,
    min_bpm: f64,
    max_bpm: f64,
) -> Option<TempoEstimate> {
    estimate_in(&onset_envelopes(frames, sample_rate), min_bpm, max_bpm)
}

fn estimate_in(envelopes: &Envelopes, min_bpm: f64, max_bpm: f64) -> Option<TempoEstimate> {
    let (envelope, hop_s) = (&envelopes.full, envelopes.hop_s);
    if envelope.len() as f64 * hop_s < 2.0 || envelope.iter().all(|&x| x == 0.0) {
        return None;
    }
    let max_period = 60.0 / min_bpm.max(1.0) / hop_s;
    let max_lag = ((envelope.len() / 2) as f64).min(max_period * 16.0 + 2.0) as usize;
    let r = autocorrelation(envelope, max_lag);
    let zero = r.first().copied().unwrap_or(0.0);
    if zero <= 0.0 {
        return None;
    }
    let score = |bpm: f64| {
        let period = 60.0 / bpm / hop_s;
        let mut total = 0.0;
        let mut count = 0.0;
        for k in 1..=16 {
            let lag = period * f64::from(k);
            if lag + 1.0 >= r.len() as f64 {
                break;
            }
            total += interpolate(&r, lag);
            count += 1.0;
        }
        if count == 0.0 { 0.0 } else { total / count }
    };
    let mut best = (min_bpm, f64::MIN);
    let mut total = 0.0;
    let mut n = 0.0f64;
    let mut bpm = min_bpm;
    while bpm <= max_bpm {
        let s = score(bpm);
        total += s;
        n += 1.0;
        if s > best.1 {
            best = (bpm, s);
        }
        bpm += 0.02;
    }
    let mean = total / n.max(1.0);
    // NOTE: a steady pulse scores nearly as well at half its tempo (every other beat lines
    // up too) and at its subdivisions (hats on the eighths line up as well as the beats).
    // Between two octaves that both score well, the beat is the one whose eighths the
    // subdivisions mark (see faster_is_the_beat).
    let phase_hops = |bpm: f64| 60.0 / bpm / hop_s;
    let double = best.0 * 2.0;
    let half = best.0 / 2.0;
    if double <= max_bpm && score(double) >= OCTAVE_SCORE * best.1 {
        if faster_is_the_beat(envelopes, phase_hops(best.0)) {
            best = (double, score(double));
        }
    } else if half >= min_bpm - 0.01
        && score(half) >= OCTAVE_SCORE * best.1
        && !faster_is_the_beat(envelopes, phase_hops(half))
    {
        best = (half, score(half));
    }
    let confidence = ((best.1 - mean) / zero).clamp(0.0, 1.0);
    Some(TempoEstimate {
        bpm: (best.0 * 100.0).round() / 100.0,
        confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clicks on every beat (accented on the bar) for `seconds`.
    fn clicks(bpm: f64, seconds: f64, rate: u32) -> Vec<[f32; 2]> {
        let mut out = vec![[0.0f32; 2]; (seconds * f64::from(rate)) as usize];
        let period = 60.0 / bpm * f64::from(rate);
        let mut beat = 0;
        loop {
            let start = (f64::from(beat) * period).round() as usize;
            if start >= out.len() {
                break;
            }
            let amp = if beat % 4 == 0 { 1.0 } else { 0.6 };
            for (i, f) in out[start..].iter_mut().take(400).enumerate() {
                let s = amp * (-(i as f32) / 60.0).exp() * ((i as f32) * 0.3).sin();
                *f = [s, s];
            }
            beat += 1;
        }
        out
    }

    #[test]
    fn clicks_at_known_tempi() {
        for bpm in [60.0, 90.0, 123.4, 142.0, 174.0] {
            let audio = clicks(bpm, 20.0, 48_000);
            let est = estimate(&audio, 48_000, bpm * 0.8, bpm * 1.2).unwrap();
            assert!((est.bpm - bpm).abs() < 0.2, "{bpm}: {est:?}");
        }
    }

    #[test]
    fn of_two_tempo_octaves_the_one_nearer_120_is_taken() {
        for bpm in [90.0, 120.0, 140.0] {
            let audio = clicks(bpm, 20.0, 48_000);
            let est = estimate(&audio, 48_000, 50.0, 200.0).unwrap();
            assert!((est.bpm - bpm).abs() < 0.2, "{bpm}: {est:?}");
        }
    }

    /// The drums a kit plays, and a bass.
    #[derive(Clone, Copy)]
    enum Drum {
        Kick,
        Snare,
        Hat,
        Bass,
    }

    /// `seconds` of a kit at `bpm` playing `bar` (beat in the bar and drum; four beats) over
    /// and over: a falling sine kick, a noise snare with a body, a bright noise hat, a
    /// plucked 55 Hz bass.
    fn kit(bpm: f64, seconds: f64, bar: &[(f64, Drum)]) -> Vec<[f32; 2]> {
        const RATE: f32 = 48_000.0;
        let mut out = vec![[0.0f32; 2]; (seconds * f64::from(RATE)) as usize];
        let mut seed = 1u32;
        let mut noise = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        };
        let beat = 60.0 / bpm * f64::from(RATE);
        let bars = (out.len() as f64 / (4.0 * beat)).ceil() as usize;
        for n in 0..bars {
            for &(at, drum) in bar {
                let start = ((n as f64 * 4.0 + at) * beat).round() as usize;
                let Some(tail) = out.get_mut(start..) else {
                    continue;
                };
                let mut phase = 0.0f32;
                let mut last = 0.0f32;
                for (i, f) in tail.iter_mut().take(12_000).enumerate() {
                    let t = i as f32 / RATE;
                    let v = match drum {
                        Drum::Kick => {
                            phase +=
                                std::f32::consts::TAU * (50.0 + 100.0 * (-t * 30.0).exp()) / RATE;
                            0.8 * phase.sin() * (-t * 8.0).exp()
                        }
                        Drum::Snare => {
                            let body =
                                (std::f32::consts::TAU * 180.0 * t).sin() * (-t * 20.0).exp();
                            0.5 * (0.6 * noise() * (-t * 30.0).exp() + body)
                        }
                        Drum::Hat => {
                            // Noise, differenced: its energy is high up.
                            let n = noise();
                            let v = 0.3 * (n - last) * (-t * 80.0).exp();
                            last = n;
                            v
                        }
                        Drum::Bass => {
                            let tone = (std::f32::consts::TAU * 55.0 * t).sin();
                            0.5 * tone * (1.0 - (-t * 400.0).exp()) * (-t * 12.0).exp()
                        }
                    };
                    f[0] += v;
                    f[1] += v;
                }
            }
        }
        out
    }

    /// `drum` on every eighth of the bar.
    fn on_the_eighths(drum: Drum) -> impl Iterator<Item = (f64, Drum)> {
        (0..8).map(move |e| (f64::from(e) / 2.0, drum))
    }

    /// Kick on one and three, snare on two and four, hats on the eighths.
    fn backbeat() -> Vec<(f64, Drum)> {
        [
            (0.0, Drum::Kick),
            (1.0, Drum::Snare),
            (2.0, Drum::Kick),
            (3.0, Drum::Snare),
        ]
        .into_iter()
        .chain(on_the_eighths(Drum::Hat))
        .collect()
    }

    /// `bar` played for 20 s at each of `tempi` is heard at that tempo, searching 70–180.
    fn heard_at_their_tempi(bar: &[(f64, Drum)], tempi: &[f64]) {
        for &bpm in tempi {
            let est = estimate_music(&kit(bpm, 20.0, bar), 48_000).unwrap();
            assert!((est.bpm - bpm).abs() < 0.2, "{bpm}: {est:?}");
        }
    }

    #[test]
    fn of_two_tempo_octaves_the_one_whose_eighths_the_hats_play_is_the_beat() {
        // 80 and 85 BPM also fit at 160 and 170, 160 and 170 at 80 and 85: the hats tell.
        heard_at_their_tempi(&backbeat(), &[80.0, 85.0, 160.0, 170.0]);
    }

    #[test]
    fn a_boom_bap_beat_with_a_bass_on_the_eighths_is_not_read_at_twice_its_tempo() {
        // Kick on one, the last sixteenth of two and around three, snare on two and four,
        // hats and a bass on the eighths: the bass makes the low band's off-beats as strong
        // as its beats, but the hats play the eighths of 85 and 90 BPM, not of 170 and 180.
        let boom_bap: Vec<(f64, Drum)> = [
            (0.0, Drum::Kick),
            (1.75, Drum::Kick),
            (2.25, Drum::Kick),
            (2.5, Drum::Kick),
            (1.0, Drum::Snare),
            (3.0, Drum::Snare),
        ]
        .into_iter()
        .chain(on_the_eighths(Drum::Hat))
        .chain(on_the_eighths(Drum::Bass))
        .collect();
        heard_at_their_tempi(&boom_bap, &[85.0, 90.0]);
    }

    #[test]
    fn a_kick_on_every_beat_with_a_hat_between_is_read_at_the_kicks_tempo() {
        let four_on_the_floor: Vec<(f64, Drum)> = (0..4)
            .flat_map(|b| [(f64::from(b), Drum::Kick), (f64::from(b) + 0.5, Drum::Hat)])
            .collect();
        heard_at_their_tempi(&four_on_the_floor, &[75.0, 150.0]);
    }

    #[test]
    fn the_running_detrend_is_the_windowed_mean_taken_away() {
        let e: Vec<f32> = (0..300).map(|i| ((i * 37) % 23) as f32 * 0.1).collect();
        let got = detrend(&e);
        for (i, g) in got.iter().enumerate() {
            let (lo, hi) = (i.saturating_sub(32), (i + 32).min(e.len()));
            let mean = e[lo..hi].iter().sum::<f32>() / (hi - lo) as f32;
            assert!((g - (e[i] - mean).max(0.0)).abs() < 1e-5, "{i}");
        }
    }

    #[test]
    fn the_autocorrelation_is_the_plain_sum_at_every_lag_asked_for() {
        let x: Vec<f32> = (0..1000).map(|i| ((i * 31) % 17) as f32 / 17.0).collect();
        let r = autocorrelation(&x, 300);
        assert_eq!(r.len(), 300);
        // Up to the FFT's scale, which the tempo search never depends on.
        let plain = |lag: usize| {
            (0..x.len() - lag)
                .map(|i| f64::from(x[i]) * f64::from(x[i + lag]))
                .sum::<f64>()
                / (x.len() - lag) as f64
        };
        for (lag, v) in r.iter().enumerate() {
            let (got, want) = (v / r[0], plain(lag) / plain(0));
            assert!((got - want).abs() < 1e-9, "lag {lag}: {got} vs {want}");
        }
    }

    #[test]
    fn silence_has_no_tempo() {
        assert_eq!(
            estimate(&vec![[0.0; 2]; 48_000 * 5], 48_000, 60.0, 180.0),
            None
        );
    }
}
