//! Blocks that byte-stream reads land in directly, lent out as `Bytes` and taken back for the
//! next reads once every slice of them has been dropped.
//!
//! Safe code may only `read` into initialised memory, and zero-filling a block before each use
//! costs about what copying the read out of a reused buffer costs (callgrind, docs/transport.md).
//! So a block is zero-filled once, when it is allocated, and then reused as it is: a long read
//! is handed out as a slice of the block it landed in (no copy), and the block comes back to the
//! pool, still initialised, when the node and the application have dropped every slice of it. A
//! short read (below `copy_below`) is copied out instead, into a shared small buffer, so that a
//! 64-byte message does not hold a whole block.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// The pool (see the module documentation).
#[derive(Debug)]
pub(crate) struct ReadBlocks {
    /// Size of every block.
    block: usize,
    /// Reads shorter than this are copied out of the block into `small`.
    copy_below: usize,
    /// Blocks lent out at most, tracked to be taken back; older ones are let go (freed when
    /// their last slice drops).
    max_lent: usize,
    /// The block the next read lands in: `block` bytes, initialised, owned by the pool alone.
    current: Option<BytesMut>,
    /// Whole blocks whose slices were handed out, oldest first.
    lent: VecDeque<Bytes>,
    /// Backing store of copied short reads; split per read, its allocation reused once they
    /// are dropped.
    small: BytesMut,
    /// Blocks allocated (and zero-filled) so far.
    allocated: u64,
}

impl ReadBlocks {
    /// A pool of `block`-byte blocks.
    pub(crate) fn new(block: usize, copy_below: usize, max_lent: usize) -> Self {
        Self {
            block: block.max(1),
            copy_below,
            max_lent: max_lent.max(1),
            current: None,
            lent: VecDeque::new(),
            small: BytesMut::new(),
            allocated: 0,
        }
    }

    /// Size of the slice [`buffer`](Self::buffer) returns.
    pub(crate) fn block_size(&self) -> usize {
        self.block
    }

    /// Blocks allocated so far (a steady stream of long reads stops allocating).
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Where the next read goes: a whole block, taken back from the lent ones when one is free.
    pub(crate) fn buffer(&mut self) -> &mut [u8] {
        if self.current.is_none() {
            self.current = Some(self.reclaim().unwrap_or_else(|| {
                self.allocated += 1;
                BytesMut::zeroed(self.block)
            }));
        }
        self.current.as_deref_mut().unwrap_or_default()
    }

    /// The first `n` bytes of the last [`buffer`](Self::buffer), as delivered `Bytes`.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        let Some(current) = self.current.as_ref() else {
            return Bytes::new();
        };
        let n = n.min(current.len());
        if n < self.copy_below {
            if self.small.capacity() - self.small.len() < n {
                self.small.reserve(self.copy_below.max(n) * 4);
            }
            self.small.extend_from_slice(&current[..n]);
            return self.small.split().freeze();
        }
        let Some(current) = self.current.take() else {
            return Bytes::new();
        };
        let whole = current.freeze();
        let data = whole.slice(..n);
        if self.lent.len() >= self.max_lent {
            self.lent.pop_front();
        }
        self.lent.push_back(whole);
        data
    }

    /// A lent block nobody holds a slice of any more, whole and initialised.
    fn reclaim(&mut self) -> Option<BytesMut> {
        for _ in 0..self.lent.len() {
            let whole = self.lent.pop_front()?;
            match whole.try_into_mut() {
                Ok(block) if block.len() == self.block => return Some(block),
                Ok(_) => {}
                Err(whole) => self.lent.push_back(whole),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pool: &mut ReadBlocks, fill: u8, n: usize) -> Bytes {
        pool.buffer()[..n].fill(fill);
        pool.take(n)
    }

    #[test]
    fn long_reads_reuse_a_block_once_its_slices_are_dropped() {
        let mut pool = ReadBlocks::new(1024, 100, 4);
        let a = read(&mut pool, 1, 600);
        assert_eq!(pool.allocated(), 1);
        // `a` is still held: the next read needs a second block.
        let b = read(&mut pool, 2, 700);
        assert_eq!(pool.allocated(), 2);
        assert!(a.iter().all(|&x| x == 1) && a.len() == 600);
        assert!(b.iter().all(|&x| x == 2) && b.len() == 700);
        drop(a);
        let c = read(&mut pool, 3, 1024);
        assert_eq!(pool.allocated(), 2, "the first block came back");
        assert!(
            b.iter().all(|&x| x == 2),
            "a held slice is never written over"
        );
        assert!(c.iter().all(|&x| x == 3) && c.len() == 1024);
        drop((b, c));
        for i in 0..50u8 {
            let d = read(&mut pool, i, 500);
            assert!(d.iter().all(|&x| x == i));
        }
        assert_eq!(pool.allocated(), 2);
    }

    #[test]
    fn short_reads_are_copied_and_keep_the_block() {
        let mut pool = ReadBlocks::new(1024, 100, 4);
        let held: Vec<Bytes> = (0..20u8).map(|i| read(&mut pool, i, 64)).collect();
        assert_eq!(pool.allocated(), 1);
        for (i, d) in held.iter().enumerate() {
            assert_eq!(d.len(), 64);
            assert!(d.iter().all(|&x| usize::from(x) == i));
        }
    }

    #[test]
    fn lent_blocks_tracked_are_bounded() {
        let mut pool = ReadBlocks::new(256, 10, 3);
        let held: Vec<Bytes> = (0..10u8).map(|i| read(&mut pool, i, 200)).collect();
        assert_eq!(pool.allocated(), 10);
        assert_eq!(pool.lent.len(), 3);
        for (i, d) in held.iter().enumerate() {
            assert!(d.iter().all(|&x| usize::from(x) == i));
        }
        drop(held);
        let _ = read(&mut pool, 1, 200);
        assert_eq!(pool.allocated(), 10, "a tracked block came back");
    }
}
