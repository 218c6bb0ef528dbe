//! Writing files so that they appear under their names only whole.

use std::path::Path;

/// Writes `path` through `write` into a hidden `.NAME.partial` beside it, renamed to `path`
/// once complete (and removed if writing or renaming fails), so that a reader never finds
/// it half written.
///
/// A file already at `path` is swapped out atomically and then removed. (A plain rename
/// over it would also be atomic, but ext4 then pushes the new file's data towards the
/// disk before the rename returns, tens of milliseconds for a song, and frees the old
/// file's blocks inside the rename too.)
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    std::fs::File::create(&partial)
        .and_then(|mut file| write(&mut file))
        .and_then(|()| put_in_place(&partial, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })
}

/// Moves the whole file at `partial` to `path`: swapped with a file already there, which is
/// then removed, else renamed.
fn put_in_place(partial: &Path, path: &Path) -> std::io::Result<()> {
    let replaces_a_file = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
    if replaces_a_file && exchange(partial, path).is_ok() {
        // The old file, now under the partial name. Should removing it fail, the new file
        // is in place all the same: a hidden leftover is the lesser harm than reporting a
        // write that succeeded as failed.
        let _ = std::fs::remove_file(partial);
        return Ok(());
    }
    // Nothing to swap with (or a filesystem that cannot swap): a plain rename.
    std::fs::rename(partial, path)
}

/// Swaps the files at `a` and `b` atomically (`renameat2` with `RENAME_EXCHANGE`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both are NUL-terminated paths that outlive the call; the call reads them only.
    let status = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_file_and_a_replaced_one_are_whole_and_leave_nothing_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("song.wav");
        write_atomically(&path, |f| f.write_all(b"first take")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first take");
        // Held open, the old file keeps its contents: it was swapped out, not rewritten.
        let mut reader = std::fs::File::open(&path).unwrap();
        write_atomically(&path, |f| f.write_all(b"second")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mut old = String::new();
        std::io::Read::read_to_string(&mut reader, &mut old).unwrap();
        assert_eq!(old, "first take");
        assert_eq!(entries(dir.path()), ["song.wav"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("song.wav");
        write_atomically(&path, |f| f.write_all(b"kept")).unwrap();
        let failed = write_atomically(&path, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        assert_eq!(entries(dir.path()), ["song.wav"]);
    }

    #[test]
    fn a_directory_in_the_way_is_not_swapped_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("song.wav");
        std::fs::create_dir(&path).unwrap();
        assert!(write_atomically(&path, |f| f.write_all(b"x")).is_err());
        assert!(path.is_dir());
        assert_eq!(entries(dir.path()), ["song.wav"]);
    }
}
