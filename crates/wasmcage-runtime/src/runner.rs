//! Running code in a runtime: the loaded interpreter, its policy and limits, one-shot
//! executions (cold, or on a pre-started interpreter), and files put in its workspace.

use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Duration;

use wasmcage_core::{
    CommandInput, CommandOutput, Engine, Error, Interactive, Limits, Module, Policy, Sandbox,
    TraceParent, TurnLimits, TurnOutput,
};
use wasmcage_events::{ExecutionType, RuntimeTag};

use crate::{Driver, Installed, RuntimeError};

/// Where a runtime's code sees its workspace: its scratch directory, holding the request's
/// files and whatever the code writes.
pub const WORKSPACE: &str = "/workspace";

/// The most files one execution may be given, and the longest name.
pub const MAX_FILES: usize = 256;
const MAX_FILE_NAME: usize = 255;

/// Fuel and time a pre-started interpreter may spend starting (CPython takes about 2.5e8
/// fuel and 50 ms of CPU).
pub const STARTUP_FUEL: u64 = 4_000_000_000;
/// See [`STARTUP_FUEL`].
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// An installed runtime whose module is compiled and verified.
#[derive(Debug)]
pub struct Runtime {
    installed: Installed,
    module: Module,
    oneshot: Arc<RuntimeTag>,
    session: Arc<RuntimeTag>,
}

impl Runtime {
    /// Compiles (or takes from the engine's cache) the runtime's module and checks it is
    /// the module the runtime was installed with.
    pub fn load(engine: &Engine, installed: Installed) -> Result<Runtime, RuntimeError> {
        let bytes = std::fs::read(&installed.module_path).map_err(|e| {
            RuntimeError::manifest(format!(
                "cannot read {}: {e}",
                installed.module_path.display()
            ))
        })?;
        let name = installed.manifest.name.to_string();
        let module = engine
            .compile(&name, &bytes)
            .map_err(|e| RuntimeError::manifest(format!("runtime {name}: {e}")))?;
        installed.verify(&module.info().hash.0)?;
        let tag = |execution_type| {
            Arc::new(RuntimeTag {
                name: name.as_str().into(),
                version: installed.manifest.version.as_str().into(),
                execution_type,
            })
        };
        Ok(Runtime {
            oneshot: tag(ExecutionType::Oneshot),
            session: tag(ExecutionType::Session),
            installed,
            module,
        })
    }

    /// The runtime's name.
    pub fn name(&self) -> &str {
        self.installed.manifest.name.as_str()
    }

    /// The language it runs.
    pub fn language(&self) -> &str {
        &self.installed.manifest.language
    }

    /// The interpreter's version.
    pub fn version(&self) -> &str {
        &self.installed.manifest.version
    }

    /// What is installed.
    pub fn installed(&self) -> &Installed {
        &self.installed
    }

    /// The compiled interpreter.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Its driver, if it has one (then it can be pre-started and run sessions).
    pub fn driver(&self) -> Option<Driver> {
        self.installed.manifest.driver
    }

    /// The tag its executions' reports carry.
    pub fn tag(&self, execution_type: ExecutionType) -> Arc<RuntimeTag> {
        match execution_type {
            ExecutionType::Oneshot => self.oneshot.clone(),
            ExecutionType::Session => self.session.clone(),
        }
    }

    /// `limits` with the runtime's defaults in place of the fields `defaults` left at the
    /// sandbox's own defaults: the runtime knows what its interpreter needs.
    pub fn limits(&self, base: &Limits) -> Limits {
        let own = &self.installed.manifest.limits;
        Limits {
            fuel: own.fuel.or(base.fuel),
            memory_bytes: own.memory.unwrap_or(base.memory_bytes),
            timeout: own.timeout.unwrap_or(base.timeout),
            ..base.clone()
        }
    }

    /// `base` with what the interpreter needs: its environment, its library directories
    /// (read-only), and, with `workspace`, a fresh scratch directory at [`WORKSPACE`] in
    /// place of any other scratch directory.
    pub fn policy(&self, base: &Policy, workspace: bool) -> Result<Policy, RuntimeError> {
        let mut policy = base.clone();
        // The interpreter's command line is the runtime's, whole.
        policy.args.clear();
        for (key, value) in &self.installed.manifest.env {
            policy.env.insert(key.clone(), value.clone());
        }
        for (host, guest) in self.installed.lib_dirs() {
            policy.dirs.push(wasmcage_core::policy::DirGrant {
                host,
                guest: guest.to_owned(),
                access: wasmcage_core::policy::Access::ReadOnly,
            });
        }
        if workspace {
            policy.scratch = Some(WORKSPACE.into());
        }
        policy
            .validate()
            .map_err(|e| RuntimeError::manifest(format!("runtime {}: {e}", self.name())))?;
        Ok(policy)
    }

    /// Runs `code` on a fresh interpreter started for it: the interpreter's own command line
    /// (`argv_code`), `stdin` as its stdin.
    pub fn run_cold(
        &self,
        sandbox: &Sandbox,
        code: &str,
        stdin: wasmcage_core::Stdin,
        trace: Option<TraceParent>,
    ) -> Result<CommandOutput, Error> {
        let args = guest_args(self.installed.manifest.argv_for_code(code))?;
        let input = CommandInput {
            args,
            stdin,
            runtime: Some(self.oneshot.clone()),
        };
        sandbox.run_command_traced(&self.module, input, trace)
    }

    /// Starts an interpreter that runs the driver and waits for code: one-shot (it runs one
    /// turn and exits) or a session (it runs cells until closed). The sandbox's fuel and
    /// timeout bound the start-up.
    pub fn start(&self, sandbox: &Sandbox, session: bool) -> Result<Interactive, Error> {
        let Some(driver) = self.driver() else {
            return Err(Error::Config(format!(
                "runtime {} has no driver: it cannot be pre-started or run sessions",
                self.name()
            )));
        };
        let args = guest_args(
            self.installed
                .manifest
                .argv_for_code(&driver.source(session)),
        )?;
        let tag = if session {
            self.session.clone()
        } else {
            self.oneshot.clone()
        };
        Interactive::start(sandbox, &self.module, args, Some(tag))
    }
}

/// A manifest's command line without its program name: the sandbox gives the guest the
/// module's name (the runtime's) as `argv[0]`.
pub fn guest_args(argv: Result<Vec<String>, RuntimeError>) -> Result<Vec<String>, Error> {
    let mut argv = argv.map_err(|e| Error::Config(e.to_string()))?;
    if !argv.is_empty() {
        argv.remove(0);
    }
    Ok(argv)
}

/// Code for one execution: the code, its stdin, and files put in its workspace first.
#[derive(Debug, Clone, Default)]
pub struct Code {
    /// The source text.
    pub code: String,
    /// What the code reads on stdin.
    pub stdin: Vec<u8>,
    /// Files for the workspace: relative paths (`data/in.csv`) and contents.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Runs `code` as the one turn of a pre-started one-shot interpreter: its files go in the
/// workspace first, then the code and its stdin, then end of file; the turn ends when the
/// interpreter exits.
pub fn run_oneshot(
    interpreter: &mut Interactive,
    driver: Driver,
    code: &Code,
    limits: TurnLimits,
    trace: Option<TraceParent>,
) -> Result<TurnOutput, RunError> {
    put_files(interpreter, &code.files)?;
    let mut input = driver.encode(&code.code, &[]).to_vec();
    input.extend_from_slice(&code.stdin);
    Ok(interpreter.turn(input.into(), true, limits, trace)?)
}

/// Runs `code` as the next cell of a session's interpreter.
pub fn run_cell(
    interpreter: &mut Interactive,
    driver: Driver,
    code: &Code,
    limits: TurnLimits,
    trace: Option<TraceParent>,
) -> Result<TurnOutput, RunError> {
    if !code.stdin.is_empty() && !driver.cell_stdin() {
        return Err(RunError::Input(format!(
            "the {} driver gives session cells no stdin",
            driver.as_str()
        )));
    }
    put_files(interpreter, &code.files)?;
    Ok(interpreter.turn(driver.encode(&code.code, &code.stdin), false, limits, trace)?)
}

/// Why code could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The caller's input is unusable (a file name that leaves the workspace, too many files,
    /// stdin a driver cannot give).
    #[error("{0}")]
    Input(String),
    /// The host could not write the files.
    #[error("cannot write the workspace files: {0}")]
    Files(#[source] std::io::Error),
    /// The sandbox refused or failed.
    #[error(transparent)]
    Sandbox(#[from] Error),
}

/// Checks a workspace file name: relative, plain components only, not too long.
pub fn check_file_name(name: &str) -> Result<(), RunError> {
    let bad = |why: &str| Err(RunError::Input(format!("file name {name:?}: {why}")));
    if name.is_empty() || name.len() > MAX_FILE_NAME {
        return bad("must be 1 to 255 bytes");
    }
    if name.chars().any(char::is_control) || name.contains('\\') {
        return bad("control characters and backslashes are not allowed");
    }
    let path = Path::new(name);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return bad("must be a relative path inside the workspace, without `.` or `..`");
    }
    Ok(())
}

fn put_files(interpreter: &mut Interactive, files: &[(String, Vec<u8>)]) -> Result<(), RunError> {
    if files.is_empty() {
        return Ok(());
    }
    if files.len() > MAX_FILES {
        return Err(RunError::Input(format!(
            "at most {MAX_FILES} files may be given"
        )));
    }
    for (name, _) in files {
        check_file_name(name)?;
    }
    let Some(root) = interpreter.scratch_dir() else {
        return Err(RunError::Input("this interpreter has no workspace".into()));
    };
    // The files count against the workspace quota like the code's own writes.
    let bytes = files.iter().map(|(_, c)| c.len() as u64).sum::<u64>();
    interpreter.charge_disk(bytes).map_err(|left| {
        RunError::Input(format!(
            "the files ({bytes} bytes) do not fit the {left} bytes left of the workspace quota"
        ))
    })?;
    for (name, contents) in files {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            create_dirs_inside(&root, parent).map_err(RunError::Files)?;
        }
        // Never follow a link the guest left in its workspace: the host writes only inside.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(RunError::Input(format!(
                "file name {name:?}: something other than a file is there"
            )));
        }
        write_no_follow(&path, contents).map_err(RunError::Files)?;
    }
    Ok(())
}

/// Creates `dir` and its parents below `root`, refusing to pass through a symbolic link.
fn create_dirs_inside(root: &Path, dir: &Path) -> std::io::Result<()> {
    let relative = dir.strip_prefix(root).map_err(std::io::Error::other)?;
    let mut at = root.to_path_buf();
    for part in relative.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    part.as_os_str().to_string_lossy()
                )));
            }
            Err(_) => std::fs::create_dir(&at)?,
        }
    }
    Ok(())
}

fn write_no_follow(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_file_names_stay_inside() {
        for good in ["a.csv", "data/in.csv", "x y.txt"] {
            assert!(check_file_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "./a",
            "a\\b",
            "a\nb",
            &"x".repeat(300),
        ] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
    }
}
