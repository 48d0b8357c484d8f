//! KCP (the `kcp` crate, a pure-Rust port of skywind3000/kcp) over an `atbus-netsim` link.
//!
//! Driven as KCP's documentation prescribes: `update(now_ms)` whenever `check(now_ms)` says it
//! is due, `input()` for every datagram that arrives, `recv()` until empty after input. Each
//! write KCP makes to its output is one datagram handed to the link. Nothing extra (no `flush()`
//! after `send()` or `input()`): data passed to `send()` leaves at the next flush, acks leave at
//! the next flush, as in a plain KCP application.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use atbus_netsim::{Bytes, DuplexLink, LinkConfig, LinkStats};
use kcp::Kcp;

use crate::net::{self, MTU, Pair};

/// Conversation id shared by both ends.
const CONV: u32 = 0x6174_6273;

/// The two KCP configurations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KcpMode {
    /// `nodelay(true, 10, 2, true)`, send and receive windows of `wnd` segments.
    Fast {
        /// Send and receive window, segments.
        wnd: u16,
    },
    /// `nodelay(false, 40, 0, false)`, default windows (send 32, receive 128).
    Normal,
}

impl KcpMode {
    /// How the mode is configured, for the docs.
    pub fn describe(self) -> String {
        match self {
            KcpMode::Fast { wnd } => {
                format!("`set_nodelay(true, 10, 2, true)`, `set_wndsize({wnd}, {wnd})`")
            }
            KcpMode::Normal => {
                "`set_nodelay(false, 40, 0, false)`, default windows (send 32, receive 128)"
                    .to_string()
            }
        }
    }

    /// Applies the mode (and the MTU of the comparison) to `kcp`.
    pub fn configure<O>(self, kcp: &mut Kcp<O>) {
        kcp.set_mtu(MTU).expect("valid MTU");
        match self {
            KcpMode::Fast { wnd } => {
                kcp.set_nodelay(true, 10, 2, true);
                kcp.set_wndsize(wnd, wnd);
            }
            KcpMode::Normal => kcp.set_nodelay(false, 40, 0, false),
        }
    }
}

/// KCP's output callback: every write is one datagram.
#[derive(Clone, Default)]
struct Outbox(Rc<RefCell<VecDeque<Bytes>>>);

impl io::Write for Outbox {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().push_back(Bytes::copy_from_slice(data));
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct End {
    kcp: Kcp<Outbox>,
    outbox: Outbox,
    /// Virtual millisecond at which `update` is due.
    next_update_ms: u32,
}

impl End {
    fn new(mode: KcpMode) -> Self {
        let outbox = Outbox::default();
        let mut kcp = Kcp::new(CONV, outbox.clone());
        mode.configure(&mut kcp);
        Self {
            kcp,
            outbox,
            next_update_ms: 0,
        }
    }

    fn run_timers(&mut self, now_ms: u32) {
        if now_ms >= self.next_update_ms || self.kcp.check(now_ms) == 0 {
            self.kcp.update(now_ms).expect("kcp update");
        }
        self.next_update_ms = now_ms + self.kcp.check(now_ms).max(1);
    }
}

/// Two KCP endpoints over one duplex link.
pub struct KcpPair {
    epoch: Instant,
    link: DuplexLink,
    a: End,
    b: End,
    /// A's `send` refuses while this many segments wait (queued or unacknowledged).
    send_limit: usize,
    recv_buf: Vec<u8>,
}

impl KcpPair {
    /// KCP in `mode` over a link configured by `config`, seeded by `seed`.
    pub fn new(mode: KcpMode, config: LinkConfig, seed: u64, epoch: Instant) -> Self {
        let a = End::new(mode);
        let b = End::new(mode);
        // Keep a send window's worth queued behind what is in flight, so the sender never starves
        // while the application's backlog stays bounded.
        let send_limit = 2 * usize::from(a.kcp.snd_wnd());
        Self {
            epoch,
            link: net::link(config, seed, 0),
            a,
            b,
            send_limit,
            recv_buf: vec![0; 256 * 1024],
        }
    }

    fn ms(&self, now: Instant) -> u32 {
        u32::try_from((now - self.epoch).as_millis()).expect("virtual run under 49 days")
    }
}

impl Pair for KcpPair {
    fn send(&mut self, _now: Instant, message: &Bytes) -> bool {
        if self.a.kcp.wait_snd() >= self.send_limit {
            return false;
        }
        self.a.kcp.send(message).expect("kcp send");
        true
    }

    fn poll(&mut self, now: Instant, delivered: &mut dyn FnMut(&[u8])) {
        let now_ms = self.ms(now);
        while let Some(d) = self.link.a_to_b.poll_deliver(now) {
            self.b.kcp.input(&d).expect("kcp input at B");
        }
        while let Ok(n) = self.b.kcp.recv(&mut self.recv_buf) {
            delivered(&self.recv_buf[..n]);
        }
        while let Some(d) = self.link.b_to_a.poll_deliver(now) {
            self.a.kcp.input(&d).expect("kcp input at A");
        }
        while self.a.kcp.recv(&mut self.recv_buf).is_ok() {}
        self.a.run_timers(now_ms);
        self.b.run_timers(now_ms);
        for (end, link) in [
            (&self.a, &mut self.link.a_to_b),
            (&self.b, &mut self.link.b_to_a),
        ] {
            let mut out = end.outbox.0.borrow_mut();
            for d in out.drain(..) {
                // Whatever the link does with it (loss, tail drop) is the experiment.
                let _ = link.send(now, d);
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let ms = self.a.next_update_ms.min(self.b.next_update_ms);
        let timer = self.epoch + Duration::from_millis(u64::from(ms));
        atbus_netsim::earliest([Some(timer), self.link.poll_timeout()])
    }

    fn data_stats(&self) -> LinkStats {
        net::data_direction_stats([&self.link])
    }
}
