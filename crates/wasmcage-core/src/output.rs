//! A bounded capture of guest output that truncates instead of trapping.
//!
//! wasmtime's `MemoryOutputPipe` traps the guest when it is full. A sandbox wants the
//! opposite: a guest that floods stdout keeps running, the excess is dropped and counted,
//! and the report says the capture was truncated.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The largest write the guest is offered at once; writes are never refused, so this only
/// shapes how WASI splits the guest's buffers.
const WRITE_BUDGET: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Capture {
    kept: Vec<u8>,
    /// Every byte the guest wrote, kept or dropped.
    total: u64,
    /// The last bytes written, kept even past the limit (see [`BoundedOutput::take`]).
    tail: Vec<u8>,
}

/// How many of the last bytes written [`BoundedOutput::take`] returns.
pub(crate) const TAIL: usize = 64;

/// A clonable handle on one bounded capture; all clones write to the same buffer.
/// See [`BoundedOutput::take`].
#[derive(Debug, Default)]
pub(crate) struct Taken {
    pub(crate) kept: Vec<u8>,
    pub(crate) total: u64,
    pub(crate) truncated: bool,
    pub(crate) tail: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct BoundedOutput {
    limit: usize,
    capture: Arc<Mutex<Capture>>,
}

impl BoundedOutput {
    pub(crate) fn new(limit: u64) -> Self {
        BoundedOutput {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            capture: Arc::default(),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut capture = self.capture.lock().unwrap_or_else(PoisonError::into_inner);
        capture.total += bytes.len() as u64;
        let room = self.limit.saturating_sub(capture.kept.len());
        let take = room.min(bytes.len());
        capture.kept.extend_from_slice(&bytes[..take]);
        let from = bytes.len().saturating_sub(TAIL);
        capture.tail.extend_from_slice(&bytes[from..]);
        let excess = capture.tail.len().saturating_sub(TAIL);
        capture.tail.drain(..excess);
    }

    #[cfg(test)]
    pub(crate) fn append_for_test(&self, bytes: &[u8]) {
        self.append(bytes);
    }

    /// What was written since the last `take`: the bytes kept (up to the limit), the total
    /// written, whether that was more than kept, and the last [`TAIL`] bytes written (which
    /// may lie past the limit). The count starts again from zero, so each turn of an
    /// interactive guest has its own limit.
    pub(crate) fn take(&self) -> Taken {
        let mut capture = self.capture.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = std::mem::take(&mut capture.kept);
        let total = std::mem::take(&mut capture.total);
        let tail = std::mem::take(&mut capture.tail);
        Taken {
            truncated: total > kept.len() as u64,
            kept,
            total,
            tail,
        }
    }

    /// The kept bytes, the total written, and whether anything was dropped.
    pub(crate) fn finish(&self) -> (Vec<u8>, u64, bool) {
        let mut capture = self.capture.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = std::mem::take(&mut capture.kept);
        let truncated = capture.total > kept.len() as u64;
        (kept, capture.total, truncated)
    }
}

impl IsTerminal for BoundedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for BoundedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

impl tokio::io::AsyncWrite for BoundedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_limit_and_counts_the_rest() {
        let out = BoundedOutput::new(5);
        out.append(b"abc");
        out.append(b"defgh");
        assert_eq!(out.finish(), (b"abcde".to_vec(), 8, true));
    }

    #[test]
    fn take_starts_the_count_again_and_keeps_the_tail_past_the_limit() {
        let out = BoundedOutput::new(4);
        out.append(b"abcdef");
        out.append(b"gh");
        let first = out.take();
        assert_eq!(
            (
                first.kept.as_slice(),
                first.total,
                first.truncated,
                first.tail.as_slice()
            ),
            (&b"abcd"[..], 8, true, &b"abcdefgh"[..])
        );
        out.append(&[b'x'; 100]);
        let second = out.take();
        assert_eq!(
            (second.kept.len(), second.total, second.tail.len()),
            (4, 100, TAIL)
        );
        assert_eq!(out.take().total, 0);
    }

    #[test]
    fn not_truncated_when_it_fits() {
        let out = BoundedOutput::new(5);
        out.append(b"abcde");
        assert_eq!(out.finish(), (b"abcde".to_vec(), 5, false));
    }
}
