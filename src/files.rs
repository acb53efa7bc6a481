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
/// same folder (so two saves never share one), created with the permissions
/// `File::create` gives a new file (`0o666` less the umask), flushed to disk,
/// given the existing file's permissions when there is one, then renamed
/// over the target and the folder synced. On any failure the temporary file is removed and the target is
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
    // Every error names the file the user asked for, never the temporary
    // one (a full disk shows up while writing it).
    let fail = |e: std::io::Error| Error::io(path, without_temp_path(e));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".horn-save-").suffix(".tmp");
    // A new file gets what `File::create` would give it: 0o666 less the
    // umask (the kernel applies the umask to the mode `open` is given);
    // tempfile's own default, 0o600, would hide a model from the group
    // whatever the umask says.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(&dir).map_err(fail)?;
    // Through the `File`: the temporary file's own `Write` adds its path
    // to errors.
    tmp.as_file_mut().write_all(bytes).map_err(fail)?;
    // An existing file keeps its permissions.
    if let Ok(old) = std::fs::metadata(&target) {
        tmp.as_file()
            .set_permissions(old.permissions())
            .map_err(fail)?;
    }
    tmp.as_file().sync_all().map_err(fail)?;
    // On failure `persist` hands the file back, and dropping it deletes it.
    tmp.persist(&target).map_err(|e| fail(e.error))?;
    // Make the rename itself durable (best effort: not every platform can
    // open a folder).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The OS error alone: tempfile's errors name the temporary file, which means
/// nothing to the user (errors name the path they asked to write). An error
/// without an OS code keeps its kind.
fn without_temp_path(e: std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::from(e.kind()),
    }
}
