//! Everything a loop library wants to know about a file: tempo and beats, key, loudness,
//! brightness and other spectral features, and a guess at the part it plays.

use std::sync::{Arc, mpsc};

use serde::Serialize;

use super::bands::{BandShares, band_shares};
use super::key::{self, KeyEstimate};
use super::loudness::{self, LoudnessReport};
use super::tempo::{self, TempoEstimate};
use crate::music::PitchClass;

/// The spectral features, measured on short frames across the whole sound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spectral {
    /// Energy-weighted mean spectral centroid, Hz.
    pub centroid_hz: f64,
    /// The centroid on a 0 (dark, 100 Hz) to 1 (bright, 8 kHz) log scale.
    pub brightness: f64,
    /// Frequency under which 85 % of the energy lies, Hz.
    pub rolloff_hz: f64,
    /// Mean spectral flatness, 0 (pure tones) to 1 (white noise).
    pub flatness: f64,
    /// How much of the spectrum holds still: the energy of each bin's median over 0.3 s
    /// against its mean, 0 (all hits) to 1 (all sustained).
    pub sustain: f64,
    /// Note onsets per second.
    pub onset_rate: f64,
    /// Pitch classes sounding at once, on average (a chord is 3, a melody 1).
    pub polyphony: f64,
}

/// A guess at the part a sound plays.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleGuess {
    /// drums, bass, pad, lead, vocal or full_mix.
    pub role: &'static str,
    /// The winning score over the sum of all scores.
    pub confidence: f64,
}

/// A file, described.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Description {
    pub seconds: f64,
    pub sample_rate: u32,
    pub tempo: Option<TempoEstimate>,
    /// Beat times in seconds (at the estimated tempo).
    pub beats: Vec<f64>,
    pub key: Option<KeyEstimate>,
    pub loudness: LoudnessReport,
    pub bands: BandShares,
    pub spectral: Spectral,
    pub role: RoleGuess,
}

/// Tempo, beats and key: what a DJ needs of a track, and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TempoKey {
    pub tempo: Option<TempoEstimate>,
    /// Beat times in seconds (at the estimated tempo).
    pub beats: Vec<f64>,
    pub key: Option<KeyEstimate>,
}

/// The tempo, beats and key of a mono signal at `sample_rate`.
pub fn tempo_and_key(mono: &[f32], sample_rate: u32) -> TempoKey {
    let mut listener = Listener::new(sample_rate);
    listener.push(mono);
    listener.finish()
}

/// Reads the tempo, beats and key of a mono signal as it arrives (from a decoder, say): the
/// onsets on a thread of their own, the notes on the caller's, a block at a time, so that
/// the reading keeps pace with the decoding instead of following it. The onsets are the
/// larger half of the work; the decoding and the notes together about match them.
pub struct Listener {
    /// Samples gathered into a block before the onset reader is woken.
    block: Vec<f32>,
    to_tempo: mpsc::Sender<Arc<[f32]>>,
    tempo: std::thread::JoinHandle<(Option<TempoEstimate>, Vec<f64>)>,
    key: super::chroma::ChromaReader,
}

/// Samples per block handed to the onset reader: about a third of a second at 48 kHz.
const BLOCK: usize = 1 << 14;

impl Listener {
    /// Starts reading a signal at `sample_rate`.
    pub fn new(sample_rate: u32) -> Self {
        let (to_tempo, tempo_blocks) = mpsc::channel::<Arc<[f32]>>();
        let tempo = std::thread::spawn(move || {
            let mut reader = tempo::OnsetReader::new(sample_rate);
            for block in tempo_blocks {
                reader.push(&block);
            }
            tempo::tempo_and_beats_of(&reader.finish())
        });
        Self {
            block: Vec::with_capacity(BLOCK),
            to_tempo,
            tempo,
            key: key::profile_reader(sample_rate),
        }
    }

    /// Takes the next samples.
    pub fn push(&mut self, mut samples: &[f32]) {
        while !samples.is_empty() {
            let n = (BLOCK - self.block.len()).min(samples.len());
            self.block.extend_from_slice(&samples[..n]);
            samples = &samples[n..];
            if self.block.len() == BLOCK {
                self.send();
            }
        }
    }

    fn send(&mut self) {
        let block: Arc<[f32]> = Arc::from(self.block.as_slice());
        self.block.clear();
        // An onset reader that has gone has panicked; finish reports it.
        let _ = self.to_tempo.send(Arc::clone(&block));
        self.key.push(&block);
    }

    /// The tempo, beats and key of everything taken.
    pub fn finish(mut self) -> TempoKey {
        if !self.block.is_empty() {
            self.send();
        }
        let Self {
            to_tempo,
            tempo,
            key,
            ..
        } = self;
        drop(to_tempo);
        let key = key::estimate_from(&key.finish());
        let (tempo, beats) = tempo
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        TempoKey { tempo, beats, key }
    }
}

/// STFT of the spectral features: about 43 ms frames, 21 ms hops at 48 kHz.
const FRAME: usize = 2048;
const HOP: usize = 1024;
/// Frames in the time median of [`Spectral::sustain`].
const MEDIAN: usize = 15;

/// Measures the spectral features of `frames`.
pub fn spectral(frames: &[[f32; 2]], sample_rate: u32) -> Spectral {
    let mut out = Spectral {
        centroid_hz: 0.0,
        brightness: 0.0,
        rolloff_hz: 0.0,
        flatness: 0.0,
        sustain: 0.0,
        onset_rate: 0.0,
        polyphony: 0.0,
    };
    if frames.len() < FRAME {
        return out;
    }
    let bin_hz = f64::from(sample_rate) / FRAME as f64;
    let bins = FRAME / 2 + 1;
    let mut ring = vec![vec![0.0f32; bins]; MEDIAN];
    let mut column = [0.0f32; MEDIAN];
    let (mut centroid_sum, mut energy_sum, mut rolloff_sum, mut flat_sum) = (0.0, 0.0, 0.0, 0.0);
    let (mut median_energy, mut mean_energy) = (0.0f64, 0.0f64);
    let mut counted = 0usize;
    let mut count = 0usize;
    let flat_lo = (100.0 / bin_hz) as usize;
    let flat_hi = ((10_000.0 / bin_hz) as usize).min(bins - 1);
    super::for_each_magnitudes(&super::mono(frames), FRAME, HOP, bins, |magnitudes| {
        ring[count % MEDIAN].copy_from_slice(magnitudes);
        count += 1;
        let mags = &ring[(count - 1) % MEDIAN];
        let energy: f64 = mags.iter().map(|&m| f64::from(m) * f64::from(m)).sum();
        if energy > 1e-9 {
            let centroid: f64 = mags
                .iter()
                .enumerate()
                .map(|(k, &m)| k as f64 * bin_hz * f64::from(m) * f64::from(m))
                .sum::<f64>()
                / energy;
            let mut acc = 0.0;
            let rolloff = mags
                .iter()
                .position(|&m| {
                    acc += f64::from(m) * f64::from(m);
                    acc >= 0.85 * energy
                })
                .unwrap_or(bins) as f64
                * bin_hz;
            let band = &mags[flat_lo..flat_hi];
            let n = band.len().max(1) as f64;
            let log_mean = band
                .iter()
                .map(|&m| (f64::from(m) * f64::from(m) + 1e-12).ln())
                .sum::<f64>()
                / n;
            let mean = band
                .iter()
                .map(|&m| f64::from(m) * f64::from(m) + 1e-12)
                .sum::<f64>()
                / n;
            centroid_sum += centroid * energy;
            rolloff_sum += rolloff * energy;
            flat_sum += log_mean.exp() / mean;
            energy_sum += energy;
            counted += 1;
        }
        if count >= MEDIAN {
            for k in 0..bins {
                let mut mean = 0.0f64;
                for (c, frame) in column.iter_mut().zip(&ring) {
                    *c = frame[k];
                    mean += f64::from(frame[k]) * f64::from(frame[k]);
                }
                column.sort_unstable_by(f32::total_cmp);
                let median = f64::from(column[MEDIAN / 2]);
                median_energy += median * median;
                mean_energy += mean / MEDIAN as f64;
            }
        }
    });
    if energy_sum > 0.0 {
        out.centroid_hz = centroid_sum / energy_sum;
        out.rolloff_hz = rolloff_sum / energy_sum;
        out.flatness = flat_sum / counted.max(1) as f64;
        out.brightness = ((out.centroid_hz.max(100.0) / 100.0).ln() / 80f64.ln()).clamp(0.0, 1.0);
    }
    if mean_energy > 0.0 {
        out.sustain = (median_energy / mean_energy).clamp(0.0, 1.0);
    }
    out.onset_rate = onset_rate(frames, sample_rate);
    out.polyphony = polyphony(frames, sample_rate);
    out
}

/// Onsets per second: peaks of the onset envelope above twice its mean and a tenth of its
/// highest, at least 50 ms apart.
fn onset_rate(frames: &[[f32; 2]], sample_rate: u32) -> f64 {
    let envelopes = tempo::onset_envelopes(frames, sample_rate);
    let envelope = envelopes.full;
    if envelope.is_empty() {
        return 0.0;
    }
    let mean = envelope.iter().map(|&e| f64::from(e)).sum::<f64>() / envelope.len() as f64;
    let loudest = envelope.iter().copied().fold(0.0f32, f32::max);
    // Twice the mean, but never under a tenth of the strongest onset: a held sound's
    // envelope is nearly flat, and its ripples are not notes.
    let threshold = (2.0 * mean).max(0.1 * f64::from(loudest));
    let hop_s = envelopes.hop_s;
    let gap = (0.05 / hop_s) as usize;
    let mut last = None;
    let mut onsets = 0;
    for i in 1..envelope.len().saturating_sub(1) {
        let e = f64::from(envelope[i]);
        if e > threshold
            && envelope[i] >= envelope[i - 1]
            && envelope[i] > envelope[i + 1]
            && last.is_none_or(|l| i - l >= gap)
        {
            onsets += 1;
            last = Some(i);
        }
    }
    f64::from(onsets) / (frames.len() as f64 / f64::from(sample_rate))
}

/// Pitch classes sounding together, on average over the frames (170 ms) that are not
/// quiet: in each, the spectral peaks between 30 Hz and 4 kHz within 12 dB of the loudest,
/// less those at a whole multiple of a louder one (its harmonics).
fn polyphony(frames: &[[f32; 2]], sample_rate: u32) -> f64 {
    let frame_len = (sample_rate as usize / 6).next_power_of_two().max(1024);
    if frames.len() < frame_len {
        return 0.0;
    }
    let bin_hz = sample_rate as f32 / frame_len as f32;
    let lo = ((30.0 / bin_hz) as usize).max(1);
    // The spectrum has frame_len / 2 + 1 bins; a peak needs one above it.
    let hi = ((4_000.0 / bin_hz) as usize).min(frame_len / 2 - 1);
    let mut counts: Vec<(f32, usize)> = Vec::new();
    let mut peaks: Vec<(f32, f32)> = Vec::new();
    super::for_each_magnitudes(
        &super::mono(frames),
        frame_len,
        frame_len / 2,
        frame_len / 2 + 1,
        |mags| {
            let loudest = mags[lo..=hi].iter().copied().fold(0.0f32, f32::max);
            if loudest <= 0.0 {
                return;
            }
            peaks.clear();
            for k in lo..=hi {
                let m = mags[k];
                let (a, c) = (mags[k - 1], mags[k + 1]);
                if m >= 0.25 * loudest && m > a && m >= c {
                    // Parabolic interpolation puts the peak between bins.
                    let denom = a - 2.0 * m + c;
                    let offset = if denom.abs() > 1e-12 {
                        (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
                    } else {
                        0.0
                    };
                    peaks.push((m, (k as f32 + offset) * bin_hz));
                }
            }
            peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut classes = [false; 12];
            let mut fundamentals: Vec<f32> = Vec::new();
            for &(_, hz) in &peaks {
                let harmonic = fundamentals.iter().any(|&f| {
                    let n = (hz / f).round();
                    // Within 3 %, or within the error n bins' worth of a low fundamental carries.
                    n >= 2.0 && (hz - n * f).abs() < (0.03 * hz).max(0.5 * n * bin_hz)
                });
                if harmonic {
                    continue;
                }
                fundamentals.push(hz);
                let note = (69.0 + 12.0 * (hz / 440.0).log2()).round() as i32;
                classes[note.rem_euclid(12) as usize] = true;
            }
            let energy: f32 = mags.iter().map(|m| m * m).sum();
            counts.push((energy, classes.iter().filter(|&&c| c).count()));
        },
    );
    let loudest = counts.iter().map(|c| c.0).fold(0.0f32, f32::max);
    let heard: Vec<usize> = counts
        .iter()
        .filter(|c| c.0 >= 0.01 * loudest && c.0 > 0.0)
        .map(|c| c.1)
        .collect();
    if heard.is_empty() {
        0.0
    } else {
        heard.iter().sum::<usize>() as f64 / heard.len() as f64
    }
}

/// Guesses the part from the band shares and spectral features. Each role scores the
/// evidence for it, 0–1 per clue; see docs/protocol.md (`library.build`) for the rules.
pub fn guess_role(bands: &BandShares, s: &Spectral) -> RoleGuess {
    let low = f64::from(bands.sub + bands.low);
    let mid = f64::from(bands.mid);
    let high = f64::from(bands.high + bands.air);
    let hits = 1.0 - s.sustain;
    let clamp = |x: f64| x.clamp(0.0, 1.0);
    let scores = [
        // Hits, noisy.
        ("drums", clamp(hits * 1.6) * clamp(s.flatness * 8.0)),
        // Nearly everything under 250 Hz, one note at a time.
        (
            "bass",
            clamp((low - 0.55) * 3.0) * clamp(1.2 - high * 10.0) * clamp((2.6 - s.polyphony) / 1.2),
        ),
        // Sustained chords.
        (
            "pad",
            clamp((s.sustain - 0.5) * 3.0) * clamp((s.polyphony - 1.8) / 1.5),
        ),
        // One note at a time, above the bass, moving.
        (
            "lead",
            clamp((2.6 - s.polyphony) / 1.2)
                * clamp(mid * 1.5)
                * clamp(1.2 - low * 2.0)
                * clamp(s.onset_rate / 2.0),
        ),
        // One held line in the voice band.
        (
            "vocal",
            clamp((2.6 - s.polyphony) / 1.2)
                * clamp((mid - 0.5) * 3.0)
                * clamp(s.sustain * 1.5)
                * clamp(1.0 - s.onset_rate / 3.0),
        ),
        // Low end and top, hits and held notes, chords.
        (
            "full_mix",
            clamp(low * 3.0)
                * clamp(high * 30.0)
                * clamp(hits * 3.0)
                * clamp(s.sustain * 3.0)
                * clamp(s.polyphony / 2.5),
        ),
    ];
    let sum: f64 = scores.iter().map(|s| s.1).sum();
    let (role, best) = scores
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or(("full_mix", 0.0));
    RoleGuess {
        role,
        confidence: if sum > 0.0 { best / sum } else { 0.0 },
    }
}

/// Describes `frames`: tempo (70–180 BPM) and beats, key, loudness, bands, spectral
/// features and role.
pub fn describe(frames: &[[f32; 2]], sample_rate: u32) -> Description {
    describe_knowing(frames, sample_rate, Known::default())
}

/// What a file says of itself (a WAV file's loop information, say), which a description
/// takes over its own estimates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Known {
    /// The tempo: taken as it is (confidence 1), the beats found at it.
    pub bpm: Option<f64>,
    /// The key's tonic: the audio still tells major from minor.
    pub tonic: Option<PitchClass>,
}

/// [`describe`], taking what is `known` over the estimates.
pub fn describe_knowing(frames: &[[f32; 2]], sample_rate: u32, known: Known) -> Description {
    let (tempo, beats) = match known.bpm {
        Some(bpm) => (
            Some(TempoEstimate {
                bpm,
                confidence: 1.0,
            }),
            tempo::beat_times(frames, sample_rate, bpm),
        ),
        None => tempo::tempo_and_beats(frames, sample_rate),
    };
    let notes = key::profile(frames, sample_rate);
    let key = match known.tonic {
        Some(tonic) => key::estimate_on(&notes, tonic),
        None => key::estimate_from(&notes),
    };
    let bands = band_shares(frames, sample_rate);
    let spectral = spectral(frames, sample_rate);
    Description {
        seconds: frames.len() as f64 / f64::from(sample_rate),
        sample_rate,
        tempo,
        beats,
        key,
        loudness: loudness::measure_fast(frames, sample_rate),
        bands,
        role: guess_role(&bands, &spectral),
        spectral,
    }
}
