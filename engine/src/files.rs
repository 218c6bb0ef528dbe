//! Writing files so that they appear under their names only whole.

use std::path::Path;

/// Writes `path` through `write` into a hidden `.NAME.partial` beside it, renamed to `path`
/// once complete (and removed if writing fails), so that a reader never finds it half
/// written.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    let written = std::fs::File::create(&partial).and_then(|mut file| write(&mut file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, path)
}
