//! File access shared by every loader and saver: bounded reads of untrusted
//! files and atomic, durable writes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Reads a whole file, refusing anything but a regular file (a device such as
/// `/dev/zero` would never end) and reading no more than its size.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::format(path, "not a regular file"));
    }
    let len = usize::try_from(meta.len())
        .map_err(|_| Error::format(path, "file too large for this machine"))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|_| Error::format(path, format!("cannot allocate {len} bytes to read it")))?;
    file.take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Where a save really writes: the target of a symbolic link (followed up to
/// a few levels), else the path itself.
fn resolve_target(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..16 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&p) {
                Ok(t) => {
                    p = if t.is_absolute() {
                        t
                    } else {
                        p.parent().unwrap_or(Path::new(".")).join(t)
                    };
                }
                Err(_) => break,
            },
            _ => break,
        }
    }
    p
}

/// Writes `bytes` to `path` atomically: a uniquely named temporary file in the
/// same folder (so two saves never share one), flushed to disk, given the
/// existing file's permissions, then renamed over the target and the folder
/// synced. On any failure the temporary file is removed and the target is
/// untouched.
///
/// A `.keras` or `.h5` name is refused: horn's own files under Keras' names
/// would not open in Keras (`save_keras` writes real `.keras` files through
/// [`write_atomic_any`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("keras") || e.eq_ignore_ascii_case("h5"))
    {
        return Err(Error::arg(
            "path",
            "a `.safetensors` path for horn's own format (a Keras file is written by `save_keras`, to a `.keras` path)",
            path.display(),
        ));
    }
    write_atomic_any(path, bytes)
}

/// [`write_atomic`] under any name.
pub(crate) fn write_atomic_any(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = resolve_target(path);
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".horn-save-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(path, without_temp_path(e)))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    if let Ok(old) = std::fs::metadata(&target) {
        tmp.as_file()
            .set_permissions(old.permissions())
            .map_err(|e| Error::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    // On failure `persist` hands the file back, and dropping it deletes it.
    tmp.persist(&target).map_err(|e| Error::io(path, e.error))?;
    // Make the rename itself durable (best effort: not every platform can
    // open a folder).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The OS error alone: tempfile's errors name the temporary file, which means
/// nothing to the user (errors name the path they asked to write).
fn without_temp_path(e: std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::from(e.kind()),
    }
}
