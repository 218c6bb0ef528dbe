//! The loop library: a folder of audio files, each analysed once (tempo, key, loudness,
//! brightness, role) and written as one JSON line with a prompt text built from what was
//! heard; searched by tempo range, key, role and words.
//!
//! [`build`] does the work (on as many threads as asked, re-analysing only files that are new
//! or changed since the last run); the [`Library`] actor holds the entries the daemon serves
//! `library.search` and the DJ from.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use kameo::prelude::*;
use serde::{Deserialize, Serialize};

use crate::supervisor::Health;
use djinn_engine::analysis::bands::BandShares;
use djinn_engine::analysis::describe::{Known, describe_knowing};
use djinn_engine::wav::LoopInfo;

/// File extensions the library reads (anything symphonia decodes).
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "ogg", "oga", "mp3", "aif", "aiff", "m4a", "caf",
];

/// One analysed file: one JSON line of the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub path: PathBuf,
    /// Size in bytes and modification time (ns since the epoch): a re-run analyses the file
    /// again only when either changed.
    pub size: u64,
    pub modified_ns: u128,
    pub duration: f64,
    pub sample_rate: u32,
    pub bpm: Option<f64>,
    pub bpm_confidence: Option<f64>,
    /// Like "A minor"; none for audio with no tonal content.
    pub key: Option<String>,
    /// The key's tonic ("A") and scale ("minor") apart.
    pub tonic: Option<String>,
    pub scale: Option<String>,
    pub key_confidence: Option<f64>,
    /// Integrated loudness, LUFS (`null` for silence).
    pub loudness: Option<f64>,
    pub true_peak_dbtp: Option<f64>,
    /// 0 (dark) to 1 (bright): the spectral centroid on a log scale from 100 Hz to 8 kHz.
    pub brightness: f64,
    pub centroid_hz: f64,
    pub bands: BandShares,
    /// drums, bass, pad, lead, vocal or full_mix.
    pub role: String,
    pub role_confidence: f64,
    /// Whole bars at the detected tempo when the file is a loop (within 2 %).
    pub bars: Option<u32>,
    /// What was heard, as a prompt: "dark drums loop, 4 bars, 124 BPM".
    pub prompt: String,
    /// The tempo and the key's tonic are the file's own (a WAV file's `acid` chunk, as DAWs,
    /// sample packs and djinn write them), not estimates; the mode is still heard.
    #[serde(default)]
    pub tagged: bool,
    /// The analysis that made the entry: one from an older analysis is made again.
    #[serde(default)]
    pub analysis: u32,
}

/// The analysis entries are made by now; entries of any other are made again. 2: files'
/// own tempo and tonic.
pub const ANALYSIS: u32 = 2;

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The words for a brightness.
fn brightness_word(b: f64) -> &'static str {
    match b {
        b if b < 0.25 => "dark",
        b if b < 0.4 => "warm",
        b if b < 0.6 => "balanced",
        _ => "bright",
    }
}

fn role_words(role: &str) -> &'static str {
    match role {
        "drums" => "drums",
        "bass" => "bassline",
        "pad" => "pad",
        "lead" => "lead",
        "vocal" => "vocal",
        _ => "full mix",
    }
}

/// Analyses one file.
pub fn analyse(path: &Path) -> Result<Entry, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let decoded = djinn_engine::decode::read(path).map_err(|e| e.to_string())?;
    // Loop information that cannot be read is as good as none: the audio was.
    let tagged = LoopInfo::read(path)
        .ok()
        .flatten()
        .filter(|info| !info.one_shot);
    let known = Known {
        bpm: tagged.map(|info| info.bpm),
        tonic: tagged.and_then(|info| info.root),
    };
    let d = describe_knowing(&decoded.frames, decoded.sample_rate, known);
    let bpm = d.tempo.map(|t| t.bpm);
    let bars = bpm.and_then(|bpm| {
        let bar = 240.0 / bpm;
        let n = (d.seconds / bar).round();
        (n >= 1.0 && (d.seconds - n * bar).abs() <= 0.02 * n * bar).then_some(n as u32)
    });
    let key = d.key.map(|k| k.key);
    let mut prompt = format!(
        "{} {}",
        brightness_word(d.spectral.brightness),
        role_words(d.role.role)
    );
    match bars {
        Some(n) => prompt.push_str(&format!(" loop, {n} bar{}", if n == 1 { "" } else { "s" })),
        None if d.seconds < 2.0 => prompt.push_str(" one-shot"),
        None => prompt.push_str(&format!(", {:.0} s", d.seconds)),
    }
    if let Some(bpm) = bpm {
        prompt.push_str(&format!(", {bpm:.0} BPM"));
    }
    // A key means little for drums.
    if let (Some(key), false) = (key, d.role.role == "drums") {
        prompt.push_str(&format!(", {key}"));
    }
    Ok(Entry {
        path: path.to_owned(),
        size: meta.len(),
        modified_ns: modified_ns(&meta),
        duration: d.seconds,
        sample_rate: d.sample_rate,
        bpm,
        bpm_confidence: d.tempo.map(|t| t.confidence),
        key: key.map(|k| k.to_string()),
        tonic: key.map(|k| k.tonic.to_string()),
        scale: key.map(|k| k.scale.to_string()),
        key_confidence: d.key.map(|k| k.confidence),
        loudness: finite(d.loudness.integrated_lufs),
        true_peak_dbtp: finite(d.loudness.true_peak_dbtp),
        brightness: d.spectral.brightness,
        centroid_hz: d.spectral.centroid_hz,
        bands: d.bands,
        role: d.role.role.to_owned(),
        role_confidence: d.role.confidence,
        bars,
        prompt,
        tagged: tagged.is_some(),
        analysis: ANALYSIS,
    })
}

fn modified_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// The audio files under `dir`, recursively, sorted. Only regular files count: symlinks
/// are not followed (they could lead out of the folder a daemon was allowed to read), and a
/// FIFO named like audio would block the build forever.
pub fn audio_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                // An unreadable subfolder is skipped, not fatal.
                let _ = walk(&path, out);
            } else if kind.is_file()
                && path
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase())
                    .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.as_str()))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Reads a library file; lines that do not parse are skipped (they are analysed again).
pub fn load(path: &Path) -> std::io::Result<Vec<Entry>> {
    let file = std::fs::File::open(path)?;
    Ok(std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect())
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub output: PathBuf,
    /// Audio files found.
    pub files: usize,
    pub analysed: usize,
    /// Unchanged since the last run, taken from it.
    pub reused: usize,
    /// Files that could not be read, with why.
    pub skipped: Vec<Skipped>,
    #[serde(skip)]
    pub entries: Vec<Entry>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// Scans `dir`, analyses each audio file not already in `output` unchanged (on `jobs`
/// threads), and writes `output` (atomically) with one line per readable file, sorted by
/// path. `progress(done, total)` follows the analysis; `warn` hears of every file skipped.
pub fn build(
    dir: &Path,
    output: &Path,
    jobs: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
    warn: &(dyn Fn(&Skipped) + Sync),
) -> std::io::Result<BuildReport> {
    let started = std::time::Instant::now();
    let files = audio_files(dir)?;
    let previous: HashMap<PathBuf, Entry> = load(output)
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let mut entries = Vec::with_capacity(files.len());
    let mut todo = Vec::new();
    for path in &files {
        let unchanged = std::fs::metadata(path).ok().and_then(|meta| {
            previous.get(path).filter(|e| {
                e.size == meta.len()
                    && e.modified_ns == modified_ns(&meta)
                    && e.analysis == ANALYSIS
            })
        });
        match unchanged {
            Some(entry) => entries.push(entry.clone()),
            None => todo.push(path.clone()),
        }
    }
    let reused = entries.len();
    let mut fresh = Vec::with_capacity(todo.len());
    let mut skipped = Vec::new();
    progress(0, todo.len());
    djinn_engine::work::on_threads(
        &todo,
        jobs,
        |path| analyse(path),
        |i, result| {
            match result {
                Ok(entry) => fresh.push(entry),
                Err(reason) => {
                    let s = Skipped {
                        path: todo[i].clone(),
                        reason,
                    };
                    warn(&s);
                    skipped.push(s);
                }
            }
            progress(fresh.len() + skipped.len(), todo.len());
        },
    );
    let analysed = fresh.len();
    entries.extend(fresh);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    write(output, &entries)?;
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(BuildReport {
        output: output.to_owned(),
        files: files.len(),
        analysed,
        reused,
        skipped,
        entries,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the entries as JSON lines, atomically.
fn write(output: &Path, entries: &[Entry]) -> std::io::Result<()> {
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    djinn_engine::files::write_atomically(output, |file| {
        let mut file = std::io::BufWriter::new(file);
        for entry in entries {
            serde_json::to_writer(&mut file, entry)?;
            file.write_all(b"\n")?;
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_all()
    })
}

/// A library search; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Lowest and highest tempo, BPM.
    pub bpm: Option<[f64; 2]>,
    /// "A minor", "F#m", "C" (major): the same key exactly.
    pub key: Option<String>,
    pub role: Option<String>,
    /// Words that must all appear in the prompt or the path (any case).
    pub text: Option<String>,
    /// At most this many results (default 50).
    pub limit: Option<usize>,
}

impl Query {
    /// Checks the fields that can be wrong, naming the first that is.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some([lo, hi]) = self.bpm
            && !(lo.is_finite() && hi.is_finite() && lo <= hi)
        {
            return Err(("bpm", format!("[{lo}, {hi}] is not a range low to high")));
        }
        if let Some(key) = &self.key {
            key.parse::<djinn_engine::music::Key>()
                .map_err(|e| ("key", e.to_string()))?;
        }
        if let Some(role) = &self.role {
            const ROLES: [&str; 6] = ["drums", "bass", "pad", "lead", "vocal", "full_mix"];
            if !ROLES.contains(&role.as_str()) {
                return Err((
                    "role",
                    format!("{role:?} is not one of {}", ROLES.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// The entries matching `query`, best first: files whose tempo is nearest the middle of the
/// range, then by path.
pub fn search<'a>(entries: &'a [Entry], query: &Query) -> Vec<&'a Entry> {
    let key = query
        .key
        .as_deref()
        .and_then(|k| k.parse::<djinn_engine::music::Key>().ok())
        .map(|k| k.to_string());
    let words: Vec<String> = query
        .text
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let mut found: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            query
                .bpm
                .is_none_or(|[lo, hi]| e.bpm.is_some_and(|b| b >= lo && b <= hi))
        })
        .filter(|e| key.is_none() || e.key == key)
        .filter(|e| query.role.as_deref().is_none_or(|r| e.role == r))
        .filter(|e| {
            let hay = format!("{} {}", e.prompt, e.path.display()).to_lowercase();
            words.iter().all(|w| hay.contains(w.as_str()))
        })
        .collect();
    if let Some([lo, hi]) = query.bpm {
        let mid = (lo + hi) / 2.0;
        found.sort_by(|a, b| {
            let d = |e: &Entry| e.bpm.map_or(f64::MAX, |x| (x - mid).abs());
            d(a).total_cmp(&d(b)).then(a.path.cmp(&b.path))
        });
    }
    found.truncate(query.limit.unwrap_or(50));
    found
}

/// The library's name in health reports and `daemon.status`.
pub const NAME: &str = "library";

/// The daemon's loaded library.
pub struct Library {
    file: PathBuf,
    entries: Vec<Entry>,
    health: Health,
}

/// Where the library lives.
#[derive(Clone)]
pub struct LibraryArgs {
    pub file: PathBuf,
    pub health: Health,
}

impl Actor for Library {
    type Args = LibraryArgs;
    type Error = std::convert::Infallible;

    fn name() -> &'static str {
        NAME
    }

    async fn on_start(args: Self::Args, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        let entries = load(&args.file).unwrap_or_default();
        if !entries.is_empty() {
            tracing::info!(file = %args.file.display(), entries = entries.len(), "loop library loaded");
        }
        args.health.started(NAME);
        Ok(Library {
            file: args.file,
            entries,
            health: args.health,
        })
    }

    async fn on_panic(
        &mut self,
        _: WeakActorRef<Self>,
        err: PanicError,
    ) -> Result<std::ops::ControlFlow<ActorStopReason>, Self::Error> {
        self.health.panicked(NAME, &err);
        Ok(std::ops::ControlFlow::Break(ActorStopReason::Panicked(err)))
    }
}

/// Replaces the entries after a build.
#[derive(Debug, Clone)]
pub struct ReplaceEntries(pub Vec<Entry>);

impl Message<ReplaceEntries> for Library {
    type Reply = usize;

    async fn handle(&mut self, msg: ReplaceEntries, _: &mut Context<Self, usize>) -> usize {
        self.entries = msg.0;
        self.entries.len()
    }
}

/// Searches the library.
#[derive(Debug, Clone)]
pub struct Search(pub Query);

impl Message<Search> for Library {
    type Reply = Vec<Entry>;

    async fn handle(&mut self, msg: Search, _: &mut Context<Self, Vec<Entry>>) -> Vec<Entry> {
        search(&self.entries, &msg.0).into_iter().cloned().collect()
    }
}

/// The library's file and size.
#[derive(Debug, Clone, Copy)]
pub struct LibraryStatus;

#[derive(Debug, Clone, Serialize, Reply)]
pub struct LibraryInfo {
    pub file: PathBuf,
    pub entries: usize,
}

impl Message<LibraryStatus> for Library {
    type Reply = LibraryInfo;

    async fn handle(
        &mut self,
        _: LibraryStatus,
        _: &mut Context<Self, LibraryInfo>,
    ) -> LibraryInfo {
        LibraryInfo {
            file: self.file.clone(),
            entries: self.entries.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, bpm: f64, key: &str, role: &str, prompt: &str) -> Entry {
        Entry {
            path: path.into(),
            size: 1,
            modified_ns: 1,
            duration: 8.0,
            sample_rate: 48_000,
            bpm: Some(bpm),
            bpm_confidence: Some(0.5),
            key: Some(key.into()),
            tonic: None,
            scale: None,
            key_confidence: Some(0.5),
            loudness: Some(-14.0),
            true_peak_dbtp: Some(-1.0),
            brightness: 0.5,
            centroid_hz: 1000.0,
            bands: BandShares::default(),
            role: role.into(),
            role_confidence: 0.9,
            bars: Some(4),
            prompt: prompt.into(),
            tagged: false,
            analysis: ANALYSIS,
        }
    }

    #[test]
    fn search_filters_by_every_field_and_sorts_by_tempo() {
        let entries = vec![
            entry("/l/a.wav", 124.0, "A minor", "drums", "dark drums loop"),
            entry("/l/b.wav", 120.0, "A minor", "bass", "warm bassline loop"),
            entry("/l/c.wav", 90.0, "C major", "pad", "bright pad loop"),
            entry("/l/d.wav", 121.0, "A minor", "drums", "bright drums loop"),
        ];
        let q = |json: serde_json::Value| -> Vec<String> {
            let query: Query = serde_json::from_value(json).unwrap();
            search(&entries, &query)
                .iter()
                .map(|e| e.path.display().to_string())
                .collect()
        };
        assert_eq!(
            q(serde_json::json!({ "bpm": [118, 126] })),
            ["/l/d.wav", "/l/a.wav", "/l/b.wav"]
        );
        assert_eq!(
            q(serde_json::json!({ "role": "drums", "text": "BRIGHT" })),
            ["/l/d.wav"]
        );
        assert_eq!(q(serde_json::json!({ "key": "Am" })).len(), 3);
        assert_eq!(q(serde_json::json!({ "key": "C" })), ["/l/c.wav"]);
        assert_eq!(q(serde_json::json!({ "limit": 1 })).len(), 1);
        let bad: Query = serde_json::from_value(serde_json::json!({ "role": "kazoo" })).unwrap();
        assert_eq!(bad.validate().unwrap_err().0, "role");
    }
}
