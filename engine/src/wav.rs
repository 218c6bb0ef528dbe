//! Writing stereo audio files, WAV (32-bit float) or FLAC (24-bit), atomically: the file
//! appears under its name only once it is complete.

use std::io::Write;
use std::path::Path;

/// What went wrong writing a WAV file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {message}")]
pub struct WavError {
    pub path: String,
    pub message: String,
}

/// Writes `frames` at `sample_rate` to `path` as 32-bit float stereo WAV.
///
/// The bytes are hound's (a test checks them against it): its header, then the samples
/// written in bulk, since hound takes floats one call at a time and that was a tenth of
/// rendering a song.
pub fn write(path: &Path, frames: &[[f32; 2]], sample_rate: u32) -> Result<(), WavError> {
    let err = |e: &dyn std::fmt::Display| WavError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let header = float_header(frames.len(), sample_rate).ok_or_else(|| {
        err(&format!(
            "{} frames is more than a WAV file holds (4 GiB)",
            frames.len()
        ))
    })?;
    crate::files::write_atomically(path, |file| {
        file.write_all(&header)?;
        let mut bytes = Vec::with_capacity(WRITE_SAMPLES * 4);
        for samples in frames.as_flattened().chunks(WRITE_SAMPLES) {
            bytes.clear();
            bytes.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
            file.write_all(&bytes)?;
        }
        Ok(())
    })
    .map_err(|e| err(&e))
}

/// Samples converted and written at a time.
const WRITE_SAMPLES: usize = 1 << 16;

/// The header hound writes for `frames` of 32-bit float stereo at `sample_rate`:
/// WAVE_FORMAT_EXTENSIBLE with the IEEE float subformat, front left and right. None when
/// the data would not fit a RIFF size.
fn float_header(frames: usize, sample_rate: u32) -> Option<[u8; 68]> {
    const CHANNELS: u16 = 2;
    const BYTES_PER_FRAME: u16 = 8;
    const FLOAT_GUID: [u8; 16] = [
        0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b,
        0x71,
    ];
    let data = u32::try_from(frames.checked_mul(usize::from(BYTES_PER_FRAME))?).ok()?;
    let riff = data.checked_add(60)?;
    let mut h = Vec::with_capacity(68);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&riff.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&40u32.to_le_bytes());
    h.extend_from_slice(&0xfffeu16.to_le_bytes());
    h.extend_from_slice(&CHANNELS.to_le_bytes());
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * u32::from(BYTES_PER_FRAME)).to_le_bytes());
    h.extend_from_slice(&BYTES_PER_FRAME.to_le_bytes());
    h.extend_from_slice(&32u16.to_le_bytes()); // bits per sample
    h.extend_from_slice(&22u16.to_le_bytes()); // extension size
    h.extend_from_slice(&32u16.to_le_bytes()); // valid bits
    h.extend_from_slice(&3u32.to_le_bytes()); // channel mask: front left, front right
    h.extend_from_slice(&FLOAT_GUID);
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data.to_le_bytes());
    h.try_into().ok()
}

/// Writes `frames` as 24-bit FLAC (flacenc, pure Rust), atomically like [`write()`].
pub fn write_flac(path: &Path, frames: &[[f32; 2]], sample_rate: u32) -> Result<(), WavError> {
    use flacenc::component::BitRepr;
    use flacenc::error::Verify;
    let err = |e: &dyn std::fmt::Display| WavError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    const FULL_SCALE: f32 = 8_388_607.0;
    let samples: Vec<i32> = frames
        .as_flattened()
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * FULL_SCALE).round() as i32)
        .collect();
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|(_, e)| err(&format!("{e:?}")))?;
    let source = flacenc::source::MemSource::from_samples(&samples, 2, 24, sample_rate as usize);
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|e| err(&format!("{e:?}")))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream
        .write(&mut sink)
        .map_err(|e| err(&format!("{e:?}")))?;
    let mut bytes = sink.into_inner();
    // NOTE: flacenc counts the short last block in STREAMINFO's minimum block size, which the
    // format excludes; symphonia then refuses the file. Every other block is full-size.
    if frames.len() > config.block_size && bytes.len() >= 12 && &bytes[..4] == b"fLaC" {
        let (min, max) = bytes[8..12].split_at_mut(2);
        min.copy_from_slice(max);
    }
    crate::files::write_atomically(path, |file| file.write_all(&bytes)).map_err(|e| err(&e))
}

/// The output formats, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Wav,
    Flac,
}

impl Format {
    /// `.flac` is FLAC, `.wav` (or no extension) WAV; anything else is refused.
    pub fn for_path(path: &Path) -> Result<Format, WavError> {
        match path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .as_deref()
        {
            Some("flac") => Ok(Format::Flac),
            Some("wav") | None => Ok(Format::Wav),
            Some(other) => Err(WavError {
                path: path.display().to_string(),
                message: format!("cannot write .{other} files: use .wav or .flac"),
            }),
        }
    }
}

/// Writes `frames` as WAV or FLAC, by `path`'s extension.
pub fn write_audio(path: &Path, frames: &[[f32; 2]], sample_rate: u32) -> Result<(), WavError> {
    match Format::for_path(path)? {
        Format::Wav => write(path, frames, sample_rate),
        Format::Flac => write_flac(path, frames, sample_rate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wav");
        let frames: Vec<[f32; 2]> = (0..4800).map(|i| [i as f32 / 4800.0, -0.5]).collect();
        write(&path, &frames, 48_000).unwrap();
        let back = crate::decode::read(&path).unwrap();
        assert_eq!(back.sample_rate, 48_000);
        assert_eq!(back.frames, frames);
        assert!(!dir.path().join(".x.wav.partial").exists());
    }

    #[test]
    fn the_bytes_are_the_ones_hound_writes() {
        let dir = tempfile::tempdir().unwrap();
        for (len, rate) in [(0, 48_000), (1, 44_100), (70_001, 96_000)] {
            let frames: Vec<[f32; 2]> = (0..len)
                .map(|i| [(i as f32 * 0.003).sin(), -(i as f32) * 1e-6])
                .collect();
            let ours = dir.path().join("ours.wav");
            write(&ours, &frames, rate).unwrap();
            let theirs = dir.path().join("hound.wav");
            let spec = hound::WavSpec {
                channels: 2,
                sample_rate: rate,
                bits_per_sample: 32,
                sample_format: hound::SampleFormat::Float,
            };
            let mut writer = hound::WavWriter::create(&theirs, spec).unwrap();
            for f in &frames {
                writer.write_sample(f[0]).unwrap();
                writer.write_sample(f[1]).unwrap();
            }
            writer.finalize().unwrap();
            assert!(
                std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
                "{len} frames at {rate} Hz"
            );
        }
    }

    #[test]
    fn flac_round_trips_to_24_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.flac");
        let frames: Vec<[f32; 2]> = (0..48_000)
            .map(|i| {
                let v = (i as f32 * 0.01).sin() * 0.8;
                [v, -v * 0.5]
            })
            .collect();
        write_audio(&path, &frames, 44_100).unwrap();
        let back = crate::decode::read(&path).unwrap();
        assert_eq!(back.sample_rate, 44_100);
        assert_eq!(back.frames.len(), frames.len());
        for (a, b) in back.frames.iter().zip(&frames) {
            assert!((a[0] - b[0]).abs() < 2e-7 && (a[1] - b[1]).abs() < 2e-7);
        }
        assert!(write_audio(&dir.path().join("x.mp3"), &frames, 44_100).is_err());
    }
}
