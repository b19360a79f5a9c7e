//! A deadline-aware `poll_oneoff`.
//!
//! wasmtime-wasi's preview 1 `poll_oneoff` sleeps on the calling thread, where epoch
//! interruption cannot reach it: a guest that asks to sleep for an hour would hold its
//! thread for an hour, whatever its timeout. This replacement sleeps at most until the
//! execution's deadline and then ends the execution with the `timeout` outcome.
//!
//! It supports what guests use `poll_oneoff` for in practice, sleeping on clocks (relative
//! or absolute, realtime or monotonic). Subscriptions on file descriptors are answered at
//! once with `ENOTSUP` in their event, because a sandbox's descriptors are in-memory pipes
//! and preopened directories that are always ready.

use std::time::{Duration, Instant, SystemTime};

use wasmcage_events::LimitKind;
use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;

use crate::limits::LimitBreach;
use crate::module::WASI_P1;
use crate::sandbox::StoreState;

const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const TAG_CLOCK: u8 = 0;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const FLAG_ABSTIME: u16 = 1;
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: u16 = 58;

pub(crate) fn install(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(WASI_P1, "poll_oneoff", poll_oneoff)?;
    linker.func_wrap(WASI_P1, "path_open", path_open)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Where guards report denials: the execution's observer, module and id.
pub(crate) struct Guard {
    pub(crate) observer: std::sync::Arc<dyn wasmcage_events::Observer>,
    pub(crate) module: wasmcage_events::ModuleInfo,
    pub(crate) execution_id: wasmcage_events::ExecutionId,
}

/// WASI errnos that mean "not allowed" rather than "not there" or "malformed".
const ERRNO_ACCES: i32 = 2;
const ERRNO_PERM: i32 = 63;
const ERRNO_ROFS: i32 = 69;
const ERRNO_NOTCAPABLE: i32 = 76;

/// `path_open`, unchanged in behaviour (wasmtime-wasi's own implementation, on cap-std, does
/// the opening and refuses escapes), but every refusal becomes a `SecurityEvent` with the path
/// the guest asked for.
#[allow(clippy::too_many_arguments)]
fn path_open(
    mut caller: Caller<'_, StoreState>,
    dirfd: i32,
    dirflags: i32,
    path_ptr: i32,
    path_len: i32,
    oflags: i32,
    rights_base: i64,
    rights_inheriting: i64,
    fdflags: i32,
    opened_fd: i32,
) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Ok(ERRNO_INVAL);
    };
    // wasmtime-wasi bounds how much guest data one call may copy by a per-call budget that
    // its generated glue refreshes before every call; we call the function directly, so we
    // refresh it the same way.
    let hostcall_fuel = caller.as_context_mut().hostcall_fuel();
    let (bytes, state) = memory.data_and_store_mut(&mut caller);
    let path = bytes
        .get(path_ptr as u32 as usize..)
        .and_then(|rest| rest.get(..path_len as u32 as usize))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let wasi = state
        .wasi
        .as_mut()
        .expect("a WASI context exists for modules that import WASI");
    WasiSnapshotPreview1::set_hostcall_fuel(wasi, hostcall_fuel);
    let mut guest = wiggle::GuestMemory::Unshared(bytes);
    let errno =
        wasmtime_wasi::runtime::in_tokio(wasmtime_wasi::p1::wasi_snapshot_preview1::path_open(
            wasi,
            &mut guest,
            dirfd,
            dirflags,
            path_ptr,
            path_len,
            oflags,
            rights_base,
            rights_inheriting,
            fdflags,
            opened_fd,
        ))?;
    if matches!(
        errno,
        ERRNO_ACCES | ERRNO_PERM | ERRNO_ROFS | ERRNO_NOTCAPABLE
    ) && let Some(guard) = &state.guard
    {
        guard.observer.on_event(&wasmcage_events::Event::Security(
            &wasmcage_events::SecurityEvent {
                kind: wasmcage_events::SecurityEventKind::CapabilityDenied,
                capability: "filesystem",
                target: path,
                action: wasmcage_events::SecurityAction::Denied,
                module: guard.module.clone(),
                execution_id: guard.execution_id,
            },
        ));
    }
    Ok(errno)
}

struct Subscription {
    userdata: u64,
    tag: u8,
    /// For clocks, how long until it fires; `None` for descriptors.
    wait: Option<Duration>,
}

fn poll_oneoff(
    mut caller: Caller<'_, StoreState>,
    subs_ptr: i32,
    events_ptr: i32,
    nsubscriptions: i32,
    nevents_ptr: i32,
) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Ok(ERRNO_INVAL);
    };
    let n = nsubscriptions as u32 as usize;
    if n == 0 {
        return Ok(ERRNO_INVAL);
    }
    let mut raw = vec![0u8; n * SUBSCRIPTION_SIZE];
    if memory
        .read(&caller, subs_ptr as u32 as usize, &mut raw)
        .is_err()
    {
        return Ok(ERRNO_FAULT);
    }
    let state = caller.data();
    let subs: Vec<Subscription> = raw
        .chunks_exact(SUBSCRIPTION_SIZE)
        .map(|s| parse(s, state.wasi_clock_start))
        .collect();

    // Descriptors are answered at once; otherwise sleep until the earliest clock.
    let any_fd = subs.iter().any(|s| s.wait.is_none());
    let earliest = subs.iter().filter_map(|s| s.wait).min().unwrap_or_default();
    if !any_fd {
        let now = Instant::now();
        let deadline = state.deadline;
        if now + earliest > deadline {
            std::thread::sleep(deadline.saturating_duration_since(now));
            return Err(wasmtime::Error::new(LimitBreach {
                kind: LimitKind::Timeout,
                requested: earliest.as_millis() as u64,
                limit: state.timeout.as_millis() as u64,
            }));
        }
        std::thread::sleep(earliest);
    }

    let mut events = Vec::with_capacity(n * EVENT_SIZE);
    let mut count = 0u32;
    for sub in &subs {
        let (fired, error) = match sub.wait {
            None => (true, ERRNO_NOTSUP),
            Some(wait) => (!any_fd && wait <= earliest, 0),
        };
        if !fired {
            continue;
        }
        let mut event = [0u8; EVENT_SIZE];
        event[0..8].copy_from_slice(&sub.userdata.to_le_bytes());
        event[8..10].copy_from_slice(&error.to_le_bytes());
        event[10] = sub.tag;
        events.extend_from_slice(&event);
        count += 1;
    }
    if memory
        .write(&mut caller, events_ptr as u32 as usize, &events)
        .is_err()
        || memory
            .write(
                &mut caller,
                nevents_ptr as u32 as usize,
                &count.to_le_bytes(),
            )
            .is_err()
    {
        return Ok(ERRNO_FAULT);
    }
    Ok(ERRNO_SUCCESS)
}

fn parse(s: &[u8], wasi_clock_start: Instant) -> Subscription {
    let u64_at = |o: usize| u64::from_le_bytes(s[o..o + 8].try_into().expect("8 bytes"));
    let userdata = u64_at(0);
    let tag = s[8];
    if tag != TAG_CLOCK {
        return Subscription {
            userdata,
            tag,
            wait: None,
        };
    }
    let clock = u32::from_le_bytes(s[16..20].try_into().expect("4 bytes"));
    let timeout = Duration::from_nanos(u64_at(24));
    let flags = u16::from_le_bytes(s[40..42].try_into().expect("2 bytes"));
    let wait = if flags & FLAG_ABSTIME == 0 {
        timeout
    } else {
        let now = match clock {
            CLOCK_REALTIME => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
            CLOCK_MONOTONIC => wasi_clock_start.elapsed(),
            // CPU-time clocks: treat the value as relative, the most conservative reading.
            _ => Duration::ZERO,
        };
        timeout.saturating_sub(now)
    };
    Subscription {
        userdata,
        tag,
        wait: Some(wait),
    }
}
