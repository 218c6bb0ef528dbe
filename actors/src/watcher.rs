//! Hot reload: watches the scripts and profiles directories and tells the actor that owns
//! a changed file to reload it. DJ scripts (`dj/*.rhai`) go to the director, the mood script
//! (`moods/*.rhai`) to the generator, profiles (`*.toml`) to the profile library. Bursts of
//! changes (an editor writes, renames and touches) are gathered for a moment first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kameo::actor::ActorRef;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::director::{Director, ReloadScript};
use crate::generator::{Generator, ReloadMoods};
use crate::profiles::{ProfileLibrary, ReloadProfiles};

/// How long a burst of changes is gathered before reloading.
const SETTLE: Duration = Duration::from_millis(150);

/// What a change touched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Touched {
    dj: bool,
    moods: bool,
    profiles: bool,
}

fn classify(path: &Path, scripts: Option<&Path>, profiles: Option<&Path>) -> Touched {
    let mut touched = Touched::default();
    let ext = path.extension().and_then(|e| e.to_str());
    if let Some(dir) = scripts
        && let Ok(rest) = path.strip_prefix(dir)
        && ext == Some("rhai")
    {
        match rest
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
        {
            Some("dj") => touched.dj = true,
            Some("moods") => touched.moods = true,
            _ => {}
        }
    }
    if let Some(dir) = profiles
        && path.starts_with(dir)
        && ext == Some("toml")
    {
        touched.profiles = true;
    }
    touched
}

/// The actors a change is reported to.
pub struct WatchTargets {
    pub director: ActorRef<Director>,
    pub generator: ActorRef<Generator>,
    pub profiles: ActorRef<ProfileLibrary>,
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Watches `scripts` and `profiles` (either may be absent: the built-in copies do not
    /// change). Directories that cannot be watched are logged and skipped.
    pub fn start(
        scripts: Option<PathBuf>,
        profiles: Option<PathBuf>,
        targets: WatchTargets,
    ) -> Watcher {
        let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !matches!(event.kind, EventKind::Access(_))
            {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
        });
        let watcher = match watcher {
            Ok(mut w) => {
                for dir in scripts.iter().chain(profiles.iter()) {
                    match w.watch(dir, RecursiveMode::Recursive) {
                        Ok(()) => tracing::info!(dir = %dir.display(), "watching for changes"),
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch")
                        }
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher: scripts and profiles reload on SIGHUP or script.reload only");
                None
            }
        };
        // Canonical forms, so that events (which name real paths) match.
        let canon = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        };
        let (scripts_c, profiles_c) = (canon(&scripts), canon(&profiles));
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut touched = classify(&first, scripts_c.as_deref(), profiles_c.as_deref());
                tokio::time::sleep(SETTLE).await;
                while let Ok(path) = rx.try_recv() {
                    let t = classify(&path, scripts_c.as_deref(), profiles_c.as_deref());
                    touched.dj |= t.dj;
                    touched.moods |= t.moods;
                    touched.profiles |= t.profiles;
                }
                if touched.profiles {
                    tracing::info!("profiles changed; reloading");
                    let _ = targets.profiles.ask(ReloadProfiles { dirs: None }).await;
                }
                if touched.moods {
                    tracing::info!("mood script changed; reloading");
                    let reload = ReloadMoods {
                        scripts_dir: scripts.clone(),
                    };
                    let _ = targets.generator.ask(reload).await;
                }
                if touched.dj {
                    tracing::info!("DJ script changed; reloading");
                    let _ = targets.director.ask(ReloadScript).await;
                }
            }
        });
        Watcher {
            _watcher: watcher,
            task,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_routed_by_where_they_are() {
        let scripts = Path::new("/s");
        let profiles = Path::new("/p");
        let c = |p: &str| classify(Path::new(p), Some(scripts), Some(profiles));
        assert!(c("/s/dj/default.rhai").dj);
        assert!(c("/s/moods/default.rhai").moods);
        assert!(c("/p/techno_minimal.toml").profiles);
        assert_eq!(c("/s/dj/.default.rhai.swp"), Touched::default());
        assert_eq!(c("/elsewhere/dj/x.rhai"), Touched::default());
    }
}
