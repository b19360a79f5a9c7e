//! A compiled module, pre-linked against the engine's imports.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use wasmcage_events::ModuleInfo;
use wasmtime::{ExternType, FuncType, InstancePre, ModuleExport};

use crate::precheck::Scan;
use crate::store::StoreState;
use crate::{Engine, Error, ValueType};

/// The name of the WASI preview 1 import module.
pub(crate) const WASI_P1: &str = "wasi_snapshot_preview1";

/// The WASI preview 1 functions that reach into a directory: opening, creating, listing,
/// renaming, linking, removing or stating what is inside it. A module importing none of
/// them can do nothing with a preopened directory but name it and stat it.
const PATH_FUNCTIONS: &[&str] = &[
    "path_open",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "fd_readdir",
];

/// A compiled module, ready to run in any sandbox of the engine that compiled it.
///
/// Cloning is cheap. Compilation and linking happen once per content hash (see the module
/// cache); each execution only instantiates.
#[derive(Clone)]
pub struct Module {
    engine: Engine,
    info: ModuleInfo,
    compiled: Arc<Compiled>,
}

/// What the cache keeps for one content hash: the native code and its linking.
pub(crate) struct Compiled {
    pub(crate) module: wasmtime::Module,
    /// The identity the module was first compiled under.
    pub(crate) info: ModuleInfo,
    pub(crate) size_bytes: u64,
    imports_wasi: bool,
    /// Whether it imports a WASI function that can reach into a directory.
    uses_paths: bool,
    has_start: bool,
    /// The exported functions by name, resolved once: a call looks its entry up here and
    /// reaches the instance's function by index, with no type-registry query.
    entries: HashMap<Box<str>, Entry>,
    pre: OnceLock<InstancePre<StoreState>>,
}

/// An exported function, resolved when the module was compiled.
pub(crate) struct Entry {
    /// The export's name, shared by every report of a call to it.
    pub(crate) name: Arc<str>,
    /// Where the function is among the module's exports.
    pub(crate) export: ModuleExport,
    /// Its parameter types; `None` if one of them cannot be passed from the host.
    pub(crate) params: Option<Box<[ValueType]>>,
    /// How many results it returns; `None` if one of them cannot be received by the host.
    pub(crate) results: Option<usize>,
}

impl Compiled {
    /// Wraps a compiled module, refusing imports the sandbox does not provide.
    pub(crate) fn new(
        module: wasmtime::Module,
        info: ModuleInfo,
        size_bytes: u64,
        scan: Scan,
    ) -> Result<Self, Error> {
        let mut imports_wasi = false;
        let mut uses_paths = false;
        for import in module.imports() {
            if import.module() == WASI_P1 {
                imports_wasi = true;
                uses_paths |= PATH_FUNCTIONS.contains(&import.name());
            } else {
                return Err(Error::UnsupportedImport {
                    module: info.name.to_string(),
                    import_module: import.module().to_owned(),
                    import_name: import.name().to_owned(),
                });
            }
        }
        let entries = module
            .exports()
            .filter_map(|e| {
                let ExternType::Func(f) = e.ty() else {
                    return None;
                };
                let export = module.get_export_index(e.name())?;
                let params = f.params().map(|t| ValueType::from_wasmtime(&t)).collect();
                let results = f
                    .results()
                    .all(|t| ValueType::from_wasmtime(&t).is_some())
                    .then(|| f.results().len());
                Some((
                    e.name().into(),
                    Entry {
                        name: e.name().into(),
                        export,
                        params,
                        results,
                    },
                ))
            })
            .collect();
        Ok(Compiled {
            module,
            info,
            size_bytes,
            imports_wasi,
            uses_paths,
            has_start: scan.has_start,
            entries,
            pre: OnceLock::new(),
        })
    }
}

/// One exported function and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// The export's name.
    pub name: String,
    /// Parameter types; `None` if the export uses a type the host cannot pass.
    pub params: Option<Vec<ValueType>>,
    /// Result types; `None` if the export uses a type the host cannot receive.
    pub results: Option<Vec<ValueType>>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Module {
    pub(crate) fn new(engine: &Engine, info: ModuleInfo, compiled: Arc<Compiled>) -> Self {
        Module {
            engine: engine.clone(),
            info,
            compiled,
        }
    }

    /// The module's name and content hash.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// The size of the module's binary, in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.compiled.size_bytes
    }

    /// Whether the module imports WASI preview 1.
    pub fn imports_wasi(&self) -> bool {
        self.compiled.imports_wasi
    }

    /// Whether the module imports a WASI function that can reach into a directory.
    pub(crate) fn uses_paths(&self) -> bool {
        self.compiled.uses_paths
    }

    /// The exported functions and their signatures, in the module's order.
    pub fn exports(&self) -> Vec<ExportInfo> {
        self.compiled
            .module
            .exports()
            .filter_map(|e| match e.ty() {
                ExternType::Func(f) => Some(ExportInfo {
                    name: e.name().to_owned(),
                    params: f.params().map(|t| ValueType::from_wasmtime(&t)).collect(),
                    results: f.results().map(|t| ValueType::from_wasmtime(&t)).collect(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Whether the module has a start function: guest code that runs at instantiation.
    pub(crate) fn has_start(&self) -> bool {
        self.compiled.has_start
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The exported function `export`, or a clear error naming what does exist.
    pub(crate) fn entry(&self, export: &str) -> Result<&Entry, Error> {
        self.compiled
            .entries
            .get(export)
            .ok_or_else(|| Error::ExportNotFound {
                module: self.info.name.to_string(),
                export: export.to_owned(),
                available: self.exports().into_iter().map(|e| e.name).collect(),
            })
    }

    /// The export's function type, for error messages.
    pub(crate) fn func_type(&self, export: &str) -> Option<FuncType> {
        match self.compiled.module.get_export(export) {
            Some(ExternType::Func(f)) => Some(f),
            _ => None,
        }
    }

    /// The module linked against the engine's imports, linked once and then shared.
    pub(crate) fn instance_pre(&self) -> Result<&InstancePre<StoreState>, Error> {
        let compiled = &self.compiled;
        if let Some(pre) = compiled.pre.get() {
            return Ok(pre);
        }
        let pre = self
            .engine
            .inner()
            .linker
            .instantiate_pre(&compiled.module)
            .map_err(|e| Error::InvalidModule {
                name: self.info.name.to_string(),
                reason: format!("cannot link its imports: {e}"),
            })?;
        Ok(compiled.pre.get_or_init(|| pre))
    }
}
