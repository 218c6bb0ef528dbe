//! What djinnd remembers between runs: the active profile and the transport settings.
//!
//! Written atomically (temporary file, fsync, rename) at shutdown, so a crash mid-write
//! leaves the previous file whole.

use std::io::Write;
use std::path::{Path, PathBuf};

use djinn_engine::music::{Key, Meter};
use serde::{Deserialize, Serialize};

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

/// Writes the state atomically.
pub fn save(state_dir: &Path, state: &SavedState) -> std::io::Result<()> {
    let path = path(state_dir);
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    // The rename is durable once the directory entry is.
    std::fs::File::open(state_dir)?.sync_all()
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
}
