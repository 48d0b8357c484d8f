//! Byte-stream sockets (TCP, Unix) and their bounded write queue.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use bytes::{Buf, BytesMut};
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

/// A connected (or connecting) byte-stream socket.
pub(crate) enum StreamSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl StreamSocket {
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamSocket::Tcp(s) => s.read(buf),
            StreamSocket::Unix(s) => s.read(buf),
        }
    }

    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamSocket::Tcp(s) => s.write(buf),
            StreamSocket::Unix(s) => s.write(buf),
        }
    }

    pub(crate) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            StreamSocket::Tcp(s) => s.write_vectored(bufs),
            StreamSocket::Unix(s) => s.write_vectored(bufs),
        }
    }

    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.shutdown(Shutdown::Write),
            StreamSocket::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            StreamSocket::Tcp(s) => s.take_error(),
            StreamSocket::Unix(s) => s.take_error(),
        }
    }

    /// `Ok(true)` once a non-blocking connect has completed.
    pub(crate) fn is_connected(&self) -> io::Result<bool> {
        let res = match self {
            StreamSocket::Tcp(s) => s.peer_addr().map(|_| ()),
            StreamSocket::Unix(s) => s.peer_addr().map(|_| ()),
        };
        match res {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.register(registry, token, interest),
            StreamSocket::Unix(s) => s.register(registry, token, interest),
        }
    }

    pub(crate) fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.reregister(registry, token, interest),
            StreamSocket::Unix(s) => s.reregister(registry, token, interest),
        }
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.deregister(registry),
            StreamSocket::Unix(s) => s.deregister(registry),
        }
    }
}

/// Where a [`WriteQueue`] writes: a socket, or a test writer.
pub(crate) trait StreamWrite {
    /// `write(2)`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// `writev(2)`.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl StreamWrite for StreamSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        StreamSocket::write(self, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        StreamSocket::write_vectored(self, bufs)
    }
}

/// The first non-empty part of `segments` after skipping `skip` bytes: its index and offset.
fn locate(segments: &[&[u8]], mut skip: usize) -> Option<(usize, usize)> {
    for (i, s) in segments.iter().enumerate() {
        if skip < s.len() {
            return Some((i, skip));
        }
        skip -= s.len();
    }
    None
}

/// Small sends are appended to the tail chunk up to this size, so many tiny packages queued while
/// the socket is full leave in one `write_vectored` slice each 64 KiB.
const COALESCE_LIMIT: usize = 64 * 1024;

/// One queued buffer.
struct Chunk {
    buf: BytesMut,
    /// Built for small sends (at most `COALESCE_LIMIT` long): worth keeping for reuse.
    small: bool,
}

/// Bytes accepted by `send` but not yet taken by the kernel.
#[derive(Default)]
pub(crate) struct WriteQueue {
    chunks: VecDeque<Chunk>,
    queued: usize,
    /// The last write met `WouldBlock`: nothing is tried again until the socket is writable.
    blocked: bool,
    /// A written-out small chunk kept for the next push, so a queue that fills and drains every
    /// turn does not allocate every turn.
    spare: Option<BytesMut>,
}

impl WriteQueue {
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Whether the socket refused the last write and writability has not been seen since.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.queued += data.len();
        if let Some(tail) = self.chunks.back_mut() {
            if tail.small && tail.buf.len() + data.len() <= COALESCE_LIMIT {
                tail.buf.extend_from_slice(data);
                return;
            }
        }
        let small = data.len() <= COALESCE_LIMIT;
        let buf = match self.spare.take() {
            Some(mut spare) if small => {
                // Empty and unshared, so this reuses the whole allocation without copying.
                spare.reserve(data.len());
                spare.extend_from_slice(data);
                spare
            }
            _ => BytesMut::from(data),
        };
        self.chunks.push_back(Chunk { buf, small });
    }

    /// Appends `segments` after skipping their first `skip` bytes (the part a write took).
    pub(crate) fn push_segments(&mut self, segments: &[&[u8]], skip: usize) {
        if let [one] = segments {
            self.push(one.get(skip..).unwrap_or_default());
            return;
        }
        let Some((first, offset)) = locate(segments, skip) else {
            return;
        };
        self.push(&segments[first][offset..]);
        for s in &segments[first + 1..] {
            self.push(s);
        }
    }

    /// Writes as much as the socket takes in as few calls as possible; `Ok(written)` when the
    /// queue is empty or the socket would block.
    pub(crate) fn flush<W: StreamWrite>(
        &mut self,
        socket: &mut W,
        max_slices: usize,
    ) -> io::Result<usize> {
        self.write_with(socket, &[], max_slices).map(|(n, _)| n)
    }

    /// Writes the queue, then the segments of `extra` in order, with as few calls as possible
    /// (one `write_vectored` for all when the socket takes it all). Returns the bytes written
    /// in total and how many of them came from `extra`; the caller queues the rest of `extra`
    /// ([`push_segments`](Self::push_segments)). Stops at `WouldBlock` (and remembers it) or
    /// when everything is written.
    pub(crate) fn write_with<W: StreamWrite>(
        &mut self,
        socket: &mut W,
        extra: &[&[u8]],
        max_slices: usize,
    ) -> io::Result<(usize, usize)> {
        self.blocked = false;
        let (mut written, mut taken) = (0, 0);
        let cap = max_slices.clamp(2, 64);
        loop {
            let rest = locate(extra, taken);
            if self.queued == 0 && rest.is_none() {
                break;
            }
            let res = match rest {
                Some((i, off)) if self.chunks.is_empty() && i + 1 == extra.len() => {
                    socket.write(&extra[i][off..])
                }
                None if self.chunks.len() == 1 => socket.write(&self.chunks[0].buf),
                _ => {
                    let mut slices = [IoSlice::new(&[]); 64];
                    let mut count = 0;
                    for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()).take(cap - 1) {
                        *slot = IoSlice::new(&chunk.buf);
                        count += 1;
                    }
                    // The extra bytes ride along only once the whole queue is in this call.
                    if let Some((i, off)) = rest.filter(|_| count == self.chunks.len()) {
                        let parts = std::iter::once(&extra[i][off..])
                            .chain(extra[i + 1..].iter().copied())
                            .filter(|s| !s.is_empty());
                        for part in parts {
                            if count == cap {
                                break;
                            }
                            slices[count] = IoSlice::new(part);
                            count += 1;
                        }
                    }
                    socket.write_vectored(&slices[..count])
                }
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let from_queue = n.min(self.queued);
                    self.advance(from_queue);
                    taken += n - from_queue;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((written, taken))
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if front.buf.len() <= n {
                n -= front.buf.len();
                if let Some(done) = self.chunks.pop_front() {
                    if done.small && self.spare.is_none() {
                        let mut buf = done.buf;
                        buf.clear();
                        self.spare = Some(buf);
                    }
                }
            } else {
                front.buf.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A socket that takes at most the next scripted number of bytes per call (0: `WouldBlock`)
    /// and records what it took.
    struct Scripted {
        allow: Vec<usize>,
        next: usize,
        taken: Vec<u8>,
        calls: usize,
    }

    impl Scripted {
        fn take(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
            self.calls += 1;
            let mut allow = self.allow[self.next % self.allow.len()];
            self.next += 1;
            if allow == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let start = self.taken.len();
            for part in parts {
                let n = part.len().min(allow);
                self.taken.extend_from_slice(&part[..n]);
                allow -= n;
            }
            Ok(self.taken.len() - start)
        }
    }

    impl StreamWrite for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.take(&[buf])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let parts: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
            self.take(&parts)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A small send: queued.
        Push(Vec<u8>),
        /// A send written at once (as the transport does), what is not taken queued.
        Send(Vec<Vec<u8>>),
        /// Writability: the queue is written.
        Flush,
    }

    fn op() -> impl Strategy<Value = Op> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            bytes().prop_map(Op::Push),
            proptest::collection::vec(bytes(), 0..6).prop_map(Op::Send),
            Just(Op::Flush),
        ]
    }

    proptest! {
        /// Whatever the socket takes per call (nothing, a few bytes, part of a slice), the bytes
        /// that reach it are every send's bytes, each once, in send order.
        #[test]
        fn partial_vectored_writes_never_lose_or_reorder_bytes(
            ops in proptest::collection::vec(op(), 1..40),
            allow in proptest::collection::vec(0usize..700, 1..20),
            max_slices in 1usize..8,
        ) {
            let mut socket = Scripted { allow, next: 0, taken: Vec::new(), calls: 0 };
            let mut q = WriteQueue::default();
            let mut expected = Vec::new();
            for op in ops {
                match op {
                    Op::Push(data) => {
                        expected.extend_from_slice(&data);
                        q.push(&data);
                    }
                    Op::Send(parts) => {
                        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                        let total: usize = parts.iter().map(|p| p.len()).sum();
                        expected.extend(parts.iter().flat_map(|p| p.iter()));
                        if q.is_blocked() {
                            q.push_segments(&parts, 0);
                            continue;
                        }
                        let before = socket.taken.len();
                        let (written, taken) =
                            q.write_with(&mut socket, &parts, max_slices).expect("no error");
                        prop_assert_eq!(written, socket.taken.len() - before);
                        prop_assert!(taken <= total);
                        q.push_segments(&parts, taken);
                    }
                    Op::Flush => {
                        q.flush(&mut socket, max_slices).expect("no error");
                    }
                }
                prop_assert_eq!(socket.taken.len() + q.len(), expected.len());
            }
            socket.allow = vec![usize::MAX];
            q.flush(&mut socket, max_slices).expect("no error");
            prop_assert!(q.is_empty());
            prop_assert_eq!(socket.taken, expected);
        }
    }

    #[test]
    fn a_send_with_an_empty_queue_goes_out_in_one_vectored_call() {
        let mut socket = Scripted {
            allow: vec![usize::MAX],
            next: 0,
            taken: Vec::new(),
            calls: 0,
        };
        let mut q = WriteQueue::default();
        let payload = vec![7u8; 100_000];
        let parts: [&[u8]; 3] = [b"head", &payload, b"tail"];
        let (written, taken) = q.write_with(&mut socket, &parts, 64).expect("written");
        assert_eq!((written, taken), (100_008, 100_008));
        assert_eq!(socket.calls, 1, "one writev for head, payload and tail");
        assert!(q.is_empty(), "nothing copied into the queue");
    }

    #[test]
    fn pushes_coalesce_into_small_chunks_and_big_ones_stand_alone() {
        let mut q = WriteQueue::default();
        q.push(&[1; 1000]);
        q.push(&[2; 1000]);
        assert_eq!(q.chunks.len(), 1, "small pushes share a chunk");
        q.push(&[3; COALESCE_LIMIT + 1]);
        assert_eq!(q.chunks.len(), 2);
        assert!(!q.chunks[1].small);
        q.push(&[4; 10]);
        assert_eq!(q.chunks.len(), 3, "nothing is appended to a big chunk");
        assert_eq!(q.len(), 2010 + COALESCE_LIMIT + 1);
    }

    #[test]
    fn a_drained_small_chunk_is_reused() {
        let mut q = WriteQueue::default();
        q.push(&[1; 3000]);
        let first = q.chunks[0].buf.as_ptr();
        q.advance(1000);
        q.advance(2000);
        assert!(q.is_empty());
        assert!(q.spare.is_some());
        q.push(&[2; 500]);
        // Same allocation (possibly further in, where the written bytes were).
        let at = q.chunks[0].buf.as_ptr() as usize;
        let first = first as usize;
        assert!(
            (first..first + 3000).contains(&at),
            "the allocation was not reused"
        );
        assert_eq!(&q.chunks[0].buf[..], &[2; 500][..]);
    }
}
