//! The offline driver: the mixer run by a plain thread when there is no JACK server.
//!
//! It renders periods at realtime pace (or as fast as it can with `fast`) and writes the
//! master output to 32-bit float WAV files in a directory, starting a new file after every
//! hour of audio. It is the embedded default that lets djinnd play on a machine with no
//! sound card.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use djinn_engine::mix::{OutputBuffers, Processor};
use tokio::sync::watch;

/// Frames of audio per file before a new one starts.
pub fn rotate_after(sample_rate: u32) -> u64 {
    u64::from(sample_rate) * 3600
}

/// How far a `fast` offline driver may run ahead: it does not start a period that would
/// cross this transport beat. The director holds it at the next bar it has not yet
/// scheduled, so a faster-than-realtime render never outruns the music it is waiting for,
/// as an offline bounce waits for its plugins. A realtime driver ignores it.
#[derive(Debug, Clone)]
pub struct Hold(Arc<AtomicU64>);

impl Default for Hold {
    fn default() -> Self {
        Hold(Arc::new(AtomicU64::new(f64::INFINITY.to_bits())))
    }
}

impl Hold {
    /// Lets the driver run up to `beat`; `None` releases it.
    pub fn set(&self, beat: Option<f64>) {
        let beat = beat.unwrap_or(f64::INFINITY);
        self.0.store(beat.to_bits(), Ordering::Release);
    }

    pub fn beat(&self) -> Option<f64> {
        let beat = f64::from_bits(self.0.load(Ordering::Acquire));
        beat.is_finite().then_some(beat)
    }
}

/// A running offline driver; dropping it stops the thread and closes the file.
pub struct OfflineDriver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The file being written now.
    pub recording: watch::Receiver<Option<PathBuf>>,
}

impl OfflineDriver {
    /// Starts rendering `processor` into files under `dir`, keeping the newest `keep` files.
    pub fn start(
        processor: Processor,
        dir: PathBuf,
        period: usize,
        fast: bool,
        keep: usize,
        hold: Hold,
    ) -> std::io::Result<OfflineDriver> {
        std::fs::create_dir_all(&dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (recording_tx, recording) = watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("djinn-offline".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    let pace = if fast {
                        Pace::Fast(hold)
                    } else {
                        Pace::Realtime
                    };
                    run(processor, &dir, period, pace, keep, &stop, &recording_tx)
                }
            })?;
        Ok(OfflineDriver {
            stop,
            thread: Some(thread),
            recording,
        })
    }
}

impl Drop for OfflineDriver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Writer = hound::WavWriter<std::io::BufWriter<std::fs::File>>;

fn open(dir: &Path, sample_rate: u32) -> Option<(Writer, PathBuf)> {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "-");
    let path = dir.join(format!("djinn-{stamp}.wav"));
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    match hound::WavWriter::create(&path, spec) {
        Ok(writer) => {
            tracing::info!(path = %path.display(), "offline driver writing");
            Some((writer, path))
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot write the offline recording");
            None
        }
    }
}

/// Deletes all but the newest `keep` recordings in `dir` (an hour of stereo float audio is
/// about 1.4 GB: a forgotten daemon must not fill the disk).
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("djinn-") && n.ends_with(".wav"))
        })
        .collect();
    // The names carry their start time, so name order is age order.
    files.sort();
    let excess = files.len().saturating_sub(keep.max(1));
    for old in files.into_iter().take(excess) {
        match std::fs::remove_file(&old) {
            Ok(()) => tracing::info!(path = %old.display(), "old recording removed"),
            Err(e) => {
                tracing::warn!(path = %old.display(), error = %e, "cannot remove old recording")
            }
        }
    }
}

enum Pace {
    Realtime,
    Fast(Hold),
}

fn run(
    mut processor: Processor,
    dir: &Path,
    period: usize,
    pace: Pace,
    keep: usize,
    stop: &AtomicBool,
    recording: &watch::Sender<Option<PathBuf>>,
) {
    let sample_rate = processor.sample_rate();
    let mut buffers = OutputBuffers::new(period);
    let mut file = open(dir, sample_rate);
    prune(dir, keep);
    recording.send_replace(file.as_ref().map(|(_, p)| p.clone()));
    let mut in_file: u64 = 0;
    let mut rendered: u64 = 0;
    let mut since_flush: u64 = 0;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Pace::Fast(hold) = &pace
            && let Some(limit) = hold.beat()
        {
            let t = processor.transport();
            let next = t.beats() + period as f64 * t.tempo / (60.0 * f64::from(sample_rate));
            if t.rolling && next > limit {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        processor.process(&mut buffers.outputs());
        if let Some((writer, _)) = &mut file {
            let mut ok = true;
            for (l, r) in buffers.master[0].iter().zip(&buffers.master[1]) {
                ok &= writer.write_sample(*l).is_ok() && writer.write_sample(*r).is_ok();
            }
            if !ok {
                tracing::error!("offline recording write failed; recording stops");
                file = None;
                recording.send_replace(None);
            }
        }
        rendered += period as u64;
        in_file += period as u64;
        since_flush += period as u64;
        if since_flush >= u64::from(sample_rate) {
            // A flush rewrites the header, so the file is playable even if djinnd dies.
            if let Some((writer, _)) = &mut file {
                let _ = writer.flush();
            }
            since_flush = 0;
        }
        if in_file >= rotate_after(sample_rate) {
            if let Some((writer, _)) = file.take() {
                let _ = writer.finalize();
            }
            file = open(dir, sample_rate);
            prune(dir, keep);
            recording.send_replace(file.as_ref().map(|(_, p)| p.clone()));
            in_file = 0;
        }
        if let Pace::Realtime = pace {
            let due = Duration::from_secs_f64(rendered as f64 / f64::from(sample_rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    if let Some((writer, path)) = file {
        match writer.finalize() {
            Ok(()) => tracing::info!(path = %path.display(), "offline recording closed"),
            Err(e) => tracing::error!(error = %e, "offline recording not closed cleanly"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_recordings_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for hour in 10..15 {
            let name = format!("djinn-2026-11-23T{hour}-00-00Z.wav");
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "djinn-2026-11-23T13-00-00Z.wav",
                "djinn-2026-11-23T14-00-00Z.wav",
                "notes.txt"
            ]
        );
    }
}
