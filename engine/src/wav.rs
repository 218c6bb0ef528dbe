//! Writing stereo audio files, WAV (32-bit float) or FLAC (24-bit), atomically: the file
//! appears under its name only once it is complete; and the tempo, length in beats, meter
//! and root a WAV file may carry for hosts that play loops in time ([`LoopInfo`]).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::music::{Meter, PitchClass};

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
    write_with(path, frames, sample_rate, None)
}

/// [`write()`], with `info` (when given) in an `acid` chunk before the samples, so that a
/// DAW or sampler plays the file at its tempo and djinn's library trusts it.
pub fn write_with(
    path: &Path,
    frames: &[[f32; 2]],
    sample_rate: u32,
    info: Option<&LoopInfo>,
) -> Result<(), WavError> {
    let err = |e: &dyn std::fmt::Display| WavError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let header = float_header(frames.len(), sample_rate, info).ok_or_else(|| {
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
/// WAVE_FORMAT_EXTENSIBLE with the IEEE float subformat, front left and right; with `info`,
/// its `acid` chunk between the format and the data. None when the data would not fit a
/// RIFF size.
fn float_header(frames: usize, sample_rate: u32, info: Option<&LoopInfo>) -> Option<Vec<u8>> {
    const CHANNELS: u16 = 2;
    const BYTES_PER_FRAME: u16 = 8;
    const FLOAT_GUID: [u8; 16] = [
        0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b,
        0x71,
    ];
    let data = u32::try_from(frames.checked_mul(usize::from(BYTES_PER_FRAME))?).ok()?;
    let acid = info.map(LoopInfo::chunk);
    let riff = data.checked_add(60 + acid.map_or(0, |c| c.len() as u32))?;
    let mut h = Vec::with_capacity(68 + ACID_CHUNK);
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
    if let Some(acid) = acid {
        h.extend_from_slice(&acid);
    }
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data.to_le_bytes());
    Some(h)
}

/// What a host needs to play a file in time, as ACIDized WAV files carry it in their `acid`
/// chunk (read by DAWs, samplers and libsndfile): tempo, length in beats, meter, the root
/// note, and whether it is a one-shot rather than a loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopInfo {
    /// Tempo, BPM.
    pub bpm: f64,
    /// Length in beats.
    pub beats: u32,
    pub meter: Meter,
    /// The key's tonic, where the audio has one.
    pub root: Option<PitchClass>,
    /// Played once, not looped or stretched to the tempo.
    pub one_shot: bool,
}

/// Bytes of an `acid` chunk: its id and size, then 24 bytes of body.
const ACID_CHUNK: usize = 32;
/// The `acid` chunk's flags.
const ONE_SHOT: u32 = 0x01;
const ROOT_SET: u32 = 0x02;
const STRETCH: u32 = 0x04;
/// The octave the root is written in: MIDI 60 to 71.
const ROOT_OCTAVE: u16 = 60;

impl LoopInfo {
    /// A loop or song `seconds` long at `bpm` in `meter`, in the key of `root`.
    pub fn lasting(bpm: f64, meter: Meter, root: Option<PitchClass>, seconds: f64) -> LoopInfo {
        LoopInfo {
            bpm,
            beats: (seconds * bpm / 60.0).round() as u32,
            meter,
            root,
            one_shot: false,
        }
    }

    /// The `acid` chunk: flags, root note, two fields hosts leave at 0x8000 and 0, beats,
    /// the meter's denominator then numerator, and the tempo, all little-endian.
    fn chunk(&self) -> [u8; ACID_CHUNK] {
        let mut flags = if self.one_shot { ONE_SHOT } else { STRETCH };
        if self.root.is_some() {
            flags |= ROOT_SET;
        }
        let root = self
            .root
            .map_or(ROOT_OCTAVE, |r| ROOT_OCTAVE + u16::from(r.semitones()));
        let mut c = [0u8; ACID_CHUNK];
        c[..4].copy_from_slice(b"acid");
        c[4..8].copy_from_slice(&24u32.to_le_bytes());
        c[8..12].copy_from_slice(&flags.to_le_bytes());
        c[12..14].copy_from_slice(&root.to_le_bytes());
        c[14..16].copy_from_slice(&0x8000u16.to_le_bytes());
        c[16..20].copy_from_slice(&0.0f32.to_le_bytes());
        c[20..24].copy_from_slice(&self.beats.to_le_bytes());
        c[24..26].copy_from_slice(&u16::from(self.meter.beat_unit).to_le_bytes());
        c[26..28].copy_from_slice(&u16::from(self.meter.beats_per_bar).to_le_bytes());
        c[28..32].copy_from_slice(&(self.bpm as f32).to_le_bytes());
        c
    }

    /// Reads an `acid` chunk's body; None when its tempo or meter make no sense.
    fn parse(body: &[u8; 24]) -> Option<LoopInfo> {
        let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        let flags = u32_at(0);
        let bpm = f32::from_le_bytes([body[20], body[21], body[22], body[23]]);
        let meter = Meter {
            beats_per_bar: u8::try_from(u16_at(18)).ok()?,
            beat_unit: u8::try_from(u16_at(16)).ok()?,
        };
        let sane = bpm.is_finite()
            && (1.0..=1000.0).contains(&bpm)
            && (1..=32).contains(&meter.beats_per_bar)
            && [1, 2, 4, 8, 16, 32].contains(&meter.beat_unit);
        sane.then(|| LoopInfo {
            // f32 as written: 123.4 reads back as 123.4, not 123.40000152587891.
            bpm: (f64::from(bpm) * 1e4).round() / 1e4,
            beats: u32_at(12),
            meter,
            root: (flags & ROOT_SET != 0).then(|| PitchClass::new(i32::from(u16_at(4)))),
            one_shot: flags & ONE_SHOT != 0,
        })
    }

    /// The loop information `path` carries, if it is a WAV file with an `acid` chunk that
    /// makes sense. Only the chunk headers are read: the samples are skipped.
    pub fn read(path: &Path) -> std::io::Result<Option<LoopInfo>> {
        let mut file = std::fs::File::open(path)?;
        let mut riff = [0u8; 12];
        if file.read_exact(&mut riff).is_err() || &riff[..4] != b"RIFF" || &riff[8..] != b"WAVE" {
            return Ok(None);
        }
        let mut header = [0u8; 8];
        while file.read_exact(&mut header).is_ok() {
            let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if &header[..4] == b"acid" && size >= 24 {
                let mut body = [0u8; 24];
                file.read_exact(&mut body)?;
                return Ok(LoopInfo::parse(&body));
            }
            // Chunks are padded to an even length.
            let skip = i64::from(size) + i64::from(size & 1);
            file.seek(SeekFrom::Current(skip))?;
        }
        Ok(None)
    }
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

    /// Eight bars of 4/4 at 123.4 BPM, in A.
    fn a_loop_info() -> LoopInfo {
        let info = LoopInfo::lasting(
            123.4,
            Meter {
                beats_per_bar: 4,
                beat_unit: 4,
            },
            Some(PitchClass::new(9)),
            32.0 * 60.0 / 123.4,
        );
        assert_eq!(info.beats, 32);
        info
    }

    #[test]
    fn loop_info_sits_between_the_format_and_the_samples_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let frames: Vec<[f32; 2]> = (0..9_600)
            .map(|i| [(i as f32 * 0.01).sin(), 0.25])
            .collect();
        let (plain, tagged) = (dir.path().join("plain.wav"), dir.path().join("tagged.wav"));
        write(&plain, &frames, 48_000).unwrap();
        let info = a_loop_info();
        write_with(&tagged, &frames, 48_000, Some(&info)).unwrap();
        let (p, t) = (
            std::fs::read(&plain).unwrap(),
            std::fs::read(&tagged).unwrap(),
        );
        // The plain file's bytes with the 32-byte chunk after the format chunk, and the
        // RIFF size grown by as much.
        assert_eq!(t.len(), p.len() + ACID_CHUNK);
        let size = |b: &[u8]| u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        assert_eq!(size(&t), size(&p) + ACID_CHUNK as u32);
        assert_eq!(t[8..60], p[8..60]);
        assert_eq!(&t[60..64], b"acid");
        assert_eq!(t[60 + ACID_CHUNK..], p[60..]);
        assert_eq!(LoopInfo::read(&tagged).unwrap(), Some(info));
        assert_eq!(LoopInfo::read(&plain).unwrap(), None);
        // Both readers djinn and its peers use skip the chunk.
        assert_eq!(crate::decode::read(&tagged).unwrap().frames, frames);
        let mut hound = hound::WavReader::open(&tagged).unwrap();
        let samples: Vec<f32> = hound.samples::<f32>().map(Result::unwrap).collect();
        assert_eq!(samples, frames.as_flattened());
    }

    #[test]
    fn loop_info_keeps_one_shots_missing_roots_and_odd_meters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wav");
        for info in [
            LoopInfo {
                one_shot: true,
                root: None,
                ..a_loop_info()
            },
            LoopInfo {
                meter: Meter {
                    beats_per_bar: 7,
                    beat_unit: 8,
                },
                bpm: 174.0,
                beats: 7,
                ..a_loop_info()
            },
        ] {
            write_with(&path, &[[0.0; 2]; 100], 44_100, Some(&info)).unwrap();
            assert_eq!(LoopInfo::read(&path).unwrap(), Some(info));
        }
    }

    #[test]
    fn files_without_sensible_loop_info_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let flac = dir.path().join("x.flac");
        write_audio(&flac, &[[0.1; 2]; 4_800], 48_000).unwrap();
        assert_eq!(LoopInfo::read(&flac).unwrap(), None);
        // A tempo of zero is a chunk some tools leave empty: no information.
        let wav = dir.path().join("x.wav");
        let info = LoopInfo {
            bpm: 0.0,
            ..a_loop_info()
        };
        write_with(&wav, &[[0.1; 2]; 4_800], 48_000, Some(&info)).unwrap();
        assert_eq!(LoopInfo::read(&wav).unwrap(), None);
        let short = dir.path().join("short.wav");
        std::fs::write(&short, b"RIFF\x04\x00\x00\x00WAVEacid").unwrap();
        assert_eq!(LoopInfo::read(&short).unwrap(), None);
        assert!(LoopInfo::read(&dir.path().join("missing.wav")).is_err());
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
