//! The module store on disk: `<sha256>.wasm` (the module's binary, named after the SHA-256
//! of its bytes), `<sha256>.name` (the name it was first uploaded under) and
//! `<sha256>.owners` (digests of the API keys that stored it, for quotas); both are metadata,
//! never compiled.
//!
//! Every write goes to a temporary file in the same directory, is synced, renamed into place,
//! and the directory is synced, so that after a crash a file is either whole or absent. A
//! content-addressed file that already exists with the right hash is never rewritten. At
//! start, anything in the directory that is not such a pair is moved to the quarantine
//! directory and never served.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// The hex SHA-256 of `bytes`, the form module ids take.
pub(crate) fn hash_hex(bytes: &[u8]) -> String {
    wasmcage::events::ModuleHash(Sha256::digest(bytes).into()).to_string()
}

/// Whether `s` is a module id: 64 lowercase hex digits.
pub(crate) fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A module found in the store at start, not yet verified.
pub(crate) struct Stored {
    /// Its id, from the file name.
    pub(crate) id: String,
    /// Its name, from the `.name` file (or the id when there is none).
    pub(crate) name: String,
    /// The file's size in bytes, shown while it compiles.
    pub(crate) size: u64,
}

/// The module directory and its quarantine.
pub(crate) struct Store {
    dir: PathBuf,
    quarantine: PathBuf,
}

/// The longest module name kept; a longer `.name` file is cut.
pub(crate) const MAX_NAME_BYTES: usize = 256;

impl Store {
    pub(crate) fn new(dir: PathBuf, quarantine: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(Store { dir, quarantine })
    }

    fn wasm(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.wasm"))
    }

    fn name_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.name"))
    }

    fn owners_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.owners"))
    }

    /// The owners recorded for a module (SHA-256 digests of API keys, one a line); lines
    /// that are not such a digest are ignored.
    pub(crate) fn owners(&self, id: &str) -> Vec<String> {
        fs::read_to_string(self.owners_path(id))
            .map(|text| {
                text.lines()
                    .filter(|l| is_id(l))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records a module's owners durably, so that quotas hold across restarts.
    pub(crate) fn put_owners(&self, id: &str, owners: &[String]) -> io::Result<()> {
        let mut text = owners.join("\n");
        text.push('\n');
        write_durably(&self.dir, &self.owners_path(id), text.as_bytes())
    }

    /// Lists the modules to serve and quarantines everything else. Cheap: reads names (and
    /// `.name` files), never module bytes; [`Store::verify`] checks each module's hash.
    pub(crate) fn scan(&self) -> Vec<Stored> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            let file_name = entry.file_name();
            let keep = file_name.to_str().and_then(|n| {
                let (stem, ext) = n.rsplit_once('.')?;
                (is_file && is_id(stem)).then_some((stem.to_owned(), ext.to_owned()))
            });
            match keep {
                Some((id, ext)) if ext == "wasm" => {
                    let name = fs::read(self.name_path(&id))
                        .ok()
                        .map(|b| {
                            let cut = &b[..b.len().min(MAX_NAME_BYTES)];
                            String::from_utf8_lossy(cut).into_owned()
                        })
                        .unwrap_or_else(|| id.clone());
                    let size = entry.metadata().map_or(0, |m| m.len());
                    found.push(Stored { id, name, size });
                }
                // Metadata of a module that is there; without its module it is a stray.
                Some((id, ext))
                    if (ext == "name" || ext == "owners") && self.wasm(&id).is_file() => {}
                _ => self.quarantine(&path, "not a module of this store"),
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    /// Reads a module's bytes and checks them against its id; a module that fails is moved
    /// to quarantine (with its name file) and `None` is returned.
    pub(crate) fn verify(&self, id: &str) -> Option<Vec<u8>> {
        let path = self.wasm(id);
        match fs::read(&path) {
            Ok(bytes) if hash_hex(&bytes) == id => Some(bytes),
            Ok(_) => {
                self.quarantine_module(id, "its SHA-256 does not match its name");
                None
            }
            Err(e) => {
                warn(&format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// Moves a module and its metadata into quarantine.
    pub(crate) fn quarantine_module(&self, id: &str, why: &str) {
        self.quarantine(&self.wasm(id), why);
        for meta in [self.name_path(id), self.owners_path(id)] {
            self.quarantine(&meta, "its module was quarantined");
        }
    }

    /// Moves `path` into the quarantine directory, never overwriting an earlier arrival.
    fn quarantine(&self, path: &Path, why: &str) {
        let Some(file_name) = path.file_name() else {
            return;
        };
        if !path.exists() {
            return;
        }
        if let Err(e) = fs::create_dir_all(&self.quarantine) {
            warn(&format!(
                "cannot create {}: {e}; {} stays where it is and is not served",
                self.quarantine.display(),
                path.display()
            ));
            return;
        }
        let mut target = self.quarantine.join(file_name);
        let mut n = 1;
        while target.exists() {
            target = self
                .quarantine
                .join(format!("{}.{n}", file_name.to_string_lossy()));
            n += 1;
        }
        match fs::rename(path, &target) {
            Ok(()) => warn(&format!(
                "quarantined {} ({why}) to {}",
                path.display(),
                target.display()
            )),
            Err(e) => warn(&format!(
                "cannot quarantine {} ({why}): {e}; it is not served",
                path.display()
            )),
        }
    }

    /// Stores a module durably: the binary unless a file with the right bytes is already
    /// there, then its name unless one is already there (the first name stays).
    pub(crate) fn put(&self, id: &str, binary: &[u8], name: &str) -> io::Result<()> {
        let wasm = self.wasm(id);
        let intact = fs::read(&wasm).is_ok_and(|b| hash_hex(&b) == id);
        if !intact {
            write_durably(&self.dir, &wasm, binary)?;
        }
        let name_path = self.name_path(id);
        if !name_path.exists() {
            write_durably(&self.dir, &name_path, name.as_bytes())?;
        }
        Ok(())
    }

    /// Removes a module durably: the binary first, so that a crash in between leaves a
    /// stray name file (quarantined at the next start), never a module without its delete.
    pub(crate) fn remove(&self, id: &str) -> io::Result<()> {
        for path in [self.wasm(id), self.name_path(id), self.owners_path(id)] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        sync_dir(&self.dir)
    }
}

/// Writes `bytes` to `path`: a temporary file in the same directory, synced, renamed over
/// `path`, and the directory synced, so that the rename itself survives a crash.
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Syncs a directory's entries (a rename or removal in it) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    // Windows cannot open a directory as a file; NTFS journals renames itself.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Tells the operator about something the store did on its own. The service installs no
/// tracing subscriber, so stderr is where an operator looks.
pub(crate) fn warn(message: &str) {
    eprintln!("wasmcage-server: warning: {message}");
}
