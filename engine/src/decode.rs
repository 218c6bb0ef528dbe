//! Reading audio files into stereo f32 at the session's rate.
//!
//! Any format symphonia decodes (WAV 16/24/32-bit, FLAC, Ogg Vorbis, MP3, …); mono is
//! spread to both sides, extra channels beyond two are dropped. Rate conversion uses
//! rubato's FFT resampler, which is exact for the fixed ratios between common rates.
//!
//! Audio that enters djinn holds only finite samples: a NaN or an infinity in a float file
//! or a client's frames would spread through every filter, effect and sum it meets, so
//! [`zero_nonfinite`] turns each into silence, counted, before anything else sees it (a
//! resampler would smear one over a whole window). Every decode goes through it; other
//! entries (a client's frames, a generated buffer) call it themselves.

use std::path::Path;
use std::sync::Arc;

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// Decoded audio: stereo frames and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub sample_rate: u32,
    pub frames: Vec<[f32; 2]>,
    /// The file's non-finite samples, zeroed.
    pub nonfinite: NonFinite,
}

/// Non-finite samples (NaN, ±infinity) found in audio and replaced with silence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NonFinite {
    /// Samples zeroed (a frame of two such samples counts two).
    pub samples: u64,
    /// The frame the first was in, from the start of the audio.
    pub first_frame: Option<u64>,
}

impl NonFinite {
    /// Whether there were none.
    pub fn is_none(&self) -> bool {
        self.samples == 0
    }

    /// Where the first was, in seconds at `sample_rate`.
    pub fn first_s(&self, sample_rate: u32) -> Option<f64> {
        self.first_frame
            .map(|frame| frame as f64 / f64::from(sample_rate.max(1)))
    }

    /// These and `later`, found `offset` frames further on.
    fn and(self, later: NonFinite, offset: u64) -> NonFinite {
        NonFinite {
            samples: self.samples + later.samples,
            first_frame: self
                .first_frame
                .or(later.first_frame.map(|frame| frame + offset)),
        }
    }
}

/// Replaces every non-finite sample (NaN, ±infinity) of `samples`, interleaved with
/// `channels` to a frame, with silence, and says how many there were and in which frame
/// the first was. Clean audio costs one vectorised pass ([`crate::dsp::all_finite`]) per
/// stretch; only a stretch that holds such a sample is looked at sample by sample.
pub fn zero_nonfinite(samples: &mut [f32], channels: usize) -> NonFinite {
    const STRETCH: usize = 4096;
    let channels = channels.max(1);
    let mut found = NonFinite::default();
    for (index, stretch) in samples.chunks_mut(STRETCH).enumerate() {
        if crate::dsp::all_finite(stretch) {
            continue;
        }
        for (i, sample) in stretch.iter_mut().enumerate() {
            if !sample.is_finite() {
                *sample = 0.0;
                found.samples += 1;
                let frame = (index * STRETCH + i) / channels;
                found.first_frame.get_or_insert(frame as u64);
            }
        }
    }
    found
}

/// Shared stereo frames with their non-finite samples zeroed: the same frames where there
/// are none (one pass, no copy), a cleaned copy otherwise.
pub fn zero_nonfinite_shared(frames: Arc<[[f32; 2]]>) -> (Arc<[[f32; 2]]>, NonFinite) {
    if crate::dsp::all_finite(frames.as_flattened()) {
        return (frames, NonFinite::default());
    }
    let mut copy = frames.to_vec();
    let found = zero_nonfinite(copy.as_flattened_mut(), 2);
    (copy.into(), found)
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    /// symphonia does not recognise the format, or the data is corrupt.
    #[error("cannot decode {path}: {message}")]
    Format { path: String, message: String },
    /// The file holds no audio.
    #[error("{path} contains no audio")]
    Empty { path: String },
    /// Rate conversion failed.
    #[error("cannot resample from {from} Hz to {to} Hz: {message}")]
    Resample { from: u32, to: u32, message: String },
    /// The file is longer than the caller allows ([`read_capped`]).
    #[error(
        "{path} is longer than the {max_seconds} s allowed{}",
        seconds.map(|s| format!(" ({s:.1} s)")).unwrap_or_default()
    )]
    TooLong {
        path: String,
        /// Its length, where the container tells it.
        seconds: Option<f64>,
        max_seconds: f64,
    },
}

/// What a file's container says of its audio before any of it is decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    /// 0 where the container does not say.
    pub sample_rate: u32,
    /// Its length, where the container tells it.
    pub seconds: Option<f64>,
}

/// Decodes a whole file.
pub fn read(path: &Path) -> Result<Decoded, DecodeError> {
    read_capped(path, f64::INFINITY)
}

/// Decodes a whole file no longer than `max_seconds`: one whose container says it is longer
/// is refused before anything is decoded, and one that does not say is refused as soon as
/// decoding passes the limit, so a long file never costs more than `max_seconds` of audio.
pub fn read_capped(path: &Path, max_seconds: f64) -> Result<Decoded, DecodeError> {
    let mut frames = Vec::new();
    let (sample_rate, nonfinite) =
        decode_with(path, max_seconds, |interleaved, channels, _, expected| {
            // Reserved up front where the container says how long it is: growing a vector of
            // a whole song by doubling copies it several times over.
            if frames.is_empty() {
                frames.reserve(expected);
            }
            frames.extend(interleaved.chunks_exact(channels).map(|frame| match frame {
                [mono] => [*mono, *mono],
                [l, r, ..] => [*l, *r],
                [] => [0.0, 0.0],
            }));
        })?;
    Ok(Decoded {
        sample_rate,
        frames,
        nonfinite,
    })
}

/// Decodes a whole file to its mono sum (the mean of its first two channels, or its one
/// channel), handing `each` the file's rate and every packet's samples as they are decoded:
/// for analysis that listens in mono, which need never hold the file. Returns the rate and
/// the length in frames.
pub fn for_each_mono(
    path: &Path,
    mut each: impl FnMut(u32, &[f32]),
) -> Result<(u32, usize), DecodeError> {
    let mut mono = Vec::new();
    let mut frames = 0;
    let (rate, _) = decode_with(path, f64::INFINITY, |interleaved, channels, rate, _| {
        mono.clear();
        mono.extend(interleaved.chunks_exact(channels).map(|frame| match frame {
            [one] => *one,
            [l, r, ..] => 0.5 * (l + r),
            [] => 0.0,
        }));
        frames += mono.len();
        each(rate, &mono);
    })?;
    Ok((rate, frames))
}

/// Reads what the container says of the file's audio (rate, length), decoding nothing.
pub fn probe(path: &Path) -> Result<Header, DecodeError> {
    let opened = open(path)?;
    let rate = opened.params.sample_rate.unwrap_or(0);
    Ok(Header {
        sample_rate: rate,
        seconds: opened
            .frames
            .filter(|_| rate > 0)
            .map(|n| n as f64 / f64::from(rate)),
    })
}

/// A file opened and probed: its format reader, audio track and codec parameters.
struct Opened {
    name: String,
    format: Box<dyn symphonia::core::formats::FormatReader>,
    track_id: u32,
    /// The length the container gives, in frames.
    frames: Option<u64>,
    params: symphonia::core::codecs::audio::AudioCodecParameters,
}

/// Opens a regular file for decoding. The open does not block: a FIFO (or a device) put
/// where a file was expected is refused at once instead of waiting for a writer forever.
fn open_regular(path: &Path, name: &str) -> Result<std::fs::File, DecodeError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let refuse = |source| DecodeError::Open {
        path: name.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(refuse)?;
    // Checked on the open file, not the name, so nothing can be swapped in between.
    if !file.metadata().map_err(refuse)?.is_file() {
        return Err(refuse(std::io::Error::other("not a regular file")));
    }
    Ok(file)
}

fn open(path: &Path) -> Result<Opened, DecodeError> {
    let name = path.display().to_string();
    let format_error = |message: String| DecodeError::Format {
        path: name.clone(),
        message,
    };
    let file = open_regular(path, &name)?;
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let format = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| format_error(e.to_string()))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| format_error("no audio track".into()))?;
    let track_id = track.id;
    let frames = track.num_frames;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| format_error("no audio codec parameters".into()))?
        .clone();
    Ok(Opened {
        name,
        format,
        track_id,
        frames,
        params,
    })
}

/// Decodes `path` packet by packet, at most `max_seconds` of it: `push` gets each packet's
/// interleaved samples with their channel count, their rate, and the file's length in frames
/// when the container tells it (else 0; never more than the limit), with every non-finite
/// sample zeroed. Returns the sample rate and what was zeroed.
fn decode_with(
    path: &Path,
    max_seconds: f64,
    mut push: impl FnMut(&[f32], usize, u32, usize),
) -> Result<(u32, NonFinite), DecodeError> {
    let Opened {
        name,
        mut format,
        track_id,
        frames: track_frames,
        params,
    } = open(path)?;
    let format_error = |message: String| DecodeError::Format {
        path: name.clone(),
        message,
    };
    let too_long = |seconds| DecodeError::TooLong {
        path: name.clone(),
        seconds,
        max_seconds,
    };
    let mut sample_rate = params.sample_rate.unwrap_or(0);
    // The most frames allowed at `rate`, +1 so that rounding never refuses a file exactly
    // at the limit.
    let cap = |rate: u32| ((max_seconds * f64::from(rate)) as usize).saturating_add(1);
    if let Some(n) = track_frames
        && sample_rate > 0
        && n as f64 > max_seconds * f64::from(sample_rate)
    {
        return Err(too_long(Some(n as f64 / f64::from(sample_rate))));
    }
    let track_frames = track_frames.map_or(0, |n| {
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(1 << 28);
        if sample_rate > 0 {
            n.min(cap(sample_rate))
        } else {
            0
        }
    });
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| format_error(e.to_string()))?;
    let mut frames = 0usize;
    let mut interleaved: Vec<f32> = Vec::new();
    let mut nonfinite = NonFinite::default();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break;
            }
            Err(e) => return Err(format_error(e.to_string())),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buffer = match decoder.decode(&packet) {
            Ok(buffer) => buffer,
            // A damaged packet is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(format_error(e.to_string())),
        };
        let spec = buffer.spec();
        sample_rate = spec.rate();
        let channels = spec.channels().count().max(1);
        interleaved.resize(buffer.samples_interleaved(), 0.0);
        buffer.copy_to_slice_interleaved(&mut interleaved);
        let zeroed = zero_nonfinite(&mut interleaved, channels);
        nonfinite = nonfinite.and(zeroed, frames as u64);
        frames += interleaved.len() / channels;
        if frames > cap(sample_rate) {
            return Err(too_long(None));
        }
        push(&interleaved, channels, sample_rate, track_frames);
    }
    if frames == 0 || sample_rate == 0 {
        return Err(DecodeError::Empty { path: name });
    }
    Ok((sample_rate, nonfinite))
}

/// Converts stereo frames from one rate to another; the output has
/// `round(len · to / from)` frames.
pub fn resample(frames: &[[f32; 2]], from: u32, to: u32) -> Result<Vec<[f32; 2]>, DecodeError> {
    if from == to || frames.is_empty() {
        return Ok(frames.to_vec());
    }
    let error = |message: String| DecodeError::Resample { from, to, message };
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 2, FixedSync::Both)
        .map_err(|e| error(e.to_string()))?;
    let needed = resampler.process_all_needed_output_len(frames.len());
    let mut output = vec![0.0f32; needed * 2];
    let input_adapter = InterleavedSlice::new(frames.as_flattened(), 2, frames.len())
        .map_err(|e| error(e.to_string()))?;
    let mut output_adapter =
        InterleavedSlice::new_mut(&mut output, 2, needed).map_err(|e| error(e.to_string()))?;
    let (_, produced) = resampler
        .process_all_into_buffer(&input_adapter, &mut output_adapter, frames.len(), None)
        .map_err(|e| error(e.to_string()))?;
    let expected = ((frames.len() as f64) * f64::from(to) / f64::from(from)).round() as usize;
    let len = expected.min(produced);
    Ok(output
        .chunks_exact(2)
        .take(len)
        .map(|f| [f[0], f.get(1).copied().unwrap_or(0.0)])
        .collect())
}

/// Decodes a file and brings it to `rate`.
pub fn read_at(path: &Path, rate: u32) -> Result<Vec<[f32; 2]>, DecodeError> {
    let decoded = read(path)?;
    resample(&decoded.frames, decoded.sample_rate, rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[f32]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for s in samples {
            w.write_sample((s * 32767.0) as i16).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn a_file_over_the_cap_is_refused_from_its_header_and_one_under_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.wav");
        write_wav(&path, 8_000, 1, &vec![0.1; 8_000 * 3]);
        assert_eq!(
            probe(&path).unwrap(),
            Header {
                sample_rate: 8_000,
                seconds: Some(3.0)
            }
        );
        match read_capped(&path, 2.5) {
            Err(DecodeError::TooLong { seconds, .. }) => assert_eq!(seconds, Some(3.0)),
            other => panic!("expected TooLong, got {other:?}"),
        }
        assert_eq!(read_capped(&path, 3.0).unwrap().frames.len(), 24_000);
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("loop.wav");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        // With no writer, a blocking open would never return.
        match read(&fifo) {
            Err(DecodeError::Open { source, .. }) => {
                assert!(
                    source.to_string().contains("not a regular file"),
                    "{source}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_mono_16_bit_wav_decodes_to_stereo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mono.wav");
        let samples: Vec<f32> = (0..4410)
            .map(|i| ((i % 100) as f32 / 100.0) - 0.5)
            .collect();
        write_wav(&path, 44_100, 1, &samples);
        let decoded = read(&path).unwrap();
        assert_eq!(decoded.sample_rate, 44_100);
        assert_eq!(decoded.frames.len(), 4410);
        assert!((decoded.frames[10][0] - samples[10]).abs() < 1e-3);
        assert_eq!(decoded.frames[10][0], decoded.frames[10][1]);
    }

    #[test]
    fn resampling_keeps_length_pitch_and_level() {
        let from = 44_100;
        let frames: Vec<[f32; 2]> = (0..44_100)
            .map(|i| {
                let v = 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / from as f32).sin();
                [v, -v]
            })
            .collect();
        let out = resample(&frames, from, 48_000).unwrap();
        assert_eq!(out.len(), 48_000);
        // Count zero crossings of the middle second: 1 kHz has 2,000 per second.
        let mid = &out[4_000..44_000];
        let crossings = mid
            .windows(2)
            .filter(|w| (w[0][0] < 0.0) != (w[1][0] < 0.0))
            .count();
        let expected = 2.0 * 1000.0 * mid.len() as f32 / 48_000.0;
        assert!(
            (crossings as f32 - expected).abs() <= 2.0,
            "{crossings} vs {expected}"
        );
        let peak = mid.iter().map(|f| f[0].abs()).fold(0.0, f32::max);
        assert!((peak - 0.5).abs() < 0.01, "{peak}");
        assert!(
            mid.iter().all(|f| (f[0] + f[1]).abs() < 1e-3),
            "channels stay apart"
        );
    }

    #[test]
    fn non_finite_samples_are_zeroed_counted_and_located() {
        let mut samples = vec![0.25f32; 20_000];
        samples[9_001] = f32::NAN;
        samples[12_000] = f32::INFINITY;
        samples[12_001] = f32::NEG_INFINITY;
        let found = zero_nonfinite(&mut samples, 2);
        assert_eq!(found.samples, 3);
        assert_eq!(found.first_frame, Some(4_500));
        assert_eq!(found.first_s(48_000), Some(4_500.0 / 48_000.0));
        assert!(samples.iter().all(|s| s.is_finite()));
        assert_eq!(samples[9_001], 0.0);
        assert_eq!(samples[9_000], 0.25);
        let clean = zero_nonfinite(&mut samples, 2);
        assert!(clean.is_none());
        assert_eq!(clean.first_frame, None);
    }

    #[test]
    fn a_float_wav_with_a_nan_decodes_with_it_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..48_000 {
            let s = if i == 30_001 { f32::NAN } else { 0.1 };
            w.write_sample(s).unwrap();
            w.write_sample(0.1f32).unwrap();
        }
        w.finalize().unwrap();
        let decoded = read(&path).unwrap();
        assert_eq!(decoded.nonfinite.samples, 1);
        assert_eq!(decoded.nonfinite.first_frame, Some(30_001));
        assert!(decoded.frames.iter().flatten().all(|s| s.is_finite()));
        assert_eq!(decoded.frames[30_001], [0.0, 0.1]);
        let shared: Arc<[[f32; 2]]> = vec![[f32::NAN, 0.5], [0.5, 0.5]].into();
        let (clean, found) = zero_nonfinite_shared(shared);
        assert_eq!((found.samples, found.first_frame), (1, Some(0)));
        assert_eq!(&clean[..], &[[0.0, 0.5], [0.5, 0.5]]);
    }

    #[test]
    fn a_missing_or_bogus_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(&dir.path().join("absent.wav")).unwrap_err();
        assert!(err.to_string().starts_with("cannot open"), "{err}");
        let bogus = dir.path().join("bogus.wav");
        std::fs::write(&bogus, b"definitely not audio").unwrap();
        let err = read(&bogus).unwrap_err();
        assert!(err.to_string().starts_with("cannot decode"), "{err}");
    }
}
