//! Guards around the WASI preview 1 functions where wasmtime-wasi alone would let a guest
//! hurt the host or escape a limit.
//!
//! - `poll_oneoff`: wasmtime-wasi sleeps on the calling thread, where epoch interruption
//!   cannot reach it, so a guest asking to sleep for an hour would hold its thread for an
//!   hour. Clock-only polls sleep here, at most until the deadline and waking on
//!   cancellation. Polls with descriptor subscriptions go to wasmtime-wasi (the sandbox's
//!   descriptors, in-memory pipes and files, are always ready; a streamed stdin waits at
//!   most until the deadline, see `stdin.rs`) under the same deadline.
//!   Every poll bounds its subscription count by the guest's memory before allocating.
//! - `random_get`: filled in slices, checking the deadline between them.
//! - `path_open`: unchanged behaviour, but every refusal becomes a `SecurityEvent`.
//! - `fd_write`, `fd_pwrite`, `fd_allocate`, `fd_filestat_set_size`: writes to regular files
//!   count against the execution's disk limit; past it the guest gets `ENOSPC`.
//!
//! Each guard calls wasmtime-wasi's own implementation with the guest's memory, so WASI's
//! semantics (and cap-std's refusal of escapes) stay wasmtime-wasi's.

use std::time::{Duration, Instant, SystemTime};

use wasmcage_events::{
    Event, ExecutionId, LimitKind, ModuleInfo, Observer, SecurityAction, SecurityEvent,
    SecurityEventKind,
};
use wasmtime::{AsContextMut, Caller, Extern, Linker, Memory};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;

use crate::limits::LimitBreach;
use crate::module::WASI_P1;
use crate::store::StoreState;

const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const TAG_CLOCK: u8 = 0;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const FLAG_ABSTIME: u16 = 1;
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSPC: i32 = 51;
const ERRNO_MFILE: i32 = 33;
const OFLAGS_CREAT: i32 = 1;
/// What one new directory entry costs against the disk limit: a block for its inode.
const ENTRY_BYTES: u64 = 4096;
/// The most bytes of a path copied into a security event.
const MAX_REPORTED_PATH: usize = 1024;
/// The most subscriptions one `poll_oneoff` may have. wasmtime-wasi answers descriptor
/// polls in one host call that the deadline cannot interrupt, so its size is bounded.
const MAX_SUBSCRIPTIONS: usize = 4096;
const FILETYPE_REGULAR_FILE: u8 = 4;
/// The most buffers one `fd_read` of an interactive guest's stdin takes (POSIX's `IOV_MAX`
/// on Linux): the host copies the list, so its length is bounded.
const IOV_MAX: u32 = 1024;
/// The most bytes `random_get` fills before looking at the deadline again.
const RANDOM_SLICE: usize = 1 << 20;

pub(crate) fn install(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(WASI_P1, "poll_oneoff", poll_oneoff)?;
    linker.func_wrap(WASI_P1, "path_open", path_open)?;
    linker.func_wrap(WASI_P1, "random_get", random_get)?;
    linker.func_wrap(WASI_P1, "fd_read", fd_read)?;
    linker.func_wrap(WASI_P1, "fd_write", fd_write)?;
    linker.func_wrap(WASI_P1, "fd_pwrite", fd_pwrite)?;
    linker.func_wrap(WASI_P1, "fd_allocate", fd_allocate)?;
    linker.func_wrap(WASI_P1, "fd_filestat_set_size", fd_filestat_set_size)?;
    linker.func_wrap(WASI_P1, "fd_close", fd_close)?;
    linker.func_wrap(WASI_P1, "path_create_directory", path_create_directory)?;
    linker.func_wrap(WASI_P1, "path_symlink", path_symlink)?;
    linker.func_wrap(WASI_P1, "path_link", path_link)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Where guards report denials: the execution's observer, module and id.
pub(crate) struct Guard {
    pub(crate) observer: std::sync::Arc<dyn Observer>,
    pub(crate) module: ModuleInfo,
    pub(crate) execution_id: ExecutionId,
}

impl Guard {
    fn report(&self, kind: SecurityEventKind, capability: &'static str, target: String) {
        self.observer.on_event(&Event::Security(&SecurityEvent {
            kind,
            capability,
            target,
            action: SecurityAction::Denied,
            module: self.module.clone(),
            execution_id: self.execution_id,
        }));
    }
}

/// WASI errnos that mean "not allowed" rather than "not there" or "malformed".
const ERRNO_ACCES: i32 = 2;
const ERRNO_PERM: i32 = 63;
const ERRNO_ROFS: i32 = 69;
const ERRNO_NOTCAPABLE: i32 = 76;

fn memory_of(caller: &mut Caller<'_, StoreState>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Some(memory),
        _ => None,
    }
}

/// Calls one of wasmtime-wasi's preview 1 functions with the guest's memory.
///
/// wasmtime-wasi bounds how much guest data one call may copy by a per-call budget that its
/// generated glue refreshes before every call; we call the function directly, so we refresh
/// it the same way.
fn call_wasi<R>(
    caller: &mut Caller<'_, StoreState>,
    memory: Memory,
    f: impl FnOnce(&mut WasiP1Ctx, &mut wiggle::GuestMemory<'_>) -> R,
) -> R {
    let hostcall_fuel = caller.as_context_mut().hostcall_fuel();
    let (bytes, state) = memory.data_and_store_mut(caller);
    let wasi = state.wasi();
    WasiSnapshotPreview1::set_hostcall_fuel(wasi, hostcall_fuel);
    let mut guest = wiggle::GuestMemory::Unshared(bytes);
    f(wasi, &mut guest)
}

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
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    // Only a bounded prefix of the path is kept for the event: the guest chooses its length.
    let path = memory
        .data(&caller)
        .get(path_ptr as u32 as usize..)
        .and_then(|rest| rest.get(..(path_len as u32 as usize).min(MAX_REPORTED_PATH)))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    if caller.data().open_files >= crate::store::MAX_OPEN_FILES {
        return Ok(ERRNO_MFILE);
    }
    if oflags & OFLAGS_CREAT != 0 && !take_entry(&mut caller) {
        return Ok(ERRNO_NOSPC);
    }
    let errno = call_wasi(&mut caller, memory, |wasi, guest| {
        wasmtime_wasi::runtime::in_tokio(p1::path_open(
            wasi,
            guest,
            dirfd,
            dirflags,
            path_ptr,
            path_len,
            oflags,
            rights_base,
            rights_inheriting,
            fdflags,
            opened_fd,
        ))
    })?;
    if errno == ERRNO_SUCCESS {
        let state = caller.data_mut();
        state.open_files += 1;
        state.opened_files = true;
    }
    if matches!(
        errno,
        ERRNO_ACCES | ERRNO_PERM | ERRNO_ROFS | ERRNO_NOTCAPABLE
    ) && let Some(guard) = &caller.data().guard
    {
        guard.report(SecurityEventKind::CapabilityDenied, "filesystem", path);
    }
    Ok(errno)
}

fn fd_close(mut caller: Caller<'_, StoreState>, fd: i32) -> wasmtime::Result<i32> {
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let errno = call_wasi(&mut caller, memory, |wasi, guest| {
        wasmtime_wasi::runtime::in_tokio(p1::fd_close(wasi, guest, fd))
    })?;
    if errno == ERRNO_SUCCESS {
        let state = caller.data_mut();
        state.open_files = state.open_files.saturating_sub(1);
    }
    Ok(errno)
}

/// Takes one new directory entry from the execution's allowance (and its block from the
/// disk limit); `false`, with a security event the first time, when none is left.
fn take_entry(caller: &mut Caller<'_, StoreState>) -> bool {
    let state = caller.data_mut();
    let disk_ok = state.disk_left.is_none_or(|left| left >= ENTRY_BYTES);
    if state.entries_left > 0 && disk_ok {
        state.entries_left -= 1;
        if let Some(left) = &mut state.disk_left {
            *left -= ENTRY_BYTES;
        }
        return true;
    }
    report_disk(
        state,
        format!(
            "a new directory entry requested; {} of {} entries left",
            state.entries_left,
            crate::store::MAX_NEW_ENTRIES
        ),
    );
    false
}

/// Reports a refused write or entry once per execution: a guest retrying in a loop must not
/// flood the observers.
fn report_disk(state: &mut StoreState, target: String) {
    if std::mem::replace(&mut state.disk_reported, true) {
        return;
    }
    if let Some(guard) = &state.guard {
        guard.observer.on_event(&Event::Security(&SecurityEvent {
            kind: SecurityEventKind::LimitExceeded(LimitKind::Disk),
            capability: LimitKind::Disk.as_str(),
            target,
            action: SecurityAction::Denied,
            module: guard.module.clone(),
            execution_id: guard.execution_id,
        }));
    }
}

/// A call that creates one directory entry: it takes the entry from the execution's
/// allowance first, and answers `ENOSPC` when none is left.
fn creating_entry(
    mut caller: Caller<'_, StoreState>,
    f: impl FnOnce(&mut WasiP1Ctx, &mut wiggle::GuestMemory<'_>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    if !take_entry(&mut caller) {
        return Ok(ERRNO_NOSPC);
    }
    call_wasi(&mut caller, memory, f)
}

fn path_create_directory(
    caller: Caller<'_, StoreState>,
    fd: i32,
    path_ptr: i32,
    path_len: i32,
) -> wasmtime::Result<i32> {
    creating_entry(caller, |wasi, guest| {
        wasmtime_wasi::runtime::in_tokio(p1::path_create_directory(
            wasi, guest, fd, path_ptr, path_len,
        ))
    })
}

fn path_symlink(
    caller: Caller<'_, StoreState>,
    old_ptr: i32,
    old_len: i32,
    fd: i32,
    new_ptr: i32,
    new_len: i32,
) -> wasmtime::Result<i32> {
    creating_entry(caller, |wasi, guest| {
        wasmtime_wasi::runtime::in_tokio(p1::path_symlink(
            wasi, guest, old_ptr, old_len, fd, new_ptr, new_len,
        ))
    })
}

#[allow(clippy::too_many_arguments)]
fn path_link(
    caller: Caller<'_, StoreState>,
    old_fd: i32,
    old_flags: i32,
    old_ptr: i32,
    old_len: i32,
    new_fd: i32,
    new_ptr: i32,
    new_len: i32,
) -> wasmtime::Result<i32> {
    creating_entry(caller, |wasi, guest| {
        wasmtime_wasi::runtime::in_tokio(p1::path_link(
            wasi, guest, old_fd, old_flags, old_ptr, old_len, new_fd, new_ptr, new_len,
        ))
    })
}

/// `random_get` in slices: filling a guest's whole memory with random bytes takes long
/// enough to matter, and a host call cannot be interrupted by the epoch.
fn random_get(mut caller: Caller<'_, StoreState>, buf: i32, len: i32) -> wasmtime::Result<i32> {
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let (start, len) = (buf as u32 as usize, len as u32 as usize);
    if start
        .checked_add(len)
        .is_none_or(|end| end > memory.data_size(&caller))
    {
        return Ok(ERRNO_FAULT);
    }
    let mut done = 0;
    while done < len {
        if let Some(stop) = caller.data().stop_reason() {
            return Err(stop);
        }
        let slice = (len - done).min(RANDOM_SLICE);
        let at = (start + done) as i32;
        let errno = call_wasi(&mut caller, memory, |wasi, guest| {
            p1::random_get(wasi, guest, at, slice as i32)
        })?;
        if errno != ERRNO_SUCCESS {
            return Ok(errno);
        }
        done += slice;
    }
    Ok(ERRNO_SUCCESS)
}

/// Reads a file descriptor's type through wasmtime-wasi, into a buffer of our own rather
/// than the guest's memory.
fn filetype(caller: &mut Caller<'_, StoreState>, fd: i32) -> Option<u8> {
    let mut scratch = [0u8; 24];
    let errno = {
        let wasi = caller.data_mut().wasi();
        let mut mem = wiggle::GuestMemory::Unshared(&mut scratch);
        wasmtime_wasi::runtime::in_tokio(p1::fd_fdstat_get(wasi, &mut mem, fd, 0)).ok()?
    };
    (errno == ERRNO_SUCCESS).then_some(scratch[0])
}

/// The size of an open file, through wasmtime-wasi.
fn file_size(caller: &mut Caller<'_, StoreState>, fd: i32) -> Option<u64> {
    let mut scratch = [0u8; 64];
    let errno = {
        let wasi = caller.data_mut().wasi();
        let mut mem = wiggle::GuestMemory::Unshared(&mut scratch);
        wasmtime_wasi::runtime::in_tokio(p1::fd_filestat_get(wasi, &mut mem, fd, 0)).ok()?
    };
    let size = scratch[32..40].try_into().ok().map(u64::from_le_bytes)?;
    (errno == ERRNO_SUCCESS).then_some(size)
}

/// Whether writing `bytes` more to regular file `fd` fits the disk limit. Writes to
/// anything that is not a regular file (stdout, stderr, pipes) are not counted.
fn disk_allows(caller: &mut Caller<'_, StoreState>, fd: i32, bytes: u64) -> Disk {
    let Some(left) = caller.data().disk_left else {
        return Disk::Unlimited;
    };
    // A regular file can only be reached through `path_open`: until the guest has opened
    // one, every write goes to stdout, stderr or a pipe, and needs no look at its descriptor.
    if !caller.data().opened_files || filetype(caller, fd) != Some(FILETYPE_REGULAR_FILE) {
        return Disk::Unlimited;
    }
    if bytes <= left {
        return Disk::Counted;
    }
    let state = caller.data_mut();
    state.disk_left = Some(0);
    report_disk(state, format!("{bytes} bytes more requested, {left} left"));
    Disk::Refused
}

#[derive(PartialEq)]
enum Disk {
    Unlimited,
    Counted,
    Refused,
}

fn charge(caller: &mut Caller<'_, StoreState>, bytes: u64) {
    if let Some(left) = &mut caller.data_mut().disk_left {
        *left = left.saturating_sub(bytes);
    }
}

/// The total length of an iovec array in guest memory; `None` if it is out of bounds.
fn iovecs_len(memory: &[u8], iovs: i32, count: i32) -> Option<u64> {
    let (start, count) = (iovs as u32 as usize, count as u32 as usize);
    let table = memory.get(start..start.checked_add(count.checked_mul(8)?)?)?;
    Some(
        table
            .chunks_exact(8)
            .map(|iov| u64::from(u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]])))
            .sum(),
    )
}

fn read_u32(memory: &[u8], at: i32) -> Option<u32> {
    let at = at as u32 as usize;
    let b = memory.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// `fd_read`: wasmtime-wasi's own, except stdin of an interactive guest, which reads the
/// current turn's input from its gate (see `interactive.rs`), copied straight into the
/// guest's buffers.
fn fd_read(
    mut caller: Caller<'_, StoreState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nread: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let gate = match (fd, &caller.data().gate) {
        (0, Some(gate)) => gate.clone(),
        _ => {
            return call_wasi(&mut caller, memory, |wasi, guest| {
                wasmtime_wasi::runtime::in_tokio(p1::fd_read(
                    wasi, guest, fd, iovs, iovs_len, nread,
                ))
            });
        }
    };
    // At most IOV_MAX buffers (the list is copied), each checked against the guest's memory
    // before anything is read.
    if iovs_len as u32 > IOV_MAX {
        return Ok(ERRNO_INVAL);
    }
    let Some(buffers) = iovecs(memory.data(&caller), iovs, iovs_len) else {
        return Ok(ERRNO_FAULT);
    };
    if read_u32(memory.data(&caller), nread).is_none() {
        return Ok(ERRNO_FAULT);
    }
    let want: u64 = buffers.iter().map(|&(_, len)| u64::from(len)).sum();
    let want = usize::try_from(want).unwrap_or(usize::MAX);
    let bytes = if want == 0 {
        bytes::Bytes::new()
    } else {
        crate::interactive::read_stdin(&mut caller, &gate, want)?
    };
    let data = memory.data_mut(&mut caller);
    let mut rest = &bytes[..];
    for (at, len) in buffers {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(len as usize);
        let at = at as usize;
        data[at..at + n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    let n = bytes.len() as u32;
    let at = nread as u32 as usize;
    data[at..at + 4].copy_from_slice(&n.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// The `(address, length)` of each buffer of an iovec array, every one inside `memory`;
/// `None` if the array or any buffer is not.
fn iovecs(memory: &[u8], iovs: i32, count: i32) -> Option<Vec<(u32, u32)>> {
    let (start, count) = (iovs as u32 as usize, count as u32 as usize);
    let table = memory.get(start..start.checked_add(count.checked_mul(8)?)?)?;
    table
        .chunks_exact(8)
        .map(|iov| {
            let at = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
            let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
            let end = (at as usize).checked_add(len as usize)?;
            (end <= memory.len()).then_some((at, len))
        })
        .collect()
}

fn fd_write(
    caller: Caller<'_, StoreState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    counted_write(caller, fd, iovs, iovs_len, nwritten, None)
}

fn fd_pwrite(
    caller: Caller<'_, StoreState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    counted_write(caller, fd, iovs, iovs_len, nwritten, Some(offset))
}

fn counted_write(
    mut caller: Caller<'_, StoreState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
    offset: Option<i64>,
) -> wasmtime::Result<i32> {
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let Some(asked) = iovecs_len(memory.data(&caller), iovs, iovs_len) else {
        return Ok(ERRNO_FAULT);
    };
    let disk = disk_allows(&mut caller, fd, asked);
    if disk == Disk::Refused {
        return Ok(ERRNO_NOSPC);
    }
    let written = call_wasi(&mut caller, memory, |wasi, guest| {
        wasmtime_wasi::runtime::in_tokio(async {
            match offset {
                None => p1::fd_write(wasi, guest, fd, iovs, iovs_len, nwritten).await,
                Some(o) => p1::fd_pwrite(wasi, guest, fd, iovs, iovs_len, o, nwritten).await,
            }
        })
    });
    let errno = match written {
        Ok(errno) => errno,
        Err(trap) => {
            // The bytes may be on disk although the call trapped (an `nwritten` pointer out
            // of bounds): charge everything asked for.
            if disk == Disk::Counted {
                charge(&mut caller, asked);
            }
            return Err(trap);
        }
    };
    if disk == Disk::Counted && errno == ERRNO_SUCCESS {
        let written = read_u32(memory.data(&caller), nwritten).unwrap_or(0);
        charge(&mut caller, u64::from(written));
    }
    Ok(errno)
}

fn fd_allocate(
    caller: Caller<'_, StoreState>,
    fd: i32,
    offset: i64,
    len: i64,
) -> wasmtime::Result<i32> {
    let end = (offset as u64).saturating_add(len as u64);
    grow_file(caller, fd, end, |wasi, guest| {
        p1::fd_allocate(wasi, guest, fd, offset, len)
    })
}

fn fd_filestat_set_size(
    caller: Caller<'_, StoreState>,
    fd: i32,
    size: i64,
) -> wasmtime::Result<i32> {
    grow_file(caller, fd, size as u64, |wasi, guest| {
        wasmtime_wasi::runtime::in_tokio(p1::fd_filestat_set_size(wasi, guest, fd, size))
    })
}

/// A call that may make file `fd` `new_size` bytes long: the growth counts against the
/// disk limit.
fn grow_file(
    mut caller: Caller<'_, StoreState>,
    fd: i32,
    new_size: u64,
    f: impl FnOnce(&mut WasiP1Ctx, &mut wiggle::GuestMemory<'_>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let growth = match caller.data().disk_left {
        None => 0,
        Some(_) => new_size.saturating_sub(file_size(&mut caller, fd).unwrap_or(0)),
    };
    let disk = if growth > 0 {
        disk_allows(&mut caller, fd, growth)
    } else {
        Disk::Unlimited
    };
    if disk == Disk::Refused {
        return Ok(ERRNO_NOSPC);
    }
    let errno = call_wasi(&mut caller, memory, f)?;
    if disk == Disk::Counted && errno == ERRNO_SUCCESS {
        charge(&mut caller, growth);
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
    let Some(memory) = memory_of(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let n = nsubscriptions as u32 as usize;
    if n == 0 || n > MAX_SUBSCRIPTIONS {
        return Ok(ERRNO_INVAL);
    }
    // Bound everything by the guest's own memory before allocating anything: both arrays
    // must fit in it, so their sizes are at most the memory's size.
    let size = memory.data_size(&caller);
    let fits = |ptr: i32, each: usize| {
        n.checked_mul(each)
            .and_then(|len| (ptr as u32 as usize).checked_add(len))
            .is_some_and(|end| end <= size)
    };
    if !fits(subs_ptr, SUBSCRIPTION_SIZE) || !fits(events_ptr, EVENT_SIZE) {
        return Ok(ERRNO_FAULT);
    }
    let start = subs_ptr as u32 as usize;
    let raw = &memory.data(&caller)[start..start + n * SUBSCRIPTION_SIZE];
    let clock_start = caller.data().wasi_clock_start;
    let subs: Vec<Subscription> = raw
        .chunks_exact(SUBSCRIPTION_SIZE)
        .map(|s| parse(s, clock_start))
        .collect();

    if subs.iter().any(|s| s.wait.is_none()) {
        return poll_descriptors(
            caller,
            memory,
            subs_ptr,
            events_ptr,
            nsubscriptions,
            nevents_ptr,
        );
    }

    // Clocks only: sleep until the earliest, but never past the deadline.
    let earliest = subs.iter().filter_map(|s| s.wait).min().unwrap_or_default();
    let state = caller.data();
    if crate::store::deadline(Instant::now(), earliest) > state.deadline {
        let left = state.deadline.saturating_duration_since(Instant::now());
        state.sleep(left)?;
        return Err(wasmtime::Error::new(LimitBreach {
            kind: LimitKind::Timeout,
            requested: earliest.as_millis() as u64,
            limit: state.timeout.as_millis() as u64,
        }));
    }
    state.sleep(earliest)?;

    let mut events = Vec::with_capacity(n * EVENT_SIZE);
    let mut count = 0u32;
    for sub in subs
        .iter()
        .filter(|s| s.wait.is_some_and(|w| w <= earliest))
    {
        let mut event = [0u8; EVENT_SIZE];
        event[0..8].copy_from_slice(&sub.userdata.to_le_bytes());
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

/// A poll with descriptor subscriptions, answered by wasmtime-wasi. The sandbox's
/// descriptors (in-memory stdin, captured stdout and stderr, regular files) are always
/// ready, so wasmtime-wasi answers at once with their events, and with any clock that has
/// already fired; it never sleeps on a clock while a descriptor is ready. A streamed stdin
/// is the exception: it is ready once bytes or the end arrive, or at the deadline, and
/// lets the poll's clocks fire meanwhile.
fn poll_descriptors(
    mut caller: Caller<'_, StoreState>,
    memory: Memory,
    subs_ptr: i32,
    events_ptr: i32,
    nsubscriptions: i32,
    nevents_ptr: i32,
) -> wasmtime::Result<i32> {
    call_wasi(&mut caller, memory, |wasi, guest| {
        wasmtime_wasi::runtime::in_tokio(p1::poll_oneoff(
            wasi,
            guest,
            subs_ptr,
            events_ptr,
            nsubscriptions,
            nevents_ptr,
        ))
    })
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
