//! The zip archive of a `.keras` file, read as untrusted input.
//!
//! Only three entries matter: `config.json`, `metadata.json` and
//! `model.weights.h5`. Each is read into memory through a reader that stops
//! at its declared size and at a hard limit, and memory is reserved only
//! for what the archive can hold (a stored entry's bytes are in the file, a
//! compressed one expands at most 100:1), so a lying header or a
//! decompression bomb ends in an error, not in an allocation the archive
//! does not justify. Entry names that climb out of the archive (`../x`,
//! absolute paths) are refused even though nothing is written to disk: a
//! file that carries them was not written by Keras.

use std::io::{Cursor, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// The parts of a `.keras` archive horn reads.
pub(crate) struct KerasArchive {
    pub config: Vec<u8>,
    pub weights: Vec<u8>,
}

/// Most entries an archive may list (Keras writes three, plus assets).
const MAX_ENTRIES: usize = 1024;
/// Largest `config.json` / `metadata.json` read.
const MAX_JSON_BYTES: u64 = 64 << 20;
/// Largest weights file read (16 GiB).
const MAX_WEIGHTS_BYTES: u64 = 16 << 30;
/// Largest expansion of a compressed entry over its stored size. Keras
/// stores its entries uncompressed, and real JSON or weights deflate by a
/// few times at most; deflate can reach about 1000:1 on zeros, which is
/// what a decompression bomb uses.
const MAX_RATIO: u64 = 100;

impl KerasArchive {
    /// Reads the archive's entries; `path` names the file in errors.
    pub fn read(bytes: &[u8], path: &Path) -> Result<KerasArchive> {
        let bad = |why: String| Error::format(path, why);
        if !bytes.starts_with(b"PK") {
            return Err(bad(
                "not a `.keras` file: a Keras 3 model file is a zip archive".into(),
            ));
        }
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| bad(format!("unreadable zip archive ({e})")))?;
        if zip.len() > MAX_ENTRIES {
            return Err(bad(format!("{} entries in the archive", zip.len())));
        }
        let mut config = None;
        let mut weights = None;
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| bad(format!("entry {i} is unreadable ({e})")))?;
            let name = entry.name().to_string();
            if entry.enclosed_name().is_none() || name.starts_with('/') || name.contains('\\') {
                return Err(bad(format!(
                    "entry name `{name}` points outside the archive (not written by Keras)"
                )));
            }
            let limit = match name.as_str() {
                "config.json" | "metadata.json" => MAX_JSON_BYTES,
                "model.weights.h5" => MAX_WEIGHTS_BYTES,
                _ => continue,
            };
            let declared = entry.size();
            let stored = entry.compressed_size();
            if declared > limit {
                return Err(bad(format!(
                    "`{name}` declares {declared} bytes, more than the {limit} horn reads"
                )));
            }
            // What the archive can hold: a stored entry's bytes are in the
            // file, a compressed one expands at most MAX_RATIO times (and
            // its compressed bytes are in the file too). A zip64 header can
            // declare anything, so the allocation never trusts it alone.
            let file = bytes.len() as u64;
            let room = match entry.compression() {
                zip::CompressionMethod::Stored => file,
                _ => stored.min(file).saturating_mul(MAX_RATIO).max(1 << 20),
            };
            if declared > room {
                return Err(bad(
                    if entry.compression() == zip::CompressionMethod::Stored {
                        format!(
                        "`{name}` declares {declared} bytes, more than the {file}-byte archive holds"
                    )
                    } else {
                        format!(
                        "`{name}` would expand from {stored} to {declared} bytes (a decompression bomb?)"
                    )
                    },
                ));
            }
            // The bound above caps the allocation, which may still fail
            // (an error, not an abort); reading one byte more than declared
            // shows a header that lies.
            let mut data = Vec::new();
            data.try_reserve_exact(declared as usize).map_err(|_| {
                bad(format!(
                    "`{name}` needs {declared} bytes of memory, which are not available"
                ))
            })?;
            (&mut entry)
                .take(declared + 1)
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("`{name}` cannot be read ({e})")))?;
            if data.len() as u64 != declared {
                return Err(bad(format!(
                    "`{name}` holds {} bytes where its header declares {declared}",
                    data.len()
                )));
            }
            match name.as_str() {
                "config.json" => config = Some(data),
                "model.weights.h5" => weights = Some(data),
                _ => {}
            }
        }
        Ok(KerasArchive {
            config: config.ok_or_else(|| bad("the archive has no `config.json`".into()))?,
            weights: weights.ok_or_else(|| bad("the archive has no `model.weights.h5`".into()))?,
        })
    }
}
