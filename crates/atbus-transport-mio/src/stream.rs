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

    /// Writes as much as the socket takes in as few calls as possible; `Ok(written)` when the
    /// queue is empty or the socket would block.
    pub(crate) fn flush(
        &mut self,
        socket: &mut StreamSocket,
        max_slices: usize,
    ) -> io::Result<usize> {
        self.write_with(socket, &[], max_slices).map(|(n, _)| n)
    }

    /// Writes the queue, then `extra`, with as few calls as possible (one `write_vectored` for
    /// both when the socket takes it all). Returns the bytes written in total and how many of
    /// them came from `extra`; the caller queues the rest of `extra`. Stops at `WouldBlock`
    /// (and remembers it) or when everything is written.
    pub(crate) fn write_with(
        &mut self,
        socket: &mut StreamSocket,
        extra: &[u8],
        max_slices: usize,
    ) -> io::Result<(usize, usize)> {
        self.blocked = false;
        let (mut written, mut taken) = (0, 0);
        while self.queued > 0 || taken < extra.len() {
            let rest = &extra[taken..];
            let res = if self.chunks.is_empty() {
                socket.write(rest)
            } else if self.chunks.len() == 1 && rest.is_empty() {
                socket.write(&self.chunks[0].buf)
            } else {
                let mut slices = [IoSlice::new(&[]); 64];
                let room = max_slices.clamp(2, 64) - 1;
                let mut count = 0;
                for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()).take(room) {
                    *slot = IoSlice::new(&chunk.buf);
                    count += 1;
                }
                // The extra bytes ride along only once the whole queue is in this call.
                if count == self.chunks.len() && !rest.is_empty() {
                    slices[count] = IoSlice::new(rest);
                    count += 1;
                }
                socket.write_vectored(&slices[..count])
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
