//! The module cache: compiled modules by content hash, in memory (bounded, least recently
//! used first out) and on disk as serialized native code.
//!
//! A disk entry is only loaded after its SHA-256 checksum matches, and wasmtime then checks
//! that it was produced by the same wasmtime version and engine configuration. Entries live
//! in a subdirectory named after the engine's compatibility hash, so engines of different
//! configurations never see each other's files. A corrupt or foreign file is deleted and the
//! module recompiled. The directory itself must be writable only by the host's user: a
//! sandbox trusts native code it finds there once the checksum matches.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use wasmcage_events::{
    CacheEvent, CacheEventKind, CacheTier, Event, ModuleHash, ModuleInfo, Observer,
};

use crate::module::Compiled;

const MAGIC: &[u8; 8] = b"WCAGE001";

/// How the module cache is sized and where it keeps files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The most modules kept in memory (default 256).
    pub max_entries: usize,
    /// The most bytes of module binaries kept in memory (default 512 MiB).
    pub max_bytes: u64,
    /// Where serialized native code is kept across processes; `None` (the default) keeps
    /// nothing on disk.
    pub dir: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 256,
            max_bytes: 512 << 20,
            dir: None,
        }
    }
}

/// A snapshot of the in-memory cache's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Modules held.
    pub entries: u64,
    /// Bytes of module binaries held.
    pub bytes: u64,
}

struct Entry {
    compiled: Arc<Compiled>,
    last_used: u64,
}

#[derive(Default)]
struct Memory {
    entries: HashMap<ModuleHash, Entry>,
    bytes: u64,
    clock: u64,
}

pub(crate) struct ModuleCache {
    config: CacheConfig,
    /// The engine-specific subdirectory of `config.dir`.
    disk: Option<PathBuf>,
    memory: Mutex<Memory>,
}

impl ModuleCache {
    pub(crate) fn new(config: CacheConfig, engine: &wasmtime::Engine) -> std::io::Result<Self> {
        let disk = match &config.dir {
            None => None,
            Some(dir) => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                engine.precompile_compatibility_hash().hash(&mut hasher);
                let sub = dir.join(format!("engine-{:016x}", hasher.finish()));
                std::fs::create_dir_all(&sub)?;
                Some(sub)
            }
        };
        Ok(ModuleCache {
            config,
            disk,
            memory: Mutex::default(),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let memory = self.lock();
        CacheStats {
            entries: memory.entries.len() as u64,
            bytes: memory.bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, observer: &dyn Observer, module: &ModuleInfo, kind: CacheEventKind) {
        let CacheStats { entries, bytes } = self.stats();
        observer.on_event(&Event::Cache(&CacheEvent {
            module: module.clone(),
            kind,
            entries,
            bytes,
        }));
    }

    /// The module from memory, or from disk (then also kept in memory), or `None`.
    pub(crate) fn get(
        &self,
        info: &ModuleInfo,
        engine: &wasmtime::Engine,
        observer: &dyn Observer,
        load: impl FnOnce(wasmtime::Module) -> Option<Arc<Compiled>>,
    ) -> Option<Arc<Compiled>> {
        {
            let mut memory = self.lock();
            memory.clock += 1;
            let now = memory.clock;
            if let Some(entry) = memory.entries.get_mut(&info.hash) {
                entry.last_used = now;
                let compiled = entry.compiled.clone();
                drop(memory);
                self.emit(observer, info, CacheEventKind::Hit(CacheTier::Memory));
                return Some(compiled);
            }
        }
        let path = self.path(&info.hash)?;
        let bytes = std::fs::read(&path).ok()?;
        let loaded = verified_payload(&bytes)
            .and_then(|payload| deserialize(engine, payload))
            .and_then(load);
        match loaded {
            Some(compiled) => {
                self.insert(info, compiled.clone(), observer);
                self.emit(observer, info, CacheEventKind::Hit(CacheTier::Disk));
                Some(compiled)
            }
            None => {
                // Corrupt, truncated or foreign: never trust it, never keep it.
                let _ = std::fs::remove_file(&path);
                self.emit(observer, info, CacheEventKind::Discarded);
                None
            }
        }
    }

    /// Keeps a freshly compiled module in memory and, if configured, on disk.
    pub(crate) fn put(&self, info: &ModuleInfo, compiled: Arc<Compiled>, observer: &dyn Observer) {
        self.emit(observer, info, CacheEventKind::Miss);
        if let Some(path) = self.path(&info.hash) {
            // A cache that cannot be written only costs speed; the module still runs.
            if let Ok(payload) = compiled.module.serialize() {
                let _ = write_atomically(&path, &payload);
            }
        }
        self.insert(info, compiled, observer);
    }

    /// Drops a module from memory and deletes its file on disk, if any. Executions already
    /// holding the module keep their copy; a missing file is not an error.
    pub(crate) fn forget(&self, hash: &ModuleHash) -> std::io::Result<()> {
        {
            let mut memory = self.lock();
            if let Some(entry) = memory.entries.remove(hash) {
                memory.bytes -= entry.compiled.size_bytes;
            }
        }
        match self.path(hash).map(std::fs::remove_file) {
            Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn insert(&self, info: &ModuleInfo, compiled: Arc<Compiled>, observer: &dyn Observer) {
        let mut evicted = Vec::new();
        {
            let mut memory = self.lock();
            memory.clock += 1;
            let last_used = memory.clock;
            memory.bytes += compiled.size_bytes;
            if let Some(old) = memory.entries.insert(
                info.hash,
                Entry {
                    compiled,
                    last_used,
                },
            ) {
                memory.bytes -= old.compiled.size_bytes;
            }
            while memory.entries.len() > self.config.max_entries
                || (memory.bytes > self.config.max_bytes && memory.entries.len() > 1)
            {
                let Some(oldest) = memory
                    .entries
                    .iter()
                    .filter(|(hash, _)| **hash != info.hash)
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(hash, _)| *hash)
                else {
                    break;
                };
                let entry = memory
                    .entries
                    .remove(&oldest)
                    .expect("the oldest entry exists");
                memory.bytes -= entry.compiled.size_bytes;
                evicted.push(entry.compiled.info.clone());
            }
        }
        for module in evicted {
            self.emit(observer, &module, CacheEventKind::Evicted);
        }
    }

    fn path(&self, hash: &ModuleHash) -> Option<PathBuf> {
        self.disk
            .as_ref()
            .map(|dir| dir.join(format!("{hash}.cwasm")))
    }
}

/// The payload of a cache file whose magic and checksum are right.
pub(crate) fn verified_payload(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (checksum, payload) = rest.split_at(32);
    (Sha256::digest(payload).as_slice() == checksum).then_some(payload)
}

#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &wasmtime::Engine, payload: &[u8]) -> Option<wasmtime::Module> {
    // SAFETY: `Module::deserialize` requires bytes produced by `Module::serialize` of a
    // compatible engine. The payload's SHA-256 matched the checksum written beside it, so
    // it is exactly what this host serialized: a cache file in the host's own directory (see
    // the module docs), or the output of the host's own compile worker read from its pipe.
    // wasmtime itself rejects payloads from another version or configuration with an error
    // rather than undefined behaviour.
    unsafe { wasmtime::Module::deserialize(engine, payload) }.ok()
}

/// A serialized module framed as a cache file: magic, SHA-256, payload.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&Sha256::digest(payload));
    file.extend_from_slice(payload);
    file
}

fn write_atomically(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, frame(payload))?;
    std::fs::rename(&tmp, path)
}
