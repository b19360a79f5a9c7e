//! The outbox: where a notification waits, durably, between being raised and being
//! delivered.
//!
//! Each entry is one notification addressed to one channel. It is written (and the write is
//! flushed to disk) before the first delivery attempt, and removed only when the receiver
//! accepted it or it was given up on; what was given up on moves to a bounded list of dead
//! letters. A process killed at any point therefore finds, when it opens the outbox again,
//! every notification that was raised and not yet finished, and delivers it under the same
//! idempotency key. The store is [redb](https://docs.rs/redb): one file, crash-safe commits,
//! pure Rust.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::notify::{Notification, NotificationStatus};
use crate::rules::Severity;

/// Entries waiting for delivery, by sequence number (the order they were raised in).
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
/// Entries given up on, by sequence number; the oldest are dropped past [`MAX_DEAD_LETTERS`].
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");

/// How many given-up notifications the outbox keeps for inspection.
pub const MAX_DEAD_LETTERS: usize = 1000;

/// Why the outbox could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The file could not be opened as an outbox: it is not a redb database, it is damaged,
    /// it is locked by another process, or it cannot be read or created.
    #[error(
        "cannot open the alert outbox {path}: {source}. If another wasmcage process uses it, \
         stop that one; if the file is damaged, move it aside (undelivered notifications in it \
         are lost) and start again"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write of an open outbox failed.
    #[error("the alert outbox failed: {0}")]
    Store(String),
}

impl OutboxError {
    fn store(e: impl std::fmt::Display) -> Self {
        OutboxError::Store(e.to_string())
    }
}

/// A notification given up on: refused by its receiver, out of attempts, or for a channel no
/// longer configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The channel it was for.
    pub channel: String,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// Why it was given up on.
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub failed_at_ms: u64,
}

/// An outbox entry as read back: its id and the notification, or why it cannot be decoded.
pub(crate) type Loaded = (u64, Result<Notification, String>);

/// Where notifications wait: a redb file ([`Outbox::open`]) or nowhere
/// ([`Outbox::in_memory`], the queues alone hold them and a restart loses them).
pub struct Outbox {
    store: Store,
}

enum Store {
    Memory(Mutex<MemoryStore>),
    Durable { db: redb::Database, path: PathBuf },
}

#[derive(Default)]
struct MemoryStore {
    next: u64,
    dead: VecDeque<DeadLetter>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.store {
            Store::Memory(_) => f.write_str("Outbox(in memory)"),
            Store::Durable { path, .. } => write!(f, "Outbox({})", path.display()),
        }
    }
}

impl Outbox {
    /// No outbox: notifications live only in the delivery queues.
    pub fn in_memory() -> Self {
        Outbox {
            store: Store::Memory(Mutex::default()),
        }
    }

    /// Opens the outbox file, creating it if it does not exist. A file that is not an outbox,
    /// is damaged beyond repair, or is open in another process is an [`OutboxError::Open`].
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        let open_error = |source| OutboxError::Open {
            path: path.to_owned(),
            source,
        };
        let db = redb::Database::create(path).map_err(open_error)?;
        // Create both tables now, so that readers never meet a missing table.
        let txn = db.begin_write().map_err(OutboxError::store)?;
        txn.open_table(PENDING).map_err(OutboxError::store)?;
        txn.open_table(DEAD).map_err(OutboxError::store)?;
        txn.commit().map_err(OutboxError::store)?;
        Ok(Outbox {
            store: Store::Durable {
                db,
                path: path.to_owned(),
            },
        })
    }

    /// The file behind a durable outbox; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        match &self.store {
            Store::Memory(_) => None,
            Store::Durable { path, .. } => Some(path),
        }
    }

    /// Whether entries survive a restart.
    pub fn is_durable(&self) -> bool {
        matches!(self.store, Store::Durable { .. })
    }

    /// Writes a notification addressed to one channel, durably, and returns its sequence
    /// number. In memory, only numbers it.
    pub(crate) fn put(&self, n: &Notification) -> Result<u64, OutboxError> {
        match &self.store {
            Store::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(PoisonError::into_inner);
                m.next += 1;
                Ok(m.next)
            }
            Store::Durable { db, .. } => {
                let bytes = serde_json::to_vec(&Stored::from(n)).map_err(OutboxError::store)?;
                let txn = db.begin_write().map_err(OutboxError::store)?;
                let id = {
                    let mut table = txn.open_table(PENDING).map_err(OutboxError::store)?;
                    // Ids only need to be unique among the entries present and to grow with
                    // time, so the largest present plus one will do.
                    let id = table
                        .last()
                        .map_err(OutboxError::store)?
                        .map_or(1, |(k, _)| k.value() + 1);
                    table
                        .insert(id, bytes.as_slice())
                        .map_err(OutboxError::store)?;
                    id
                };
                txn.commit().map_err(OutboxError::store)?;
                Ok(id)
            }
        }
    }

    /// Removes a delivered entry.
    pub(crate) fn remove(&self, id: u64) -> Result<(), OutboxError> {
        let Store::Durable { db, .. } = &self.store else {
            return Ok(());
        };
        let txn = db.begin_write().map_err(OutboxError::store)?;
        txn.open_table(PENDING)
            .map_err(OutboxError::store)?
            .remove(id)
            .map_err(OutboxError::store)?;
        txn.commit().map_err(OutboxError::store)
    }

    /// Moves an entry (if it was stored) to the dead letters, in one transaction, dropping
    /// the oldest dead letters past [`MAX_DEAD_LETTERS`].
    pub(crate) fn bury(&self, id: Option<u64>, letter: DeadLetter) -> Result<(), OutboxError> {
        match &self.store {
            Store::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(PoisonError::into_inner);
                m.dead.push_back(letter);
                while m.dead.len() > MAX_DEAD_LETTERS {
                    m.dead.pop_front();
                }
                Ok(())
            }
            Store::Durable { db, .. } => {
                let bytes = serde_json::to_vec(&letter).map_err(OutboxError::store)?;
                let txn = db.begin_write().map_err(OutboxError::store)?;
                {
                    if let Some(id) = id {
                        txn.open_table(PENDING)
                            .map_err(OutboxError::store)?
                            .remove(id)
                            .map_err(OutboxError::store)?;
                    }
                    let mut dead = txn.open_table(DEAD).map_err(OutboxError::store)?;
                    let next = dead
                        .last()
                        .map_err(OutboxError::store)?
                        .map_or(1, |(k, _)| k.value() + 1);
                    dead.insert(next, bytes.as_slice())
                        .map_err(OutboxError::store)?;
                    while dead.len().map_err(OutboxError::store)? > MAX_DEAD_LETTERS as u64 {
                        dead.pop_first().map_err(OutboxError::store)?;
                    }
                }
                txn.commit().map_err(OutboxError::store)
            }
        }
    }

    /// Every waiting entry, oldest first, each addressed to one channel (its only entry in
    /// `channels`). An entry that cannot be decoded is returned as `Err` with its id, so that
    /// the caller can bury it.
    pub(crate) fn load(&self) -> Result<Vec<Loaded>, OutboxError> {
        let Store::Durable { db, .. } = &self.store else {
            return Ok(Vec::new());
        };
        let txn = db.begin_read().map_err(OutboxError::store)?;
        let table = txn.open_table(PENDING).map_err(OutboxError::store)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(OutboxError::store)? {
            let (k, v) = entry.map_err(OutboxError::store)?;
            let decoded = serde_json::from_slice::<Stored>(v.value())
                .map_err(|e| e.to_string())
                .and_then(Notification::try_from);
            out.push((k.value(), decoded));
        }
        Ok(out)
    }

    /// The notifications waiting for delivery, oldest first, each addressed to one channel
    /// (always empty in memory). Undecodable entries are left out.
    pub fn pending(&self) -> Result<Vec<Notification>, OutboxError> {
        Ok(self
            .load()?
            .into_iter()
            .filter_map(|(_, n)| n.ok())
            .collect())
    }

    /// The notifications given up on, oldest first (at most [`MAX_DEAD_LETTERS`]).
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        match &self.store {
            Store::Memory(m) => Ok(m
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .dead
                .iter()
                .cloned()
                .collect()),
            Store::Durable { db, .. } => {
                let txn = db.begin_read().map_err(OutboxError::store)?;
                let table = txn.open_table(DEAD).map_err(OutboxError::store)?;
                let mut out = Vec::new();
                for entry in table.iter().map_err(OutboxError::store)? {
                    let (_, v) = entry.map_err(OutboxError::store)?;
                    if let Ok(letter) = serde_json::from_slice(v.value()) {
                        out.push(letter);
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A notification as stored: plain data, versioned so that a later format can read it.
#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    rule: String,
    description: String,
    severity: String,
    status: String,
    /// `None` for a value that is not a finite number (JSON has no NaN).
    value: Option<f64>,
    starts_at_ms: u64,
    ends_at_ms: Option<u64>,
    channels: Vec<String>,
    idempotency_key: String,
    instance: String,
    step: String,
    firing_number: u64,
}

impl From<&Notification> for Stored {
    fn from(n: &Notification) -> Self {
        Stored {
            v: 1,
            rule: n.rule.clone(),
            description: n.description.clone(),
            severity: n.severity.as_str().to_owned(),
            status: n.status.as_str().to_owned(),
            value: n.value.is_finite().then_some(n.value),
            starts_at_ms: millis(n.starts_at),
            ends_at_ms: n.ends_at.map(millis),
            channels: n.channels.clone(),
            idempotency_key: n.idempotency_key.clone(),
            instance: n.instance.clone(),
            step: n.step.clone(),
            firing_number: n.firing_number,
        }
    }
}

impl TryFrom<Stored> for Notification {
    type Error = String;

    fn try_from(s: Stored) -> Result<Self, String> {
        if s.v != 1 {
            return Err(format!("unknown outbox entry version {}", s.v));
        }
        let severity = match s.severity.as_str() {
            "critical" => Severity::Critical,
            "warning" => Severity::Warning,
            "info" => Severity::Info,
            other => return Err(format!("unknown severity {other:?}")),
        };
        let status = match s.status.as_str() {
            "firing" => NotificationStatus::Firing,
            "resolved" => NotificationStatus::Resolved,
            other => return Err(format!("unknown status {other:?}")),
        };
        Ok(Notification {
            rule: s.rule,
            description: s.description,
            severity,
            status,
            value: s.value.unwrap_or(f64::NAN),
            starts_at: from_millis(s.starts_at_ms),
            ends_at: s.ends_at_ms.map(from_millis),
            channels: s.channels,
            idempotency_key: s.idempotency_key,
            instance: s.instance,
            step: s.step,
            firing_number: s.firing_number,
        })
    }
}
