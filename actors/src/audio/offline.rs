//! The offline driver: the mixer run by a plain thread when there is no JACK server.
//!
//! It renders periods at realtime pace (or as fast as it can with `fast`) and writes the
//! master output to 32-bit float WAV files in a directory, starting a new file after every
//! hour of audio. It is the embedded default that lets djinnd play on a machine with no
//! sound card.
//!
//! A recording that cannot be written (a full disk) stops, but the set plays on: the failure
//! shows in the driver's [`Recording`] and as a `health` event, and every
//! [`RETRY_EVERY`] the driver checks the free space (one `statvfs`) and starts a new file
//! once there is room for [`MIN_FREE_SECONDS`] of audio.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use djinn_engine::mix::{OutputBuffers, Processor};
use serde_json::json;
use tokio::sync::watch;

use crate::events::EventSink;

/// How often a failed recording checks whether it can start again.
pub const RETRY_EVERY: Duration = Duration::from_secs(3);

/// Free space, in seconds of audio, a failed recording waits for before it starts again:
/// starting on the last few kilobytes would only fail again at once.
pub const MIN_FREE_SECONDS: u64 = 10;

/// What the offline driver is recording, for `daemon.status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recording {
    /// The file being written now; `None` while recording fails.
    pub path: Option<PathBuf>,
    /// Why nothing is being recorded, while it fails.
    pub error: Option<String>,
}

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
    /// The file being written now, or why none is.
    pub recording: watch::Receiver<Recording>,
}

impl OfflineDriver {
    /// Starts rendering `processor` into files under `dir`, keeping the newest `keep` files;
    /// recording failures and recoveries go to `events`.
    pub fn start(
        processor: Processor,
        dir: PathBuf,
        period: usize,
        fast: bool,
        keep: usize,
        hold: Hold,
        events: EventSink,
    ) -> std::io::Result<OfflineDriver> {
        std::fs::create_dir_all(&dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (recording_tx, recording) = watch::channel(Recording::default());
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
                    let recorder =
                        Recorder::new(dir, processor.sample_rate(), keep, recording_tx, events);
                    run(processor, recorder, period, pace, &stop)
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

fn open(dir: &Path, sample_rate: u32) -> Result<(Writer, PathBuf), String> {
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
    // The header is written (and flushed) now, so a file that cannot be written at all
    // fails here rather than a buffer later.
    let created = hound::WavWriter::create(&path, spec).and_then(|mut w| w.flush().map(|()| w));
    match created {
        Ok(writer) => {
            tracing::info!(path = %path.display(), "offline driver writing");
            Ok((writer, path))
        }
        Err(e) => {
            // NOTE: a header that could not be written leaves an empty or torn file that no
            // player can open; it goes.
            let _ = std::fs::remove_file(&path);
            Err(format!("cannot write {}: {e}", path.display()))
        }
    }
}

/// Bytes free for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` is writable memory of the
    // right type; statvfs fills it only when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The recording side of the offline driver: the file being written, rotation, and what
/// happens when a write fails.
struct Recorder {
    dir: PathBuf,
    sample_rate: u32,
    keep: usize,
    file: Option<(Writer, PathBuf)>,
    in_file: u64,
    since_flush: u64,
    /// While recording fails: since when, and when to look again.
    failed: Option<(Instant, Instant)>,
    state: watch::Sender<Recording>,
    events: EventSink,
}

impl Recorder {
    fn new(
        dir: PathBuf,
        sample_rate: u32,
        keep: usize,
        state: watch::Sender<Recording>,
        events: EventSink,
    ) -> Recorder {
        let mut recorder = Recorder {
            dir,
            sample_rate,
            keep,
            file: None,
            in_file: 0,
            since_flush: 0,
            failed: None,
            state,
            events,
        };
        recorder.start_file();
        recorder
    }

    /// Bytes one second of stereo float audio takes.
    fn bytes_per_second(&self) -> u64 {
        u64::from(self.sample_rate) * 2 * 4
    }

    /// Starts a new file; on failure, records why and when to try again.
    fn start_file(&mut self) {
        match open(&self.dir, self.sample_rate) {
            Ok((writer, path)) => {
                prune(&self.dir, self.keep);
                if let Some((since, _)) = self.failed.take() {
                    let after_s = since.elapsed().as_secs_f64();
                    tracing::info!(path = %path.display(), after_s, "offline recording resumed");
                    self.events.publish(
                        "health",
                        json!({ "kind": "recording_resumed", "path": path,
                                "after_s": (after_s * 10.0).round() / 10.0 }),
                    );
                }
                self.state.send_replace(Recording {
                    path: Some(path.clone()),
                    error: None,
                });
                self.file = Some((writer, path));
                self.in_file = 0;
                self.since_flush = 0;
            }
            Err(error) => self.fail(error, None),
        }
    }

    /// Stops recording after `error`; the set plays on.
    fn fail(&mut self, error: String, path: Option<PathBuf>) {
        // NOTE: dropping the writer closes the file (its last header update fails too, which
        // hound ignores), so deleting it frees its space at once.
        self.file = None;
        let retry = Instant::now() + RETRY_EVERY;
        let first = self.failed.is_none();
        let since = self.failed.map_or_else(Instant::now, |(since, _)| since);
        self.failed = Some((since, retry));
        let shown = format!(
            "{error}; recording stopped (the set plays on) and retries every {} s",
            RETRY_EVERY.as_secs()
        );
        if first {
            tracing::error!(%error, "offline recording failed; the set plays on");
            self.events.publish(
                "health",
                json!({ "kind": "recording_failed", "path": path, "error": error,
                        "retry_s": RETRY_EVERY.as_secs() }),
            );
        }
        self.state.send_replace(Recording {
            path: None,
            error: Some(shown),
        });
    }

    /// Writes one period of the master, rotates, flushes, or retries a failed recording.
    fn write(&mut self, left: &[f32], right: &[f32]) {
        if let Some((due, since)) = self.failed.map(|(since, due)| (due, since)) {
            if Instant::now() >= due {
                let needed = MIN_FREE_SECONDS * self.bytes_per_second();
                match free_bytes(&self.dir) {
                    Some(free) if free < needed => {
                        self.failed = Some((since, Instant::now() + RETRY_EVERY));
                    }
                    _ => self.start_file(),
                }
            }
            return;
        }
        let Some((writer, path)) = &mut self.file else {
            return;
        };
        let mut result = Ok(());
        for (l, r) in left.iter().zip(right) {
            result = writer
                .write_sample(*l)
                .and_then(|()| writer.write_sample(*r));
            if result.is_err() {
                break;
            }
        }
        let frames = left.len() as u64;
        self.in_file += frames;
        self.since_flush += frames;
        // A flush rewrites the header, so the file is playable even if djinnd dies; it is
        // also where a full disk shows first.
        if result.is_ok() && self.since_flush >= u64::from(self.sample_rate) {
            result = writer.flush();
            self.since_flush = 0;
        }
        if let Err(e) = result {
            let path = path.clone();
            self.fail(format!("cannot write {}: {e}", path.display()), Some(path));
            return;
        }
        if self.in_file >= rotate_after(self.sample_rate) {
            if let Some((writer, _)) = self.file.take() {
                let _ = writer.finalize();
            }
            self.start_file();
        }
    }

    fn close(self) {
        if let Some((writer, path)) = self.file {
            match writer.finalize() {
                Ok(()) => tracing::info!(path = %path.display(), "offline recording closed"),
                Err(e) => tracing::error!(error = %e, "offline recording not closed cleanly"),
            }
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
    mut recorder: Recorder,
    period: usize,
    pace: Pace,
    stop: &AtomicBool,
) {
    let sample_rate = processor.sample_rate();
    let mut buffers = OutputBuffers::new(period);
    let mut rendered: u64 = 0;
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
        recorder.write(&buffers.master[0], &buffers.master[1]);
        rendered += period as u64;
        if let Pace::Realtime = pace {
            let due = Duration::from_secs_f64(rendered as f64 / f64::from(sample_rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    recorder.close();
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

    /// A recording that cannot start reports why, and starts once it can.
    #[test]
    fn a_recording_that_cannot_be_written_fails_honestly_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("recordings");
        // A file where the directory should be: nothing can be created in it.
        std::fs::write(&target, b"in the way").unwrap();
        let (events, mut rx) = EventSink::channel(8);
        let (tx, state) = watch::channel(Recording::default());
        let mut recorder = Recorder::new(target.clone(), 48_000, 2, tx, events);
        let failed = state.borrow().clone();
        assert_eq!(failed.path, None);
        assert!(failed.error.unwrap().contains("recordings"));
        assert_eq!(rx.try_recv().unwrap().data["kind"], "recording_failed");
        let silence = vec![0.0f32; 256];
        recorder.write(&silence, &silence);
        assert_eq!(state.borrow().path, None, "no retry before it is due");
        std::fs::remove_file(&target).unwrap();
        std::fs::create_dir(&target).unwrap();
        recorder.failed = recorder.failed.map(|(since, _)| (since, Instant::now()));
        recorder.write(&silence, &silence);
        let resumed = state.borrow().clone();
        assert!(resumed.path.unwrap().starts_with(&target));
        assert_eq!(resumed.error, None);
        assert_eq!(rx.try_recv().unwrap().data["kind"], "recording_resumed");
        recorder.close();
    }
}
