//! Turns a [`Policy`] into a guest's WASI context. Nothing is granted here that the policy
//! does not name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmcage_policy::{Access, Clocks, Output, Policy, Randomness};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use crate::output::BoundedOutput;
use crate::{CommandInput, Error, Stdin};

/// Builds the WASI context for one execution. A scratch directory, when granted, is created
/// here and kept in `scratch` so that it is deleted when the execution ends.
pub(crate) fn wasi_context(
    policy: &Policy,
    module: &crate::Module,
    input: CommandInput,
    stdout: &BoundedOutput,
    stderr: &BoundedOutput,
    scratch: &mut Option<tempfile::TempDir>,
) -> Result<WasiP1Ctx, Error> {
    let mut b = WasiCtxBuilder::new();
    let mut argv = Vec::with_capacity(1 + policy.args.len() + input.args.len());
    argv.push(module.info().name.to_string());
    argv.extend(policy.args.iter().cloned());
    argv.extend(input.args);
    b.args(&argv).allow_blocking_current_thread(true);

    for (key, value) in &policy.env {
        b.env(key, value);
    }
    for key in &policy.inherit_env {
        if let Ok(value) = std::env::var(key) {
            b.env(key, value);
        }
    }

    // Closed streams are left at the builder's defaults: stdin at end of file, output
    // discarded.
    if policy.stdin {
        match input.stdin {
            Stdin::Bytes(bytes) => {
                b.stdin(MemoryInputPipe::new(bytes));
            }
            // The context is built after the execution's deadline is set, so this deadline
            // is never earlier than the store's: a guest waiting here at its deadline ends
            // with the same timeout.
            Stdin::Streamed(stream) => {
                let deadline = crate::store::deadline(Instant::now(), policy.limits.timeout);
                b.stdin(stream.for_guest(deadline, policy.limits.timeout));
            }
        }
    }
    if policy.stdout == Output::Capture {
        b.stdout(stdout.clone());
    }
    if policy.stderr == Output::Capture {
        b.stderr(stderr.clone());
    }

    for dir in &policy.dirs {
        let perms = match dir.access {
            Access::ReadOnly => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        b.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| {
            Error::Config(format!(
                "cannot open granted directory {}: {e}",
                dir.host.display()
            ))
        })?;
    }
    if let Some(guest) = &policy.scratch
        && !module.uses_paths()
    {
        // A module that cannot reach into a directory cannot tell a fresh scratch
        // directory from the engine's one empty, read-only stand-in, so it gets that and
        // no directory is created and removed for it.
        let empty = module.engine().empty_dir()?;
        b.preopened_dir(empty, guest, FsPerms::ReadOnly)
            .map_err(|e| Error::Internal(format!("cannot open the empty directory: {e}")))?;
    } else if let Some(guest) = &policy.scratch {
        let dir = tempfile::Builder::new()
            .prefix("wasmcage-scratch-")
            .tempdir()
            .map_err(|e| Error::Internal(format!("cannot create a scratch directory: {e}")))?;
        b.preopened_dir(dir.path(), guest, FsPerms::ReadWrite)
            .map_err(|e| Error::Internal(format!("cannot open the scratch directory: {e}")))?;
        *scratch = Some(dir);
    }

    if policy.clocks == Clocks::Deterministic {
        b.wall_clock(SteppingClock::default());
        b.monotonic_clock(SteppingClock::default());
    }
    if let Randomness::Deterministic(seed) = policy.random {
        b.secure_random(wasmtime_wasi::Deterministic::new(seeded_bytes(seed)));
        b.insecure_random(wasmtime_wasi::Deterministic::new(seeded_bytes(
            seed ^ 0x5eed,
        )));
        b.insecure_random_seed(u128::from(seed));
    }
    Ok(b.build_p1())
}

/// A reproducible clock: starts at zero (the Unix epoch for wall time) and advances one
/// millisecond each time it is read.
#[derive(Default)]
struct SteppingClock {
    reads: AtomicU64,
}

impl SteppingClock {
    fn tick(&self) -> Duration {
        Duration::from_millis(self.reads.fetch_add(1, Ordering::Relaxed))
    }
}

impl HostWallClock for SteppingClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.tick()
    }
}

impl HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.tick().as_nanos() as u64
    }
}

/// 4 KiB of reproducible bytes from a seed (splitmix64); the generator cycles through them.
fn seeded_bytes(seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..512)
        .flat_map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .collect()
}
