//! Which files and folders a client may name: those under the media roots (the files area
//! and `media.roots`), as MPD keeps clients to its music directory.
//!
//! A name is resolved (symlinks and `..` included) before it is checked, so a link inside a
//! root that points outside is outside. Every name that does not resolve under a root gets
//! the same answer, whether or not something exists there: the errors say nothing of the
//! rest of the disk. Only regular files (or folders, where one is asked for) pass: a FIFO
//! or a device is refused from its metadata, without opening it.

use std::path::{Path, PathBuf};

use crate::rpc::RpcError;

/// What a resolved name must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
}

/// Why a name is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    /// Nothing of the wanted kind resolves under a root (missing, outside, or a link out).
    #[error(
        "not a {} under the media roots (the files area and media.roots in the configuration)",
        kind_name(*.0)
    )]
    Outside(Kind),
    /// It is under a root, but is not a regular file (or not a folder).
    #[error("{path} is not a regular {}", kind_name(*.1), path = .0)]
    WrongKind(String, Kind),
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Folder => "folder",
    }
}

impl MediaError {
    /// The error a client sees, for the param `field`.
    pub fn rpc(&self, field: &str) -> RpcError {
        RpcError::invalid_param(field, self)
    }
}

/// The roots, resolved.
#[derive(Debug, Clone)]
pub struct MediaRoots {
    roots: Vec<PathBuf>,
}

impl MediaRoots {
    /// The files area first, then the configured roots; a root that does not resolve (not
    /// there yet) is left out until it does.
    pub fn new(files_area: &Path, configured: &[PathBuf]) -> MediaRoots {
        let roots = std::iter::once(files_area)
            .chain(configured.iter().map(PathBuf::as_path))
            .filter_map(|root| match root.canonicalize() {
                Ok(root) => Some(root),
                Err(e) => {
                    tracing::debug!(root = %root.display(), error = %e, "media root not there");
                    None
                }
            })
            .collect();
        MediaRoots { roots }
    }

    /// Resolves a requested name to a path of `kind` under a root. A relative name is
    /// looked for under each root in turn.
    pub fn resolve(&self, requested: &str, kind: Kind) -> Result<PathBuf, MediaError> {
        let requested = Path::new(requested);
        if requested.as_os_str().is_empty() {
            return Err(MediaError::Outside(kind));
        }
        let candidates: Vec<PathBuf> = if requested.is_absolute() {
            vec![requested.to_owned()]
        } else {
            self.roots.iter().map(|root| root.join(requested)).collect()
        };
        let resolved = candidates
            .iter()
            .filter_map(|candidate| candidate.canonicalize().ok())
            .find(|path| self.roots.iter().any(|root| path.starts_with(root)))
            .ok_or(MediaError::Outside(kind))?;
        // Metadata, not an open: a FIFO must be refused without waiting for a writer.
        let meta = std::fs::metadata(&resolved).map_err(|_| MediaError::Outside(kind))?;
        let fits = match kind {
            Kind::File => meta.is_file(),
            Kind::Folder => meta.is_dir(),
        };
        if !fits {
            return Err(MediaError::WrongKind(resolved.display().to_string(), kind));
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_under_the_roots_only() {
        let area = tempfile::tempdir().unwrap();
        let music = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(music.path().join("a.wav"), b"x").unwrap();
        std::fs::write(area.path().join("b.wav"), b"x").unwrap();
        std::fs::write(outside.path().join("secret.wav"), b"x").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.wav"),
            music.path().join("link.wav"),
        )
        .unwrap();
        std::os::unix::fs::symlink(music.path().join("a.wav"), music.path().join("in.wav"))
            .unwrap();
        std::fs::create_dir(music.path().join("sub")).unwrap();
        let roots = MediaRoots::new(area.path(), &[music.path().to_owned()]);
        let music_dir = music.path().canonicalize().unwrap();

        let file = |name: &str| roots.resolve(name, Kind::File);
        assert_eq!(file("a.wav").unwrap(), music_dir.join("a.wav"));
        assert_eq!(
            file("b.wav").unwrap(),
            area.path().canonicalize().unwrap().join("b.wav")
        );
        assert_eq!(
            file(music.path().join("in.wav").to_str().unwrap()).unwrap(),
            music_dir.join("a.wav"),
            "a link that stays inside is followed"
        );
        let outside_answer = file("/etc/passwd").unwrap_err();
        assert_eq!(outside_answer, MediaError::Outside(Kind::File));
        for hidden in [
            "/etc/no-such-file".to_owned(),
            outside.path().join("secret.wav").display().to_string(),
            music.path().join("link.wav").display().to_string(),
            "link.wav".to_owned(),
            "../../../../etc/passwd".to_owned(),
            "missing.wav".to_owned(),
            String::new(),
        ] {
            assert_eq!(file(&hidden).unwrap_err(), outside_answer, "{hidden:?}");
        }
        assert!(matches!(file("sub"), Err(MediaError::WrongKind(..))));
        assert_eq!(
            roots.resolve("sub", Kind::Folder).unwrap(),
            music_dir.join("sub")
        );
        assert_eq!(
            roots.resolve("/", Kind::Folder).unwrap_err(),
            MediaError::Outside(Kind::Folder)
        );
    }
}
