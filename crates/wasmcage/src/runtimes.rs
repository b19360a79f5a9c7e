//! Language runtimes composed on a cage's engine: the installed runtimes, a pool of
//! pre-started interpreters for each, and the sessions (feature `runtime`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use wasmcage_core::{Engine, Policy, Sandbox, TraceParent, TurnLimits, TurnOutput};
use wasmcage_runtime::{
    Code, Entry, InterpreterPool, Registry, RunError, Runtime, RuntimeError, STARTUP_FUEL,
    STARTUP_TIMEOUT, SessionError, SessionInfo, SessionSettings, Sessions, run_oneshot,
};

/// Which runtimes to load and how to run them.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimesConfig {
    /// The data directory the runtimes are installed in (`<dir>/runtimes/<name>`).
    pub dir: PathBuf,
    /// Load only these runtimes; `None` loads every usable runtime installed.
    pub only: Option<Vec<String>>,
    /// Pre-started interpreters each runtime with a driver keeps ready (0: none).
    pub pool_size: usize,
    /// How sessions are bounded.
    pub sessions: SessionSettings,
    /// The most bytes an interpreter's code may write to its workspace (a session's, over
    /// all its cells).
    pub workspace_quota: u64,
}

/// The loaded runtimes, their pools and the sessions.
pub struct LanguageRuntimes {
    engine: Engine,
    runtimes: BTreeMap<String, Arc<Runtime>>,
    pools: BTreeMap<String, (InterpreterPool, Policy)>,
    sessions: Sessions,
    problems: Vec<(String, String)>,
    workspace_quota: u64,
}

impl std::fmt::Debug for LanguageRuntimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanguageRuntimes")
            .field("runtimes", &self.runtimes.keys().collect::<Vec<_>>())
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

impl LanguageRuntimes {
    /// Loads the runtimes `config` names (compiling each interpreter on `engine`, or taking
    /// it from the engine's cache, and verifying it against its manifest) and starts a pool
    /// for each runtime with a driver, whose interpreters run under `base` (the policy of a
    /// request that narrows nothing). Blocking; a runtime that cannot be loaded is left out
    /// and listed in [`problems`](Self::problems).
    pub fn load(engine: &Engine, base: &Policy, config: &RuntimesConfig) -> LanguageRuntimes {
        let registry = Registry::new(&config.dir);
        let mut problems = Vec::new();
        let names: Vec<String> = match &config.only {
            Some(names) => names.clone(),
            None => match registry.list() {
                Ok(entries) => entries
                    .into_iter()
                    .filter_map(|e| match e {
                        Entry::Installed(installed) => Some(installed.manifest.name.to_string()),
                        Entry::Broken { name, reason } => {
                            problems.push((name, reason));
                            None
                        }
                    })
                    .collect(),
                Err(e) => {
                    problems.push(("*".into(), e.to_string()));
                    Vec::new()
                }
            },
        };
        let mut runtimes = BTreeMap::new();
        for name in names {
            match registry
                .get(&name)
                .and_then(|installed| Runtime::load(engine, installed))
            {
                Ok(runtime) => {
                    runtimes.insert(name, Arc::new(runtime));
                }
                Err(e) => problems.push((name, e.to_string())),
            }
        }
        let mut loaded = LanguageRuntimes {
            engine: engine.clone(),
            runtimes,
            pools: BTreeMap::new(),
            sessions: Sessions::new(config.sessions, engine.observer()),
            problems,
            workspace_quota: config.workspace_quota,
        };
        if config.pool_size > 0 {
            let with_drivers: Vec<Arc<Runtime>> = loaded
                .runtimes
                .values()
                .filter(|r| r.driver().is_some())
                .cloned()
                .collect();
            for runtime in with_drivers {
                let pooled =
                    loaded
                        .interpreter_sandbox(&runtime, base)
                        .and_then(|(sandbox, policy)| {
                            InterpreterPool::new(
                                runtime.clone(),
                                sandbox,
                                config.pool_size,
                                engine.observer(),
                            )
                            .map(|pool| (pool, policy))
                            .map_err(RunError::Sandbox)
                        });
                match pooled {
                    Ok(pool) => {
                        loaded.pools.insert(runtime.name().to_owned(), pool);
                    }
                    Err(e) => loaded
                        .problems
                        .push((runtime.name().to_owned(), format!("no pool: {e}"))),
                }
            }
        }
        loaded
    }

    /// The runtime named `language`, else the first runtime whose language it is.
    pub fn find(&self, language: &str) -> Option<&Arc<Runtime>> {
        self.runtimes
            .get(language)
            .or_else(|| self.runtimes.values().find(|r| r.language() == language))
    }

    /// Every loaded runtime, by name.
    pub fn runtimes(&self) -> impl Iterator<Item = &Arc<Runtime>> {
        self.runtimes.values()
    }

    /// Runtimes that could not be loaded, and why.
    pub fn problems(&self) -> &[(String, String)] {
        &self.problems
    }

    /// The pool of `runtime`, if it has one.
    pub fn pool(&self, runtime: &str) -> Option<&InterpreterPool> {
        self.pools.get(runtime).map(|(pool, _)| pool)
    }

    /// The sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The sandbox an interpreter of `runtime` runs in for a request under `request`: the
    /// request's grants and memory (no more than the runtime's own default), the runtime's
    /// environment and library directories, a fresh workspace under the quota, and the
    /// start-up budget as its fuel and timeout (each turn gets its own).
    pub fn interpreter_sandbox(
        &self,
        runtime: &Runtime,
        request: &Policy,
    ) -> Result<(Sandbox, Policy), RunError> {
        let mut policy = runtime
            .policy(request, true)
            .map_err(|e: RuntimeError| RunError::Input(e.to_string()))?;
        let own = runtime.limits(&policy.limits);
        policy.limits.memory_bytes = policy.limits.memory_bytes.min(own.memory_bytes);
        policy.limits.fuel = Some(STARTUP_FUEL);
        policy.limits.timeout = STARTUP_TIMEOUT;
        policy.limits.disk_bytes = Some(
            policy
                .limits
                .disk_bytes
                .map_or(self.workspace_quota, |d| d.min(self.workspace_quota)),
        );
        let sandbox = Sandbox::builder(&self.engine)
            .policy(policy.clone())
            .build()
            .map_err(RunError::Sandbox)?;
        Ok((sandbox, policy))
    }

    /// Runs `code` once in `runtime`: on a pre-started interpreter when the request's
    /// sandbox is the pool's, else on one started for it. Blocking. Also says whether the
    /// interpreter was pre-started.
    pub fn execute(
        &self,
        runtime: &Arc<Runtime>,
        request: &Policy,
        code: &Code,
        limits: TurnLimits,
        trace: Option<TraceParent>,
    ) -> Result<(TurnOutput, bool), RunError> {
        let Some(driver) = runtime.driver() else {
            return Err(RunError::Input(format!(
                "runtime {} has no driver; run it with `wasmcage exec` or as a module",
                runtime.name()
            )));
        };
        let (sandbox, policy) = self.interpreter_sandbox(runtime, request)?;
        let (mut interpreter, warm) = match self.pools.get(runtime.name()) {
            Some((pool, pooled)) if *pooled == policy => pool.take()?,
            _ => (runtime.start(&sandbox, false)?, false),
        };
        let out = run_oneshot(&mut interpreter, driver, code, limits, trace)?;
        Ok((out, warm))
    }

    /// Starts a session of `runtime` for `owner` under `request`'s grants and memory.
    /// Blocking.
    pub fn create_session(
        &self,
        owner: &str,
        runtime: &Arc<Runtime>,
        request: &Policy,
    ) -> Result<SessionInfo, SessionError> {
        let (sandbox, _) = self.interpreter_sandbox(runtime, request)?;
        self.sessions.create(owner, runtime.clone(), &sandbox)
    }
}
