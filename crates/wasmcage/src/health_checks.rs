//! Health checks that need the engine, built on `wasmcage-health`'s trait: the canary (a
//! tiny module run through a warm pool, expected to return 42) and pool exhaustion.

use std::sync::{Arc, Mutex, PoisonError};

use wasmcage_health::{CheckResult, FnCheck, HealthCheck};

use crate::{Engine, Error, Limits, Outcome, PoolConfig, Sandbox, Value, WarmPool};

/// The canary module: one export that returns 42.
pub const CANARY_WAT: &str = r#"(module (func (export "canary") (result i32) i32.const 42))"#;

/// Runs the canary module through a warm pool and expects 42: if this fails, the process
/// cannot run guests. Critical.
pub struct CanaryCheck {
    pool: Mutex<WarmPool>,
}

impl std::fmt::Debug for CanaryCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanaryCheck").finish_non_exhaustive()
    }
}

impl CanaryCheck {
    /// A canary on `engine` with small limits and a pool of `pool` slots.
    pub fn new(engine: &Engine, pool: PoolConfig) -> Result<Self, Error> {
        Ok(CanaryCheck {
            pool: Mutex::new(Self::pool(engine, pool)?),
        })
    }

    fn pool(engine: &Engine, pool: PoolConfig) -> Result<WarmPool, Error> {
        let module = engine.compile("canary.wat", CANARY_WAT.as_bytes())?;
        let limits = Limits {
            memory_bytes: 1 << 20,
            fuel: Some(10_000),
            ..Limits::default()
        };
        let sandbox = Sandbox::builder(engine).limits(limits).build()?;
        WarmPool::new(&sandbox, &module, pool)
    }

    /// Replaces the canary's pool (to change its size, or to recover from a broken one).
    pub fn set_pool(&self, engine: &Engine, pool: PoolConfig) -> Result<(), Error> {
        *self.pool.lock().unwrap_or_else(PoisonError::into_inner) = Self::pool(engine, pool)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl HealthCheck for CanaryCheck {
    fn name(&self) -> &str {
        "canary"
    }

    fn critical(&self) -> bool {
        true
    }

    async fn check(&self) -> CheckResult {
        let pool = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match pool.call_async("canary", &[]).await {
            Ok(out)
                if out.report.outcome == Outcome::Completed && out.results == [Value::I32(42)] =>
            {
                CheckResult::pass("the canary returned 42")
                    .with("duration_us", out.report.duration.as_micros())
                    .with("execution_id", out.report.execution_id)
            }
            Ok(out) => CheckResult::fail(format!(
                "the canary ended in {} with {:?} instead of returning 42",
                out.report.outcome, out.results
            )),
            Err(e) => CheckResult::fail(format!("the canary could not run: {e}")),
        }
    }
}

/// Fails while every slot of `pool` is in use. Not critical: a saturated pool degrades
/// service but the process still runs guests.
pub fn pool_check(name: &str, pool: WarmPool) -> impl HealthCheck {
    let pool = Arc::new(pool);
    FnCheck::new(name, false, move || {
        let stats = pool.stats();
        async move {
            let result = if stats.max > 0 && stats.in_use < stats.max {
                CheckResult::pass(format!("{} of {} slots in use", stats.in_use, stats.max))
            } else {
                CheckResult::fail(format!(
                    "exhausted: {} of {} slots in use",
                    stats.in_use, stats.max
                ))
            };
            result
                .with("in_use", stats.in_use)
                .with("max", stats.max)
                .with("available", stats.available)
        }
    })
}
