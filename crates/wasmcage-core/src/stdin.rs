//! What a WASI command reads on stdin: bytes held in memory, or a host reader streamed to
//! the guest as it reads, up to a cap.
//!
//! A streamed stdin is read lazily: a helper thread reads one chunk from the host only when
//! the guest asks for more and nothing is pending, so the host never holds more than one
//! chunk of it, and a guest that stops reading early leaves the rest unread. Past the cap
//! the guest sees end of file and [`StreamedStdin::truncated`] says so.

use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmcage_events::LimitKind;
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError};

use crate::limits::LimitBreach;

/// The most bytes read from the host at once, and so the most held for the guest.
const CHUNK: usize = 64 * 1024;

/// How long a guest waiting for stdin waits before it lets other parts of the same WASI
/// call (the clocks of a `poll_oneoff`) look at the time.
const SLICE: Duration = Duration::from_millis(10);

/// What a WASI command reads on stdin. Converts from bytes (`Vec<u8>`, `&[u8]`, `String`,
/// `&str`, `Bytes`) and from a [`StreamedStdin`].
#[derive(Clone, PartialEq, Eq)]
pub enum Stdin {
    /// These bytes, then end of file. The default is none: end of file at once. Shared,
    /// not copied, by every execution of a warm pool or a retried plan that clones it.
    Bytes(Bytes),
    /// A host reader, read as the guest reads; see [`StreamedStdin`].
    Streamed(StreamedStdin),
}

impl Default for Stdin {
    fn default() -> Self {
        Stdin::Bytes(Bytes::new())
    }
}

impl std::fmt::Debug for Stdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stdin::Bytes(b) => write!(f, "Stdin::Bytes({} bytes)", b.len()),
            Stdin::Streamed(s) => write!(f, "Stdin::Streamed(at most {} bytes)", s.max_bytes()),
        }
    }
}

impl From<Bytes> for Stdin {
    fn from(bytes: Bytes) -> Self {
        Stdin::Bytes(bytes)
    }
}

impl From<Vec<u8>> for Stdin {
    fn from(bytes: Vec<u8>) -> Self {
        Stdin::Bytes(bytes.into())
    }
}

impl From<&[u8]> for Stdin {
    fn from(bytes: &[u8]) -> Self {
        Stdin::Bytes(Bytes::copy_from_slice(bytes))
    }
}

impl From<String> for Stdin {
    fn from(text: String) -> Self {
        Stdin::Bytes(text.into_bytes().into())
    }
}

impl From<&str> for Stdin {
    fn from(text: &str) -> Self {
        Stdin::Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<StreamedStdin> for Stdin {
    fn from(stream: StreamedStdin) -> Self {
        Stdin::Streamed(stream)
    }
}

/// A host reader handed to a guest as its stdin while the guest reads, at most `max_bytes`
/// of it.
///
/// - Nothing is read from the host before the guest asks; then one chunk (64 KiB at most)
///   at a time, on a helper thread, so a blocked host reader never holds the guest's
///   thread past its deadline: a guest waiting for stdin at its deadline ends with the
///   `timeout` outcome. (A cancellation is seen once the read returns or the deadline
///   passes.)
/// - After `max_bytes` the guest sees end of file; if the host had more, [`truncated`]
///   is true afterwards.
/// - A read error of the host's reader is the guest's read error (`EIO` or the error's own
///   code); after it, end of file.
///
/// Clones share one stream: what one execution read is gone for the next. It is meant for
/// one execution, like a process's stdin.
///
/// [`truncated`]: StreamedStdin::truncated
#[derive(Clone)]
pub struct StreamedStdin {
    handle: Arc<Handle>,
}

impl PartialEq for StreamedStdin {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.handle, &other.handle)
    }
}

impl Eq for StreamedStdin {}

impl std::fmt::Debug for StreamedStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedStdin")
            .field("max_bytes", &self.max_bytes())
            .finish_non_exhaustive()
    }
}

/// The handles' share of the stream; when the last handle goes, the helper thread stops.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().abandoned = true;
        self.shared.wanted.notify_all();
    }
}

struct Shared {
    state: Mutex<State>,
    /// The guest wants bytes (or every handle is gone): the helper thread wakes.
    wanted: Condvar,
    /// Bytes or the end arrived: a waiting guest wakes.
    arrived: Condvar,
    max_bytes: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    /// Read from the host, not yet given to the guest.
    pending: Bytes,
    /// Whether the guest asked for more than is pending.
    wanted: bool,
    /// Bytes read from the host so far, never more than `max_bytes`.
    read: u64,
    /// How the stream ended, once it has.
    end: Option<End>,
    /// The host reader, until the helper thread takes it at the first request.
    reader: Option<Box<dyn Read + Send>>,
    /// No handle is left.
    abandoned: bool,
}

enum End {
    /// The host reader reached its end within the cap.
    Eof,
    /// The host reader had more than the cap.
    Truncated,
    /// The host reader failed; the guest gets the error once.
    Failed(std::io::Error),
    /// After a failure was reported.
    Reported,
}

impl StreamedStdin {
    /// Streams `reader` to the guest, at most `max_bytes` of it.
    pub fn new(reader: impl Read + Send + 'static, max_bytes: u64) -> Self {
        StreamedStdin {
            handle: Arc::new(Handle {
                shared: Arc::new(Shared {
                    state: Mutex::new(State {
                        pending: Bytes::new(),
                        wanted: false,
                        read: 0,
                        end: None,
                        reader: Some(Box::new(reader)),
                        abandoned: false,
                    }),
                    wanted: Condvar::new(),
                    arrived: Condvar::new(),
                    max_bytes,
                }),
            }),
        }
    }

    /// The cap given to [`StreamedStdin::new`].
    pub fn max_bytes(&self) -> u64 {
        self.handle.shared.max_bytes
    }

    /// Whether the host's reader had more than `max_bytes` and the guest was given end of
    /// file at the cap. Known only once a guest read up to the cap; `false` before.
    pub fn truncated(&self) -> bool {
        matches!(self.handle.shared.lock().end, Some(End::Truncated))
    }

    /// Bytes read from the host so far.
    pub fn bytes_read(&self) -> u64 {
        self.handle.shared.lock().read
    }

    /// The guest's side for one execution, which waits for the host at most until
    /// `deadline` and then ends the execution with a timeout of `timeout`.
    pub(crate) fn for_guest(&self, deadline: Instant, timeout: Duration) -> GuestStdin {
        GuestStdin {
            stream: self.clone(),
            deadline,
            timeout,
        }
    }
}

/// The helper thread: reads one chunk each time the guest wants more, until the end, the
/// cap, an error, or no handle is left.
fn pump(shared: Arc<Shared>, mut reader: Box<dyn Read + Send>) {
    loop {
        let want = {
            let mut state = shared.lock();
            while !state.wanted && !state.abandoned {
                state = shared
                    .wanted
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.abandoned {
                return;
            }
            // At the cap, one more byte says whether the host had more.
            let left = shared.max_bytes - state.read;
            usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK)).max(1)
        };
        let mut buf = vec![0; want];
        let got = loop {
            match reader.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let mut state = shared.lock();
        match got {
            Ok(0) => state.end = Some(End::Eof),
            Ok(_) if state.read == shared.max_bytes => state.end = Some(End::Truncated),
            Ok(n) => {
                buf.truncate(n);
                state.read += n as u64;
                state.pending = Bytes::from(buf);
            }
            Err(e) => state.end = Some(End::Failed(e)),
        }
        state.wanted = false;
        let done = state.end.is_some();
        drop(state);
        shared.arrived.notify_all();
        if done {
            return;
        }
    }
}

/// One execution's view of a [`StreamedStdin`], with its deadline.
#[derive(Clone)]
pub(crate) struct GuestStdin {
    stream: StreamedStdin,
    deadline: Instant,
    timeout: Duration,
}

impl GuestStdin {
    fn shared(&self) -> &Arc<Shared> {
        &self.stream.handle.shared
    }

    /// Asks the helper thread for more (starting it at the first request).
    fn want(&self, state: &mut State) {
        if state.wanted {
            return;
        }
        state.wanted = true;
        if let Some(reader) = state.reader.take() {
            let shared = self.shared().clone();
            let spawned = std::thread::Builder::new()
                .name("wasmcage-stdin".into())
                .spawn(move || pump(shared, reader));
            if let Err(e) = spawned {
                state.wanted = false;
                state.end = Some(End::Failed(e));
                return;
            }
        }
        self.shared().wanted.notify_all();
    }

    /// Whether a read would answer now (bytes, the end, or the deadline's trap).
    fn answerable(&self, state: &State) -> bool {
        !state.pending.is_empty() || state.end.is_some() || Instant::now() >= self.deadline
    }

    /// Waits up to one slice for bytes or the end; true when a read would answer now.
    fn wait_a_slice(&self) -> bool {
        let shared = self.shared();
        let mut state = shared.lock();
        if self.answerable(&state) {
            return true;
        }
        self.want(&mut state);
        let now = Instant::now();
        let wait = SLICE.min(self.deadline.saturating_duration_since(now));
        let (state, _) = shared
            .arrived
            .wait_timeout(state, wait)
            .unwrap_or_else(PoisonError::into_inner);
        self.answerable(&state)
    }

    /// Up to `size` bytes, or empty when none has arrived yet.
    fn take(&self, size: usize) -> Result<Bytes, StreamError> {
        let mut state = self.shared().lock();
        if !state.pending.is_empty() {
            let n = size.min(state.pending.len());
            return Ok(state.pending.split_to(n));
        }
        match state.end.take() {
            Some(End::Failed(e)) => {
                state.end = Some(End::Reported);
                return Err(StreamError::LastOperationFailed(e.into()));
            }
            Some(end) => {
                state.end = Some(end);
                return Err(StreamError::Closed);
            }
            None => {}
        }
        if Instant::now() >= self.deadline {
            let ms = self.timeout.as_millis() as u64;
            return Err(StreamError::Trap(wasmtime::Error::new(LimitBreach {
                kind: LimitKind::Timeout,
                requested: ms,
                limit: ms,
            })));
        }
        if size > 0 {
            self.want(&mut state);
        }
        Ok(Bytes::new())
    }
}

impl IsTerminal for GuestStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for GuestStdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStdin {
    async fn ready(&mut self) {
        // Waits in slices and yields between them, so that a `poll_oneoff` that also waits
        // on a clock still sees its clock fire while stdin has nothing.
        while !self.wait_a_slice() {
            tokio::task::yield_now().await;
        }
    }
}

impl InputStream for GuestStdin {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        self.take(size)
    }
}

/// Only preview 2 and 3 guests read stdin this way, and wasmcage runs preview 1 guests;
/// should it be used, it waits on its thread as a preview 1 read does.
impl tokio::io::AsyncRead for GuestStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while !self.wait_a_slice() {}
        match self.take(buf.remaining()) {
            Ok(bytes) => {
                buf.put_slice(&bytes);
                Poll::Ready(Ok(()))
            }
            Err(StreamError::Closed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(std::io::Error::other(e.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that counts what was taken from it and never ends.
    struct Endless(Arc<std::sync::atomic::AtomicU64>);

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0
                .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::SeqCst);
            buf.fill(b'y');
            Ok(buf.len())
        }
    }

    fn read_all(guest: &mut GuestStdin) -> (Vec<u8>, Option<StreamError>) {
        let mut all = Vec::new();
        loop {
            while !guest.wait_a_slice() {}
            match guest.read(1000) {
                Ok(b) => all.extend_from_slice(&b),
                Err(e) => return (all, Some(e)),
            }
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn nothing_is_read_before_the_guest_asks_and_the_cap_holds() {
        let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stream = StreamedStdin::new(Endless(taken.clone()), 100_000);
        // No helper thread exists yet, so nothing can have read.
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 0);
        let mut guest = stream.for_guest(far(), Duration::from_secs(3600));
        let (bytes, end) = read_all(&mut guest);
        assert_eq!(bytes.len(), 100_000);
        assert!(matches!(end, Some(StreamError::Closed)));
        assert!(stream.truncated());
        assert_eq!(stream.bytes_read(), 100_000);
        // The host gave the cap and one probing byte, no more.
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 100_001);
    }

    #[test]
    fn a_short_reader_is_not_truncated() {
        let stream = StreamedStdin::new(&b"hello"[..], 5);
        let mut guest = stream.for_guest(far(), Duration::from_secs(3600));
        let (bytes, end) = read_all(&mut guest);
        assert_eq!(bytes, b"hello");
        assert!(matches!(end, Some(StreamError::Closed)));
        assert!(!stream.truncated());
    }

    #[test]
    fn a_read_error_is_reported_once_then_end_of_file() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let stream = StreamedStdin::new(Failing, 10);
        let mut guest = stream.for_guest(far(), Duration::from_secs(3600));
        let (_, end) = read_all(&mut guest);
        assert!(matches!(end, Some(StreamError::LastOperationFailed(_))));
        let (_, end) = read_all(&mut guest);
        assert!(matches!(end, Some(StreamError::Closed)));
    }

    #[test]
    fn a_stalled_host_ends_in_a_timeout_at_the_deadline() {
        // A pipe whose writer never writes: the read blocks on the helper thread.
        let (reader, _writer) = std::io::pipe().unwrap();
        let stream = StreamedStdin::new(reader, 10);
        let mut guest = stream.for_guest(
            Instant::now() + Duration::from_millis(50),
            Duration::from_millis(50),
        );
        let (bytes, end) = read_all(&mut guest);
        assert!(bytes.is_empty());
        match end {
            Some(StreamError::Trap(e)) => {
                let breach = e.downcast_ref::<LimitBreach>().expect("a limit breach");
                assert_eq!(breach.kind, LimitKind::Timeout);
            }
            _ => panic!("expected the timeout's trap"),
        }
    }
}
