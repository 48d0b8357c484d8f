//! Two `atbus-stream` sessions over one or more `atbus-netsim` datagram links.
//!
//! Driven by the session's drive rule (`docs/stream.md`): after any input drain `poll_transmit`,
//! run `handle_timeout` when `poll_timeout` is due, drain `poll_event`. Every datagram is decoded
//! with `atbus-frame`'s `DatagramDecoder` and handed to `handle_frame`, as a UDP driver would.

use std::time::Instant;

use atbus_frame::{DatagramDecoder, FrameLimits};
use atbus_netsim::{Bytes, DuplexLink, LinkConfig, LinkStats, earliest};
use atbus_stream::{
    Delivery, OutgoingMessage, PathConfig, PathId, PathKind, SendError, Session, SessionConfig,
};

use crate::net::{self, CwndTrace, MTU, Pair};

/// The stream the workloads use.
const STREAM: i64 = 1;

/// The two atbus configurations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtbusMode {
    /// `SessionConfig { no_delay: true, ..SessionConfig::new(..) }`.
    NoDelay,
    /// `SessionConfig::new(..)` unchanged.
    Default,
}

impl AtbusMode {
    /// How the mode is configured, for the docs.
    pub fn describe(self) -> &'static str {
        match self {
            AtbusMode::NoDelay => "`SessionConfig { no_delay: true, ..SessionConfig::new(..) }`",
            AtbusMode::Default => "`SessionConfig::new(..)` (all defaults)",
        }
    }

    fn config(self, local: &str, peer: &str) -> SessionConfig {
        let defaults = SessionConfig::new(local, peer);
        match self {
            AtbusMode::NoDelay => SessionConfig {
                no_delay: true,
                ..defaults
            },
            AtbusMode::Default => defaults,
        }
    }
}

struct SimPath {
    link: DuplexLink,
    a: PathId,
    b: PathId,
}

/// Two sessions, A sending to B, with one `Datagram` path per link.
pub struct AtbusPair {
    a: Session,
    b: Session,
    paths: Vec<SimPath>,
    buf: Vec<u8>,
    trace: CwndTrace,
}

impl AtbusPair {
    /// Sessions in `mode` over one link per entry of `links`, seeded by `seed` (path `i` gets the
    /// same random streams as path `i` of any other peer run with `seed`).
    pub fn new(mode: AtbusMode, links: &[LinkConfig], seed: u64, now: Instant) -> Self {
        let mut a = Session::new(mode.config("node-a", "node-b"), now);
        let mut b = Session::new(mode.config("node-b", "node-a"), now);
        let paths = links
            .iter()
            .enumerate()
            .map(|(i, config)| SimPath {
                link: net::link(config.clone(), seed, i as u64),
                a: a.add_path(now, PathConfig::new(PathKind::Datagram, MTU))
                    .expect("path at A"),
                b: b.add_path(now, PathConfig::new(PathKind::Datagram, MTU))
                    .expect("path at B"),
            })
            .collect();
        Self {
            a,
            b,
            paths,
            buf: Vec::with_capacity(64 * 1024),
            trace: CwndTrace::default(),
        }
    }

    fn transmit(&mut self, now: Instant) {
        for side in 0..2 {
            loop {
                let session = if side == 0 { &mut self.a } else { &mut self.b };
                let Some(t) = session.poll_transmit(now, &mut self.buf) else {
                    break;
                };
                let p = self
                    .paths
                    .iter_mut()
                    .find(|p| (if side == 0 { p.a } else { p.b }) == t.path)
                    .expect("transmit on a known path");
                let link = if side == 0 {
                    &mut p.link.a_to_b
                } else {
                    &mut p.link.b_to_a
                };
                // Whatever the link does with it (loss, tail drop) is the experiment.
                let _ = link.send(now, Bytes::copy_from_slice(&self.buf[..t.size]));
            }
        }
    }

    fn deliver(&mut self, now: Instant) {
        for p in &mut self.paths {
            for (link, session, path) in [
                (&mut p.link.a_to_b, &mut self.b, p.b),
                (&mut p.link.b_to_a, &mut self.a, p.a),
            ] {
                while let Some(d) = link.poll_deliver(now) {
                    for pkg in DatagramDecoder::new(d, FrameLimits::default()) {
                        let pkg = pkg.expect("valid datagram");
                        let frame = pkg.decode().expect("valid frame");
                        session
                            .handle_frame(now, path, frame, pkg.wire_len)
                            .expect("no protocol error");
                    }
                }
            }
        }
    }
}

impl Pair for AtbusPair {
    fn send(&mut self, _now: Instant, message: &Bytes) -> bool {
        match self.a.send(STREAM, OutgoingMessage::data(message.clone())) {
            Ok(_) => true,
            Err(SendError::WouldBlock) => false,
            Err(e) => panic!("atbus send failed: {e}"),
        }
    }

    fn poll(&mut self, now: Instant, delivered: &mut dyn FnMut(&[u8])) {
        self.deliver(now);
        for s in [&mut self.a, &mut self.b] {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        while let Some(d) = self.b.read(STREAM) {
            if let Delivery::Message(m) = d {
                delivered(&m.data);
            }
        }
        while self.a.poll_event().is_some() {}
        while self.b.poll_event().is_some() {}
        self.transmit(now);
        if let Some(st) = self.paths.first().and_then(|p| self.a.path_stats(p.a)) {
            self.trace.observe(st.congestion_window, st.packets_lost);
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        earliest(
            [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .chain(self.paths.iter().map(|p| p.link.poll_timeout())),
        )
    }

    fn data_stats(&self) -> LinkStats {
        net::data_direction_stats(self.paths.iter().map(|p| &p.link))
    }

    fn sender_trace(&self) -> Option<(CwndTrace, u64)> {
        let reverse = self.paths.iter().map(|p| p.link.b_to_a.stats().sent).sum();
        Some((self.trace, reverse))
    }
}
