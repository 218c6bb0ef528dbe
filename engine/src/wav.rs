//! Writing stereo audio to WAV files (32-bit float), atomically: the file appears under its
//! name only once it is complete.

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
}
