//! Built-in checks that need nothing from the engine, and a closure adapter.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use crate::{CheckResult, HealthCheck};

/// Resident memory of this process against a threshold.
#[derive(Debug, Clone)]
pub struct ProcessMemoryCheck {
    max_rss_bytes: u64,
    critical: bool,
}

impl ProcessMemoryCheck {
    /// Fails when the resident set exceeds `max_rss_bytes`.
    pub fn new(max_rss_bytes: u64, critical: bool) -> Self {
        ProcessMemoryCheck {
            max_rss_bytes,
            critical,
        }
    }
}

/// The resident set size from `/proc/self/statm` (in pages, its second field), where there is
/// one.
#[cfg(unix)]
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(rustix::param::page_size() as u64))
}

/// Platforms without `/proc` (and without a page size from rustix) cannot say.
#[cfg(not(unix))]
fn resident_bytes() -> Option<u64> {
    None
}

#[async_trait::async_trait]
impl HealthCheck for ProcessMemoryCheck {
    fn name(&self) -> &str {
        "memory"
    }

    fn critical(&self) -> bool {
        self.critical
    }

    async fn check(&self) -> CheckResult {
        match resident_bytes() {
            None => CheckResult::pass("resident memory cannot be measured on this platform"),
            Some(rss) => {
                let result = if rss <= self.max_rss_bytes {
                    CheckResult::pass(format!(
                        "resident memory {rss} bytes is within {} bytes",
                        self.max_rss_bytes
                    ))
                } else {
                    CheckResult::fail(format!(
                        "resident memory {rss} bytes exceeds {} bytes",
                        self.max_rss_bytes
                    ))
                };
                result
                    .with("rss_bytes", rss)
                    .with("max_rss_bytes", self.max_rss_bytes)
            }
        }
    }
}

/// A directory (such as the module cache) exists, is writable, and has free space.
#[derive(Debug, Clone)]
pub struct DirectoryCheck {
    name: String,
    dir: PathBuf,
    min_free_bytes: u64,
    critical: bool,
}

impl DirectoryCheck {
    /// Checks `dir` under the name `name`, requiring `min_free_bytes` available.
    pub fn new(
        name: impl Into<String>,
        dir: impl Into<PathBuf>,
        min_free_bytes: u64,
        critical: bool,
    ) -> Self {
        DirectoryCheck {
            name: name.into(),
            dir: dir.into(),
            min_free_bytes,
            critical,
        }
    }

    fn look(&self) -> CheckResult {
        let dir = self.dir.display().to_string();
        if !self.dir.is_dir() {
            return CheckResult::fail(format!("{dir} does not exist or is not a directory"))
                .with("dir", &dir);
        }
        let probe = self
            .dir
            .join(format!(".wasmcage-health-{}", std::process::id()));
        if let Err(e) = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe)) {
            return CheckResult::fail(format!("{dir} is not writable: {e}")).with("dir", &dir);
        }
        let free = match free_bytes(&self.dir) {
            Ok(Some(free)) => free,
            Ok(None) => {
                return CheckResult::pass(format!(
                    "{dir} is writable; free space cannot be measured on this platform"
                ))
                .with("dir", &dir);
            }
            Err(e) => {
                return CheckResult::fail(format!("cannot read free space of {dir}: {e}"))
                    .with("dir", &dir);
            }
        };
        let result = if free >= self.min_free_bytes {
            CheckResult::pass(format!("{dir} is writable with {free} bytes free"))
        } else {
            CheckResult::fail(format!(
                "{dir} has {free} bytes free, below {} bytes",
                self.min_free_bytes
            ))
        };
        result
            .with("dir", &dir)
            .with("free_bytes", free)
            .with("min_free_bytes", self.min_free_bytes)
    }
}

/// Bytes available to an unprivileged user on the file system holding `dir`.
#[cfg(unix)]
fn free_bytes(dir: &Path) -> std::io::Result<Option<u64>> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(Some(stat.f_bavail.saturating_mul(stat.f_frsize)))
}

/// Without statvfs there is no portable way to ask; the check says so instead of guessing.
#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> std::io::Result<Option<u64>> {
    Ok(None)
}

#[async_trait::async_trait]
impl HealthCheck for DirectoryCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn critical(&self) -> bool {
        self.critical
    }

    async fn check(&self) -> CheckResult {
        // File system calls block; keep them off the runtime's workers.
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.look())
            .await
            .unwrap_or_else(|e| CheckResult::fail(format!("the check failed: {e}")))
    }
}

type CheckFn = dyn Fn() -> Pin<Box<dyn Future<Output = CheckResult> + Send>> + Send + Sync;

/// A check from a closure returning a future: how the facade adds checks that need the engine
/// (the canary, the pool).
pub struct FnCheck {
    name: String,
    critical: bool,
    check: Box<CheckFn>,
}

impl std::fmt::Debug for FnCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnCheck")
            .field("name", &self.name)
            .field("critical", &self.critical)
            .finish()
    }
}

impl FnCheck {
    /// A check named `name` that runs `check`.
    pub fn new<F, Fut>(name: impl Into<String>, critical: bool, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        FnCheck {
            name: name.into(),
            critical,
            check: Box::new(move || Box::pin(check())),
        }
    }

    /// A check named `name` whose verdict `check` gives at once, for checks that only read
    /// state (counters, a pool's gauges). It runs on the runtime's workers, so it must not
    /// block; wrap blocking work in `tokio::task::spawn_blocking` and use [`FnCheck::new`].
    pub fn new_sync<F>(name: impl Into<String>, critical: bool, check: F) -> Self
    where
        F: Fn() -> CheckResult + Send + Sync + 'static,
    {
        FnCheck::new(name, critical, move || std::future::ready(check()))
    }
}

#[async_trait::async_trait]
impl HealthCheck for FnCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn critical(&self) -> bool {
        self.critical
    }

    async fn check(&self) -> CheckResult {
        (self.check)().await
    }
}
