//! Writing stereo audio files, WAV (32-bit float) or FLAC (24-bit), atomically: the file
//! appears under its name only once it is complete.

use std::path::Path;

/// What went wrong writing a WAV file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {message}")]
pub struct WavError {
    pub path: String,
    pub message: String,
}

/// Writes `frames` at `sample_rate` to `path` as 32-bit float stereo WAV.
pub fn write(path: &Path, frames: &[[f32; 2]], sample_rate: u32) -> Result<(), WavError> {
    let err = |e: &dyn std::fmt::Display| WavError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    let write = || -> Result<(), hound::Error> {
        let mut writer = hound::WavWriter::create(&partial, spec)?;
        for f in frames {
            writer.write_sample(f[0])?;
            writer.write_sample(f[1])?;
        }
        writer.finalize()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        err(&e)
    })?;
    std::fs::rename(&partial, path).map_err(|e| err(&e))
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
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut bytes = sink.into_inner();
    // NOTE: flacenc counts the short last block in STREAMINFO's minimum block size, which the
    // format excludes; symphonia then refuses the file. Every other block is full-size.
    if frames.len() > config.block_size && bytes.len() >= 12 && &bytes[..4] == b"fLaC" {
        let (min, max) = bytes[8..12].split_at_mut(2);
        min.copy_from_slice(max);
    }
    let partial = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&partial, &bytes).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        err(&e)
    })?;
    std::fs::rename(&partial, path).map_err(|e| err(&e))
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
