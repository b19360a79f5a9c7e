//! The series of language runtimes: code run in an interpreter (one-shot or a session
//! cell), the pools of pre-started interpreters, and sessions.
//!
//! A runtime's name is chosen by the operator who installed it, so it is bounded like a
//! module name: sanitised into [`runtime_label`], and at most
//! [`MetricsConfig::max_runtime_labels`](crate::MetricsConfig::max_runtime_labels) distinct
//! runtimes get a label of their own, the rest sharing [`OTHER_MODULE`]. Every handle of a
//! runtime is resolved on its first event and reused, so an execution that ran in a runtime
//! costs one short map probe more than one that did not, and one that did not costs only
//! the check of its `runtime` field.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus::{Histogram, IntCounter, IntGauge};
use wasmcage_events::{
    ExecutionReport, ExecutionType, Outcome, RuntimeEvent, RuntimeEventKind, RuntimeTag, SessionEnd,
};

use crate::OTHER_MODULE;
use crate::families::Families;

/// The most characters of a runtime's name that go into its `runtime` label (installed
/// names are at most 32 characters already).
pub const RUNTIME_LABEL_CHARS: usize = 32;

/// The `status` label values of `wasmcage_runtime_executions_total`, in the order of
/// [`status_index`].
const STATUSES: [&str; 6] = [
    "success",
    "error",
    "timeout",
    "out_of_fuel",
    "memory_limit",
    "stack_overflow",
];

/// The `execution_type` label values, in the order of [`type_index`].
const EXECUTION_TYPES: [ExecutionType; 2] = [ExecutionType::Oneshot, ExecutionType::Session];

/// The `reason` label values of `wasmcage_sessions_ended_total`, in the order of
/// [`end_index`].
const SESSION_ENDS: [SessionEnd; 4] = [
    SessionEnd::Deleted,
    SessionEnd::Expired,
    SessionEnd::Died,
    SessionEnd::Shutdown,
];

/// The `warm` label values of `wasmcage_runtime_pool_assignments_total`, indexed by `warm`.
const WARM: [&str; 2] = ["false", "true"];

/// The `runtime` label of a language runtime: its name cut to at most
/// [`RUNTIME_LABEL_CHARS`] characters of `[a-z0-9_-]`, anything else replaced by `_` (`_`
/// for an empty name). An installed runtime's name already has that shape (the registry
/// validates `[a-z0-9][a-z0-9_-]{0,31}`) and so keeps it; the sanitising is for whatever
/// else may claim to be a runtime's name, so that no name can break the exposition format
/// or grow a label without bound. An installed runtime's label starts with a letter or
/// digit, so it never collides with [`OTHER_MODULE`].
pub fn runtime_label(name: &str) -> Arc<str> {
    let mut label: String = name
        .chars()
        .take(RUNTIME_LABEL_CHARS)
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if label.is_empty() {
        label.push('_');
    }
    label.into()
}

/// The status of code run in a runtime: `success` when it returned or exited 0, `error` for
/// any other exit, a trap or a cancellation, else the limit that stopped it.
fn status_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Completed | Outcome::Exited(0) => 0,
        Outcome::Exited(_) | Outcome::Trap(_) | Outcome::Cancelled => 1,
        Outcome::Timeout => 2,
        Outcome::OutOfFuel => 3,
        Outcome::MemoryLimit => 4,
        Outcome::StackOverflow => 5,
    }
}

fn type_index(execution_type: ExecutionType) -> usize {
    match execution_type {
        ExecutionType::Oneshot => 0,
        ExecutionType::Session => 1,
    }
}

fn end_index(end: SessionEnd) -> usize {
    match end {
        SessionEnd::Deleted => 0,
        SessionEnd::Expired => 1,
        SessionEnd::Died => 2,
        SessionEnd::Shutdown => 3,
    }
}

/// The label handles of one runtime label, resolved once on the runtime's first event.
///
/// Counters and histograms exist at zero from then on, so that the first increase is one
/// that `rate()` sees. The pool's gauges are made only when the pool reports its size: a
/// runtime without a pool has no value for them.
struct RuntimeHandles {
    label: Arc<str>,
    /// Whether these are the handles every runtime past the cap shares: gauges that stand
    /// for one runtime's state are not set on them (several runtimes would overwrite each
    /// other's values); `wasmcage_sessions_active` is a sum and stays right.
    shared: bool,
    /// By execution type, then status.
    executions: [[IntCounter; STATUSES.len()]; EXECUTION_TYPES.len()],
    /// By execution type.
    duration: [Histogram; EXECUTION_TYPES.len()],
    sessions_active: IntGauge,
    sessions_created: IntCounter,
    /// By [`end_index`].
    sessions_ended: [IntCounter; SESSION_ENDS.len()],
    /// Indexed by `warm`.
    assignments: [IntCounter; 2],
    assignment: Histogram,
    start_failures: IntCounter,
    /// `wasmcage_runtime_pool_ready` and `wasmcage_runtime_pool_target`, once reported.
    pool: OnceLock<(IntGauge, IntGauge)>,
}

impl RuntimeHandles {
    fn new(f: &Families, label: Arc<str>, shared: bool) -> RuntimeHandles {
        let one = [&*label];
        RuntimeHandles {
            executions: EXECUTION_TYPES.map(|t| {
                STATUSES.map(|status| {
                    f.runtime_executions
                        .with_label_values(&[&*label, t.as_str(), status])
                })
            }),
            duration: EXECUTION_TYPES
                .map(|t| f.runtime_duration.with_label_values(&[&*label, t.as_str()])),
            sessions_active: f.sessions_active.with_label_values(&one),
            sessions_created: f.sessions_created.with_label_values(&one),
            sessions_ended: SESSION_ENDS
                .map(|end| f.sessions_ended.with_label_values(&[&*label, end.as_str()])),
            assignments: WARM.map(|warm| {
                f.runtime_pool_assignments
                    .with_label_values(&[&*label, warm])
            }),
            assignment: f.runtime_pool_assignment.with_label_values(&one),
            start_failures: f.runtime_pool_start_failures.with_label_values(&one),
            pool: OnceLock::new(),
            label,
            shared,
        }
    }

    /// The pool's gauges, made on first use; `None` for the shared handles.
    fn pool_gauges(&self, f: &Families) -> Option<&(IntGauge, IntGauge)> {
        if self.shared {
            return None;
        }
        Some(self.pool.get_or_init(|| {
            let one = [&*self.label];
            (
                f.runtime_pool_ready.with_label_values(&one),
                f.runtime_pool_target.with_label_values(&one),
            )
        }))
    }
}

/// The runtimes seen so far, by name as reported, and the handles of their labels.
pub(crate) struct Runtimes {
    max: usize,
    by_name: Mutex<HashMap<Arc<str>, Arc<RuntimeHandles>>>,
    /// The handles of [`OTHER_MODULE`], for every runtime past the cap. Those names are not
    /// remembered, so that however many there are the map stays at the cap.
    other: OnceLock<Arc<RuntimeHandles>>,
}

impl Runtimes {
    pub(crate) fn new(max: usize) -> Runtimes {
        Runtimes {
            max,
            by_name: Mutex::default(),
            other: OnceLock::new(),
        }
    }

    fn handles(&self, f: &Families, name: &str) -> Arc<RuntimeHandles> {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = by_name.get(name) {
            return h.clone();
        }
        if by_name.len() >= self.max {
            drop(by_name);
            return self
                .other
                .get_or_init(|| Arc::new(RuntimeHandles::new(f, OTHER_MODULE.into(), true)))
                .clone();
        }
        let handles = Arc::new(RuntimeHandles::new(f, runtime_label(name), false));
        by_name.insert(name.into(), handles.clone());
        handles
    }

    /// Records code that ran in the runtime `tag` names.
    pub(crate) fn on_execution(&self, f: &Families, tag: &RuntimeTag, report: &ExecutionReport) {
        let h = self.handles(f, &tag.name);
        let t = type_index(tag.execution_type);
        h.executions[t][status_index(report.outcome)].inc();
        h.duration[t].observe(report.duration.as_secs_f64());
    }

    /// Records a change of a runtime's pool or sessions.
    pub(crate) fn on_event(&self, f: &Families, e: &RuntimeEvent) {
        let h = self.handles(f, &e.runtime);
        match e.kind {
            RuntimeEventKind::Assigned { warm, wait } => {
                h.assignments[usize::from(warm)].inc();
                h.assignment.observe(wait.as_secs_f64());
            }
            RuntimeEventKind::PoolSize { ready, target } => {
                if let Some((r, t)) = h.pool_gauges(f) {
                    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                    r.set(gauge(ready));
                    t.set(gauge(target));
                }
            }
            RuntimeEventKind::StartFailed => h.start_failures.inc(),
            RuntimeEventKind::SessionCreated => {
                h.sessions_created.inc();
                h.sessions_active.inc();
            }
            RuntimeEventKind::SessionEnded(why) => {
                h.sessions_ended[end_index(why)].inc();
                h.sessions_active.dec();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_tables_agree_with_the_label_names() {
        for (i, end) in SESSION_ENDS.into_iter().enumerate() {
            assert_eq!(end_index(end), i, "{}", end.as_str());
        }
        for (i, t) in EXECUTION_TYPES.into_iter().enumerate() {
            assert_eq!(type_index(t), i, "{}", t.as_str());
        }
        let check = |outcome: Outcome, status: &str| {
            assert_eq!(STATUSES[status_index(outcome)], status, "{outcome}");
        };
        check(Outcome::Completed, "success");
        check(Outcome::Exited(0), "success");
        check(Outcome::Exited(1), "error");
        check(
            Outcome::Trap(wasmcage_events::TrapKind::Unreachable),
            "error",
        );
        check(Outcome::Cancelled, "error");
        check(Outcome::Timeout, "timeout");
        check(Outcome::OutOfFuel, "out_of_fuel");
        check(Outcome::MemoryLimit, "memory_limit");
        check(Outcome::StackOverflow, "stack_overflow");
    }

    #[test]
    fn runtime_labels_keep_installed_names_and_bound_the_rest() {
        let check = |name: &str, label: &str| assert_eq!(&*runtime_label(name), label, "{name:?}");
        check("python", "python");
        check("py3-12_x", "py3-12_x");
        check("", "_");
        check("Python", "_ython");
        check("py\"}\n evil", "py____evil");
        check("ü", "_");
        check(&"a".repeat(100), &"a".repeat(RUNTIME_LABEL_CHARS));
    }
}
