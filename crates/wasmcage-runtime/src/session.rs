//! Sessions: one interpreter per session that keeps its variables, imports and workspace
//! files between cells, serves its owner only, and ends when deleted, idle past its expiry,
//! or dead.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use wasmcage_core::{Error, Interactive, Sandbox, TraceParent, TurnLimits};
use wasmcage_events::{Event, Observer};
use wasmcage_events::{RuntimeEvent, RuntimeEventKind, SessionEnd};

use crate::runner::{Code, RunError, Runtime, run_cell};

/// How sessions are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// The most sessions one owner (API key) may hold at once.
    pub max_per_owner: usize,
    /// The most sessions on this host.
    pub max_total: usize,
    /// A session unused for this long ends.
    pub idle_expiry: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            max_per_owner: 8,
            max_total: 128,
            idle_expiry: Duration::from_secs(600),
        }
    }
}

/// What a caller sees of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its id: 32 random hex digits.
    pub id: String,
    /// Its runtime's name.
    pub runtime: String,
    /// The runtime's language.
    pub language: String,
    /// When it was created.
    pub created: SystemTime,
    /// When a cell last ran (or it was created).
    pub last_used: SystemTime,
    /// Cells run so far.
    pub cells: u64,
    /// When it ends if unused.
    pub expires: SystemTime,
}

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such session for this owner (another owner's session is not found either).
    #[error("no session {0}")]
    NotFound(String),
    /// The owner already holds its maximum of sessions, or the host is full.
    #[error("{0}")]
    Limit(String),
    /// A cell of this session is running.
    #[error("a cell of this session is already running")]
    Busy,
    /// The session's interpreter has ended; the session is gone.
    #[error("the session's interpreter has ended")]
    Ended,
    /// Running the cell failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl From<Error> for SessionError {
    fn from(e: Error) -> Self {
        SessionError::Run(RunError::Sandbox(e))
    }
}

struct Session {
    owner: String,
    runtime: Arc<Runtime>,
    /// `None` while a cell runs (the interpreter is out on loan to it).
    interpreter: Mutex<Option<Interactive>>,
    created: SystemTime,
    state: Mutex<Usage>,
}

#[derive(Clone, Copy)]
struct Usage {
    last_used: Instant,
    last_used_wall: SystemTime,
    cells: u64,
}

/// Every session of a host.
pub struct Sessions {
    settings: SessionSettings,
    observer: Arc<dyn Observer>,
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("settings", &self.settings)
            .field("active", &self.active())
            .finish()
    }
}

impl Sessions {
    /// No sessions yet, under `settings`.
    pub fn new(settings: SessionSettings, observer: Arc<dyn Observer>) -> Sessions {
        Sessions {
            settings,
            observer,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> SessionSettings {
        self.settings
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sessions alive now.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn emit(&self, runtime: &str, kind: RuntimeEventKind) {
        self.observer.on_event(&Event::Runtime(&RuntimeEvent {
            runtime: runtime.into(),
            kind,
        }));
    }

    /// Starts a session of `runtime` for `owner` under `sandbox` (its grants and memory are
    /// the session's for its life; its `disk_bytes` is the workspace quota; its fuel and
    /// timeout bound the interpreter's start-up).
    pub fn create(
        &self,
        owner: &str,
        runtime: Arc<Runtime>,
        sandbox: &Sandbox,
    ) -> Result<SessionInfo, SessionError> {
        self.reserve(owner)?;
        let interpreter = runtime.start(sandbox, true)?;
        let id = new_id();
        let now = (Instant::now(), SystemTime::now());
        let session = Arc::new(Session {
            owner: owner.to_owned(),
            runtime: runtime.clone(),
            interpreter: Mutex::new(Some(interpreter)),
            created: now.1,
            state: Mutex::new(Usage {
                last_used: now.0,
                last_used_wall: now.1,
                cells: 0,
            }),
        });
        // Checked again with the map locked: two creates may have raced past `reserve`.
        {
            let mut map = self.lock();
            self.check_room(&map, owner)?;
            map.insert(id.clone(), session.clone());
        }
        self.emit(runtime.name(), RuntimeEventKind::SessionCreated);
        Ok(self.info(&id, &session))
    }

    fn reserve(&self, owner: &str) -> Result<(), SessionError> {
        self.reap();
        let map = self.lock();
        self.check_room(&map, owner)
    }

    fn check_room(
        &self,
        map: &HashMap<String, Arc<Session>>,
        owner: &str,
    ) -> Result<(), SessionError> {
        if map.len() >= self.settings.max_total {
            return Err(SessionError::Limit(format!(
                "this host holds its maximum of {} sessions",
                self.settings.max_total
            )));
        }
        let held = map.values().filter(|s| s.owner == owner).count();
        if held >= self.settings.max_per_owner {
            return Err(SessionError::Limit(format!(
                "this key holds its maximum of {} sessions; delete one first",
                self.settings.max_per_owner
            )));
        }
        Ok(())
    }

    fn find(&self, owner: &str, id: &str) -> Result<Arc<Session>, SessionError> {
        self.lock()
            .get(id)
            .filter(|s| s.owner == owner)
            .cloned()
            .ok_or_else(|| SessionError::NotFound(id.to_owned()))
    }

    fn info(&self, id: &str, session: &Session) -> SessionInfo {
        let usage = *session.state.lock().unwrap_or_else(PoisonError::into_inner);
        SessionInfo {
            id: id.to_owned(),
            runtime: session.runtime.name().to_owned(),
            language: session.runtime.language().to_owned(),
            created: session.created,
            last_used: usage.last_used_wall,
            cells: usage.cells,
            expires: usage.last_used_wall + self.settings.idle_expiry,
        }
    }

    /// The session `id` of `owner`.
    pub fn get(&self, owner: &str, id: &str) -> Result<SessionInfo, SessionError> {
        let session = self.find(owner, id)?;
        Ok(self.info(id, &session))
    }

    /// The sessions of `owner`.
    pub fn list(&self, owner: &str) -> Vec<SessionInfo> {
        let sessions: Vec<(String, Arc<Session>)> = self
            .lock()
            .iter()
            .filter(|(_, s)| s.owner == owner)
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        sessions.iter().map(|(id, s)| self.info(id, s)).collect()
    }

    /// Runs one cell in the session. A cell that ends the interpreter (it exits, traps or
    /// hits a limit) ends the session too: the output says so, and the session is gone.
    pub fn execute(
        &self,
        owner: &str,
        id: &str,
        code: &Code,
        limits: TurnLimits,
        trace: Option<TraceParent>,
    ) -> Result<wasmcage_core::TurnOutput, SessionError> {
        let session = self.find(owner, id)?;
        let Some(mut interpreter) = session
            .interpreter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Err(SessionError::Busy);
        };
        let driver = session.runtime.driver().ok_or(SessionError::Ended)?;
        let result = run_cell(&mut interpreter, driver, code, limits, trace);
        let alive = interpreter.is_alive();
        {
            let mut usage = session.state.lock().unwrap_or_else(PoisonError::into_inner);
            usage.last_used = Instant::now();
            usage.last_used_wall = SystemTime::now();
            usage.cells += 1;
        }
        if alive {
            *session
                .interpreter
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(interpreter);
        } else {
            self.end(id, SessionEnd::Died);
        }
        Ok(result?)
    }

    /// Ends the session `id` of `owner`.
    pub fn delete(&self, owner: &str, id: &str) -> Result<(), SessionError> {
        self.find(owner, id)?;
        self.end(id, SessionEnd::Deleted);
        Ok(())
    }

    fn end(&self, id: &str, why: SessionEnd) {
        let removed = self.lock().remove(id);
        if let Some(session) = removed {
            // The interpreter (if not out on a cell) goes now; a running cell's goes when
            // the cell returns it to a session nobody can find.
            drop(
                session
                    .interpreter
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
            self.emit(session.runtime.name(), RuntimeEventKind::SessionEnded(why));
        }
    }

    /// Ends every session idle past the expiry; how many ended.
    pub fn reap(&self) -> usize {
        let expiry = self.settings.idle_expiry;
        let idle: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, s)| {
                let busy = s
                    .interpreter
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_none();
                let usage = *s.state.lock().unwrap_or_else(PoisonError::into_inner);
                !busy && usage.last_used.elapsed() >= expiry
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            self.end(id, SessionEnd::Expired);
        }
        idle.len()
    }

    /// Ends every session (the host is shutting down).
    pub fn shutdown(&self) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in ids {
            self.end(&id, SessionEnd::Shutdown);
        }
    }
}

/// 128 random bits from the operating system, as hex.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom: mix what the process has (never expected on Linux).
        let mut h =
            std::hash::BuildHasher::build_hasher(&std::collections::hash_map::RandomState::new());
        std::hash::Hasher::write_u128(&mut h, Instant::now().elapsed().as_nanos());
        let a = std::hash::Hasher::finish(&h);
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&a.rotate_left(29).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
