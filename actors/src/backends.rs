//! Optional backends: which are on, which are off, and why.
//!
//! djinn runs with nothing but its procedural engine; everything else switches itself on
//! when what it needs is present (an API key, model weights, a program, a device). This
//! module looks, without side effects, so `daemon.status` can tell the operator.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Whether one optional backend is available, and why or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendStatus {
    pub name: &'static str,
    pub enabled: bool,
    pub reason: String,
}

impl BackendStatus {
    fn on(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            enabled: true,
            reason: reason.into(),
        }
    }

    fn off(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            enabled: false,
            reason: reason.into(),
        }
    }
}

/// Where backends look for what they need.
#[derive(Debug, Clone)]
pub struct BackendProbe {
    /// Directory holding model weights (`musicgen/`, `demucs/`).
    pub models_dir: PathBuf,
}

impl BackendProbe {
    /// Looks at every optional backend.
    pub fn probe(&self) -> Vec<BackendStatus> {
        vec![
            api_key("gemini", "GEMINI_API_KEY"),
            api_key("deepseek", "DEEPSEEK_API_KEY"),
            weights("musicgen", &self.models_dir.join("musicgen")),
            weights("demucs", &self.models_dir.join("demucs")),
            program("tts", "espeak-ng"),
            alsa_sequencer(),
        ]
    }
}

fn api_key(name: &'static str, var: &str) -> BackendStatus {
    match std::env::var(var) {
        Ok(key) if !key.trim().is_empty() => BackendStatus::on(name, format!("{var} is set")),
        _ => BackendStatus::off(name, format!("{var} is not set")),
    }
}

fn weights(name: &'static str, dir: &Path) -> BackendStatus {
    let has_weights = std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            e.path()
                .extension()
                .is_some_and(|ext| ext == "safetensors" || ext == "gguf")
        })
    });
    if has_weights {
        BackendStatus::off(
            name,
            format!(
                "weights found in {}, but this build has no {name} inference",
                dir.display()
            ),
        )
    } else {
        BackendStatus::off(name, format!("no model weights in {}", dir.display()))
    }
}

fn program(name: &'static str, program: &str) -> BackendStatus {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => BackendStatus::on(name, format!("{program} at {}", path.display())),
        None => BackendStatus::off(name, format!("{program} not found on PATH")),
    }
}

fn alsa_sequencer() -> BackendStatus {
    const NAME: &str = "alsa_midi";
    if !Path::new("/dev/snd/seq").exists() {
        return BackendStatus::off(NAME, "no ALSA sequencer (/dev/snd/seq is missing)");
    }
    match midir::MidiInput::new("djinn-probe") {
        Ok(input) => BackendStatus::on(
            NAME,
            format!("ALSA sequencer with {} input ports", input.port_count()),
        ),
        Err(e) => BackendStatus::off(NAME, format!("ALSA sequencer unusable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_on_disk_are_noticed_and_their_absence_explained() {
        let dir = tempfile::tempdir().unwrap();
        let probe = BackendProbe {
            models_dir: dir.path().to_owned(),
        };
        let status = probe.probe();
        let musicgen = status.iter().find(|s| s.name == "musicgen").unwrap();
        assert!(!musicgen.enabled);
        assert!(
            musicgen.reason.starts_with("no model weights in"),
            "{musicgen:?}"
        );

        std::fs::create_dir(dir.path().join("musicgen")).unwrap();
        std::fs::write(dir.path().join("musicgen/model.safetensors"), b"").unwrap();
        let status = probe.probe();
        let musicgen = status.iter().find(|s| s.name == "musicgen").unwrap();
        assert!(musicgen.reason.contains("weights found"), "{musicgen:?}");
    }

    #[test]
    fn a_program_on_path_is_found() {
        // `sh` is on every PATH this runs on; a made-up name is on none.
        assert!(program("shell", "sh").enabled);
        let missing = program("nothing", "djinn-no-such-program");
        assert!(!missing.enabled);
        assert_eq!(missing.reason, "djinn-no-such-program not found on PATH");
    }
}
