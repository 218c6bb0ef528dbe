//! What djinnd remembers between runs: the active profile and the transport settings.
//!
//! Written atomically (temporary file, fsync, rename) when it changes and at shutdown, so a
//! crash mid-write leaves the previous file whole. A write that fails (a full disk) removes
//! its temporary file, is reported in `daemon.status` and as a `health` event, and is tried
//! again until it succeeds ([`Saving`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use djinn_actors::events::EventSink;
use djinn_engine::music::{Key, Meter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The file name inside the state directory.
pub const FILE: &str = "state.json";

/// The remembered settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub profile: String,
    pub tempo: f64,
    pub meter: Meter,
    pub key: Key,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Reads the saved state; a missing or unreadable file means none (logged when unreadable).
pub fn load(state_dir: &Path) -> Option<SavedState> {
    let path = path(state_dir);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str(&text) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable state file");
            None
        }
    }
}

impl SavedState {
    /// Whether saving `self` over `other` would change anything worth a write: a followed
    /// clock's tempo estimate wanders by hundredths of a BPM.
    fn same_as(&self, other: &SavedState) -> bool {
        self.profile == other.profile
            && (self.tempo - other.tempo).abs() < 0.01
            && self.meter == other.meter
            && self.key == other.key
    }
}

/// Writes the state atomically; on failure the temporary file is removed, so a full disk
/// leaves nothing behind but the previous state.json.
pub fn save(state_dir: &Path, state: &SavedState) -> std::io::Result<()> {
    let path = path(state_dir);
    let tmp = path.with_extension("json.tmp");
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        if let Err(remove) = std::fs::remove_file(&tmp)
            && remove.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %tmp.display(), error = %remove, "cannot remove the temporary state file");
        }
        return Err(e);
    }
    // The rename is durable once the directory entry is.
    std::fs::File::open(state_dir)?.sync_all()
}

/// How keeping state.json is going: what `daemon.status` shows under `state`.
#[derive(Debug, Default)]
pub struct Saving {
    record: Mutex<SaveRecord>,
    /// Held while writing: the periodic save and the one at shutdown share the temporary
    /// file. A separate lock, so that `daemon.status` never waits on an fsync.
    writing: Mutex<()>,
}

#[derive(Debug, Default)]
struct SaveRecord {
    /// What is on disk, as far as djinnd knows.
    saved: Option<SavedState>,
    saved_at: Option<SystemTime>,
    /// Why the last attempt failed, and since when attempts fail.
    error: Option<String>,
    failing_since: Option<(Instant, SystemTime)>,
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl Saving {
    /// A record that starts from what is on disk.
    pub fn new(on_disk: Option<SavedState>) -> Saving {
        Saving {
            record: Mutex::new(SaveRecord {
                saved: on_disk,
                ..SaveRecord::default()
            }),
            writing: Mutex::new(()),
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, SaveRecord> {
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `saved_at`, `error` (null when the last write worked) and `failing_since`.
    pub fn report(&self) -> Value {
        let record = self.record();
        json!({
            "saved_at": record.saved_at.map(rfc3339),
            "error": record.error,
            "failing_since": record.failing_since.map(|(_, at)| rfc3339(at)),
        })
    }

    /// Saves `state` unless it is what was saved last (`force` saves anyway); reports the
    /// first failure and the recovery as `health` events. Blocking: run it off the runtime.
    pub fn save(
        &self,
        state_dir: &Path,
        state: &SavedState,
        force: bool,
        events: &EventSink,
    ) -> std::io::Result<()> {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        {
            let record = self.record();
            let unchanged = record.saved.as_ref().is_some_and(|s| s.same_as(state));
            if unchanged && record.error.is_none() && !force {
                return Ok(());
            }
        }
        let result = save(state_dir, state);
        let mut record = self.record();
        let file = path(state_dir);
        match &result {
            Ok(()) => {
                if let Some((since, _)) = record.failing_since.take() {
                    let after_s = since.elapsed().as_secs_f64();
                    tracing::info!(path = %file.display(), after_s, "state saved again");
                    events.publish(
                        "health",
                        json!({ "kind": "state_saved", "path": file, "after_s": (after_s * 10.0).round() / 10.0 }),
                    );
                }
                record.saved = Some(state.clone());
                record.saved_at = Some(SystemTime::now());
                record.error = None;
            }
            Err(e) => {
                let error = format!("cannot write {}: {e}", file.display());
                if record.failing_since.is_none() {
                    tracing::error!(%error, "state not saved; retrying");
                    record.failing_since = Some((Instant::now(), SystemTime::now()));
                    events.publish(
                        "health",
                        json!({ "kind": "state_not_saved", "path": file, "error": error }),
                    );
                }
                record.error = Some(error);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        let state = SavedState {
            profile: "dub".into(),
            tempo: 72.5,
            meter: Meter::FOUR_FOUR,
            key: "G minor".parse().unwrap(),
        };
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path()), Some(state));
        std::fs::write(path(dir.path()), "{not json").unwrap();
        assert_eq!(load(dir.path()), None);
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_file_and_is_reported_until_it_works() {
        let dir = tempfile::tempdir().unwrap();
        let state = SavedState {
            profile: "dub".into(),
            tempo: 72.5,
            meter: Meter::FOUR_FOUR,
            key: "G minor".parse().unwrap(),
        };
        // A directory where state.json should be makes the rename fail after the temporary
        // file was written.
        std::fs::create_dir(path(dir.path())).unwrap();
        std::fs::write(path(dir.path()).join("x"), b"x").unwrap();
        let (events, mut rx) = EventSink::channel(8);
        let saving = Saving::new(None);
        assert!(saving.save(dir.path(), &state, false, &events).is_err());
        assert!(!dir.path().join("state.json.tmp").exists());
        assert!(
            saving.report()["error"]
                .as_str()
                .unwrap()
                .contains("state.json")
        );
        assert_eq!(rx.try_recv().unwrap().data["kind"], "state_not_saved");
        // Still failing: reported in status, not again as an event.
        assert!(saving.save(dir.path(), &state, false, &events).is_err());
        assert!(rx.try_recv().is_err());
        std::fs::remove_dir_all(path(dir.path())).unwrap();
        saving.save(dir.path(), &state, false, &events).unwrap();
        assert_eq!(load(dir.path()), Some(state));
        assert_eq!(saving.report()["error"], Value::Null);
        assert_eq!(rx.try_recv().unwrap().data["kind"], "state_saved");
    }
}
