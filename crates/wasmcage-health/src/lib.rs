//! Health checks for wasmcage.
//!
//! A [`HealthCheck`] says whether one thing is fine. A [`HealthMonitor`] runs its checks on an
//! interval, each with a timeout and in its own task (a check that hangs is a failure, a check
//! that panics is a failure, neither takes the monitor down), counts consecutive failures, and
//! computes an overall [`HealthStatus`]: `healthy`; `degraded` when a non-critical check fails
//! or a critical one fails fewer times than the threshold; `critical` when a critical check has
//! failed `threshold` times in a row. Status changes are `HealthChanged` events for the
//! observers. [`livez`], [`readyz`] and [`healthz`] answer Kubernetes-style probes.
//!
//! ```
//! use std::sync::Arc;
//! use wasmcage_health::{CheckResult, FnCheck, HealthConfig, HealthMonitor, HealthStatus, readyz};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let monitor = Arc::new(HealthMonitor::new(HealthConfig::default()));
//! monitor.register(Arc::new(FnCheck::new_sync("pool", false, || {
//!     CheckResult::fail("exhausted: 4 of 4 slots in use")
//! })));
//! assert_eq!(monitor.run_once().await, HealthStatus::Degraded);
//! assert_eq!(readyz(&monitor).status, 200, "degraded is still ready");
//! # }
//! ```
//!
//! This crate knows nothing of the engine: the canary execution and the pool check are
//! implemented by the facade, through [`HealthCheck`] and [`FnCheck`].

mod checks;
mod monitor;
mod probes;

pub use checks::{DirectoryCheck, FnCheck, ProcessMemoryCheck};
pub use monitor::{CheckReport, HealthConfig, HealthMonitor, HealthReport, MonitorTask};
pub use probes::{ProbeResponse, healthz, livez, readyz};
pub use wasmcage_events::HealthStatus;

use std::collections::BTreeMap;

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Whether the check passed.
    pub passed: bool,
    /// One line for people.
    pub message: String,
    /// Measurements behind the verdict.
    pub details: BTreeMap<String, String>,
}

impl CheckResult {
    /// A pass with this message.
    pub fn pass(message: impl Into<String>) -> Self {
        CheckResult {
            passed: true,
            message: message.into(),
            details: BTreeMap::new(),
        }
    }

    /// A failure with this message.
    pub fn fail(message: impl Into<String>) -> Self {
        CheckResult {
            passed: false,
            message: message.into(),
            details: BTreeMap::new(),
        }
    }

    /// Adds a detail.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.details.insert(key.to_owned(), value.to_string());
        self
    }
}

/// One thing that can be healthy or not.
#[async_trait::async_trait]
pub trait HealthCheck: Send + Sync {
    /// A short, stable name (`canary`, `memory`, `cache_dir`).
    fn name(&self) -> &str;
    /// Whether failing past the threshold makes the whole process critical (not ready).
    fn critical(&self) -> bool;
    /// Looks once. The monitor measures the response time and enforces the timeout.
    async fn check(&self) -> CheckResult;
}
