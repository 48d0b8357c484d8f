//! Two sessions over simulated links (feature `sim`): the drive loop shared by the tests, the
//! `atbus demo` and the comparison benchmarks.
//!
//! Each [`SimPath`] is an `atbus-netsim` duplex link carrying one path of each session. Byte-stream
//! paths run over reliable links and are decoded with a [`StreamDecoder`] per direction, as a
//! socket driver would; datagram and relayed paths carry one datagram per transmit. Everything is
//! virtual time, so a run replays exactly for a seed.

use std::time::{Duration, Instant};

use atbus_frame::{DatagramDecoder, FrameError, FrameLimits, StreamDecoder};
use atbus_netsim::{Clock, DuplexLink, LinkConfig, earliest};
use bytes::Bytes;

use crate::{PathConfig, PathError, PathId, PathKind, ProtocolError, Session, SessionConfig};

/// What went wrong in a simulation step; each is a bug in the session or the harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A session rejected a frame.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// A package did not decode.
    #[error("bad package: {0}")]
    Frame(#[from] FrameError),
    /// A path could not be added or removed.
    #[error("path: {0}")]
    Path(#[from] PathError),
    /// A session wrote a datagram larger than its path MTU.
    #[error("datagram of {size} bytes over the path MTU {mtu}")]
    OverMtu {
        /// Datagram size.
        size: usize,
        /// Path MTU.
        mtu: usize,
    },
    /// A reliable link refused bytes (its queue was full): a byte stream would be corrupt.
    #[error("byte-stream link dropped data")]
    ByteStreamDrop,
    /// A transmit named a path the harness does not know.
    #[error("transmit on unknown path {0:?}")]
    UnknownPath(PathId),
}

/// One simulated link carrying one path of each session.
#[derive(Debug)]
pub struct SimPath {
    /// Path kind.
    pub kind: PathKind,
    /// Path MTU.
    pub mtu: usize,
    /// The link; `a_to_b` carries session A's transmits.
    pub link: DuplexLink,
    /// Session A's id of the path.
    pub a: PathId,
    /// Session B's id of the path.
    pub b: PathId,
    decoders: Option<(StreamDecoder, StreamDecoder)>,
    /// False once killed.
    pub alive: bool,
}

/// Which session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Session A.
    A,
    /// Session B.
    B,
}

/// Two sessions joined by simulated paths.
#[derive(Debug)]
pub struct SimPair {
    /// Virtual clock.
    pub clock: Clock,
    /// Session A.
    pub a: Session,
    /// Session B.
    pub b: Session,
    /// The paths, in the order added (killed ones stay, marked dead).
    pub paths: Vec<SimPath>,
    /// Largest package or datagram seen on any path.
    pub max_package_seen: usize,
    /// When `Some`, every transmit is also recorded here (sender, path index, bytes), for tests
    /// that look at what went on the wire.
    pub capture: Option<Vec<(Side, usize, Bytes)>>,
    seed: u64,
    buf: Vec<u8>,
}

impl SimPair {
    /// Two sessions with the given configurations; `seed` drives every link.
    pub fn new(seed: u64, a: SessionConfig, b: SessionConfig) -> Self {
        let clock = Clock::new();
        let now = clock.now();
        Self {
            a: Session::new(a, now),
            b: Session::new(b, now),
            clock,
            paths: Vec::new(),
            max_package_seen: 0,
            capture: None,
            seed,
            buf: Vec::new(),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Adds a path of `kind` and `mtu` to both sessions over a link behaving as `link`; returns
    /// its index in [`Self::paths`].
    pub fn add_path(
        &mut self,
        kind: PathKind,
        mtu: usize,
        link: LinkConfig,
    ) -> Result<usize, SimError> {
        let now = self.clock.now();
        let a = self.a.add_path(now, PathConfig::new(kind, mtu))?;
        let b = self.b.add_path(now, PathConfig::new(kind, mtu))?;
        let reliable = kind == PathKind::ByteStream;
        let mut link = link.with_mtu(if reliable { usize::MAX } else { mtu });
        if reliable {
            link = link.with_reliable(true).with_queue_limit(64 * 1024 * 1024);
        }
        let index = self.paths.len();
        let seed = atbus_netsim::derive_seed(self.seed, 100 + index as u64);
        let decoders = reliable.then(|| {
            (
                StreamDecoder::new(FrameLimits::default()),
                StreamDecoder::new(FrameLimits::default()),
            )
        });
        self.paths.push(SimPath {
            kind,
            mtu,
            link: DuplexLink::new(link, seed),
            a,
            b,
            decoders,
            alive: true,
        });
        Ok(index)
    }

    /// Kills path `index`: the link goes down with whatever was in flight and both sessions drop
    /// the path.
    pub fn kill_path(&mut self, index: usize) -> Result<(), SimError> {
        let Some(p) = self.paths.get_mut(index) else {
            return Ok(());
        };
        if !p.alive {
            return Ok(());
        }
        p.alive = false;
        p.link.set_up(false);
        self.a.remove_path(p.a)?;
        self.b.remove_path(p.b)?;
        Ok(())
    }

    /// Drains both sessions' transmits into the links.
    pub fn transmit(&mut self) -> Result<(), SimError> {
        let now = self.clock.now();
        for side in [Side::A, Side::B] {
            loop {
                let session = match side {
                    Side::A => &mut self.a,
                    Side::B => &mut self.b,
                };
                let Some(t) = session.poll_transmit(now, &mut self.buf) else {
                    break;
                };
                let (index, p) = self
                    .paths
                    .iter_mut()
                    .enumerate()
                    .find(|(_, p)| p.alive && t.path == if side == Side::A { p.a } else { p.b })
                    .ok_or(SimError::UnknownPath(t.path))?;
                if let Some(capture) = self.capture.as_mut() {
                    capture.push((side, index, Bytes::copy_from_slice(&self.buf[..t.size])));
                }
                if p.kind != PathKind::ByteStream {
                    if t.size > p.mtu {
                        return Err(SimError::OverMtu {
                            size: t.size,
                            mtu: p.mtu,
                        });
                    }
                    self.max_package_seen = self.max_package_seen.max(t.size);
                }
                let link = match side {
                    Side::A => &mut p.link.a_to_b,
                    Side::B => &mut p.link.b_to_a,
                };
                let outcome = link.send(now, Bytes::copy_from_slice(&self.buf[..t.size]));
                if p.kind == PathKind::ByteStream && !outcome.is_queued() {
                    return Err(SimError::ByteStreamDrop);
                }
            }
        }
        Ok(())
    }

    /// Hands every datagram due now to the receiving session.
    pub fn deliver(&mut self) -> Result<(), SimError> {
        let now = self.clock.now();
        for p in self.paths.iter_mut().filter(|p| p.alive) {
            for side in [Side::A, Side::B] {
                let (link, session, path) = match side {
                    Side::A => (&mut p.link.a_to_b, &mut self.b, p.b),
                    Side::B => (&mut p.link.b_to_a, &mut self.a, p.a),
                };
                while let Some(d) = link.poll_deliver(now) {
                    if let Some((ab, ba)) = p.decoders.as_mut() {
                        let decoder = if side == Side::A { ab } else { ba };
                        decoder.feed(&d);
                        while let Some(pkg) = decoder.next_package()? {
                            if pkg.wire_len > p.mtu {
                                return Err(SimError::OverMtu {
                                    size: pkg.wire_len,
                                    mtu: p.mtu,
                                });
                            }
                            self.max_package_seen = self.max_package_seen.max(pkg.wire_len);
                            session.handle_frame(now, path, pkg.decode()?, pkg.wire_len)?;
                        }
                    } else {
                        for pkg in DatagramDecoder::new(d, FrameLimits::default()) {
                            let pkg = pkg?;
                            session.handle_frame(now, path, pkg.decode()?, pkg.wire_len)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The earliest wake-up of both sessions and every live link.
    pub fn next_wakeup(&self) -> Option<Instant> {
        earliest(
            [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .chain(
                    self.paths
                        .iter()
                        .filter(|p| p.alive)
                        .map(|p| p.link.poll_timeout()),
                ),
        )
    }

    /// Moves the clock to `to` (at least 10 µs ahead) and runs both sessions' timers.
    pub fn advance_to(&mut self, to: Instant) {
        let now = self.clock.now();
        self.clock
            .advance_to(to.max(now + Duration::from_micros(10)));
        let now = self.clock.now();
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
    }
}
