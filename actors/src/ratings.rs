//! The ratings journal: every rating a listener gives (`rate`), with what was playing, is
//! appended to `STATE/ratings.jsonl` and synced to disk before it is acknowledged. The DJ
//! script sees a summary of the recent ones; the whole journal is the record a learned
//! profile is built from.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Ratings kept in memory for the summary.
const KEEP: usize = 100;
/// Ratings the summary averages over.
const AVERAGE_OVER: usize = 20;
/// Ratings the summary lists.
const LIST: usize = 8;

/// One rating and the moment it was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// RFC 3339 UTC.
    pub time: String,
    /// 1 (poor) to 5 (great).
    pub score: f64,
    pub comment: Option<String>,
    pub style: String,
    /// The DJ's phrase number, when a set played.
    pub phrase: Option<u64>,
    /// The transport bar, counted from 1.
    pub bar: u64,
    /// What played: `role: prompt` per layer.
    pub layers: Vec<String>,
}

/// The journal file and the recent ratings.
#[derive(Debug)]
pub struct RatingsJournal {
    path: PathBuf,
    recent: VecDeque<Rating>,
    count: u64,
    /// The file ends in a torn line: the next rating starts on a line of its own.
    torn: bool,
}

impl RatingsJournal {
    /// Opens the journal at `path`, reading what it holds; unreadable lines are skipped and
    /// logged (the file is appended to, never rewritten).
    pub fn open(path: &Path) -> RatingsJournal {
        let mut journal = RatingsJournal {
            path: path.to_owned(),
            recent: VecDeque::new(),
            count: 0,
            torn: false,
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return journal;
        };
        journal.torn = !text.is_empty() && !text.ends_with('\n');
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str::<Rating>(line) {
                Ok(rating) => journal.remember(rating),
                Err(e) => {
                    tracing::warn!(path = %path.display(), line = n + 1, error = %e, "rating skipped")
                }
            }
        }
        journal
    }

    fn remember(&mut self, rating: Rating) {
        self.count += 1;
        self.recent.push_back(rating);
        while self.recent.len() > KEEP {
            self.recent.pop_front();
        }
    }

    /// Appends `rating` to the file and syncs it, then counts it.
    pub fn append(&mut self, rating: Rating) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut line = if self.torn {
            "\n".to_owned()
        } else {
            String::new()
        };
        line += &serde_json::to_string(&rating).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        self.torn = false;
        self.remember(rating);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `count` (all time), `average` (of the last 20), `recent` (the last 8, newest last).
    pub fn summary(&self) -> Value {
        let last: Vec<&Rating> = self.recent.iter().rev().take(AVERAGE_OVER).collect();
        let average = (!last.is_empty())
            .then(|| last.iter().map(|r| r.score).sum::<f64>() / last.len() as f64)
            .map(|a| (a * 100.0).round() / 100.0);
        let recent: Vec<Value> = self
            .recent
            .iter()
            .rev()
            .take(LIST)
            .rev()
            .map(|r| {
                json!({ "score": r.score, "comment": r.comment, "style": r.style,
                        "phrase": r.phrase, "layers": r.layers })
            })
            .collect();
        json!({ "count": self.count, "average": average, "recent": recent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rating(score: f64) -> Rating {
        Rating {
            time: "2026-11-23T14:00:00.000Z".into(),
            score,
            comment: None,
            style: "techno_minimal".into(),
            phrase: Some(3),
            bar: 49,
            layers: vec!["drum: 909 kick".into()],
        }
    }

    #[test]
    fn ratings_survive_a_restart_and_are_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ratings.jsonl");
        let mut journal = RatingsJournal::open(&path);
        assert_eq!(journal.summary()["count"], 0);
        for score in [5.0, 3.0, 4.0] {
            journal.append(rating(score)).unwrap();
        }
        // A torn last line (a crash mid-write) is skipped, the rest read back.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"time\":\"2026").unwrap();
        let mut reopened = RatingsJournal::open(&path);
        let summary = reopened.summary();
        assert_eq!(summary["count"], 3);
        assert_eq!(summary["average"], 4.0);
        assert_eq!(summary["recent"][2]["score"], 4.0);
        // The next rating starts on a line of its own and reads back.
        reopened.append(rating(1.0)).unwrap();
        assert_eq!(RatingsJournal::open(&path).summary()["count"], 4);
    }
}
