//! KCP and atbus over real UDP sockets on loopback, through a lossy userspace proxy (this
//! kernel has no netem): seeded random drop, a fixed one-way delay (40 ms round trip), the
//! 10 Mbit/s rate limit and 64 KiB tail-drop queue of the simulated link, both directions alike.
//!
//! Each endpoint runs on its own thread in real time; the proxy runs one thread per direction.
//! The workloads are the simulated ones (bulk 1 KiB messages for goodput; 200 B messages, one per
//! 10 ms slot at a seeded point, for one-way latency measured against one process clock).

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use atbus_node::{Delivery, NodeConfig, NodeError, NodeEvent};
use atbus_stream::SendError;
use atbus_transport_mio::{NodeDriver, TransportConfig, Url};
use bytes::Bytes;
use kcp::Kcp;

use crate::atbus_peer::AtbusMode;
use crate::kcp_peer::KcpMode;
use crate::net::{CwndTrace, MTU, ONE_WAY, QUEUE_LIMIT, RATE_10_MBIT};

/// Longest the handshake through the proxy may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a latency run waits for stragglers after its last send.
const DRAIN: Duration = Duration::from_secs(5);
/// Size of the bulk messages and of the latency messages.
const BULK_MESSAGE: usize = 1024;
const LATENCY_MESSAGE: usize = 200;
const LATENCY_INTERVAL: Duration = Duration::from_millis(10);
/// KCP's conversation id.
const CONV: u32 = 0x6174_6275;

/// xorshift64*: the proxy's and the latency schedule's seeded random numbers.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What one direction of the proxy does to datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Probability of a random drop.
    pub loss: f64,
    /// Added one-way delay.
    pub delay: Duration,
    /// Rate limit, bytes per second.
    pub rate: u64,
    /// Bytes that may wait for the rate limiter before tail drop.
    pub queue_limit: usize,
}

impl Impairment {
    /// The simulated link's settings with `loss`.
    pub fn like_simulated(loss: f64) -> Impairment {
        Impairment {
            loss,
            delay: ONE_WAY,
            rate: RATE_10_MBIT,
            queue_limit: QUEUE_LIMIT,
        }
    }
}

/// Counters of one proxy direction.
#[derive(Debug, Default)]
pub struct DirectionStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Dropped at random.
    pub lost: AtomicU64,
    /// Dropped because the queue was full.
    pub queue_dropped: AtomicU64,
}

/// One direction's pipeline: rate limiter, then the fixed delay.
struct Pipe {
    imp: Impairment,
    rng: Rng,
    /// When the rate limiter is free again.
    busy_until: Instant,
    /// (leaves the limiter, delivered at, datagram), in order.
    queue: VecDeque<(Instant, Instant, Vec<u8>)>,
}

impl Pipe {
    fn new(imp: Impairment, seed: u64, now: Instant) -> Pipe {
        Pipe {
            imp,
            rng: Rng::new(seed),
            busy_until: now,
            queue: VecDeque::new(),
        }
    }

    /// Takes a datagram in at `now`; false when it was dropped (and why in `stats`).
    fn admit(&mut self, now: Instant, d: &[u8], stats: &DirectionStats) -> bool {
        stats.received.fetch_add(1, Ordering::Relaxed);
        if self.rng.next_f64() < self.imp.loss {
            stats.lost.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let waiting: usize = self
            .queue
            .iter()
            .filter(|(out, _, _)| *out > now)
            .map(|(_, _, d)| d.len())
            .sum();
        if waiting + d.len() > self.imp.queue_limit {
            stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let start = self.busy_until.max(now);
        let serialise = Duration::from_secs_f64(d.len() as f64 / self.imp.rate as f64);
        self.busy_until = start + serialise;
        self.queue.push_back((
            self.busy_until,
            self.busy_until + self.imp.delay,
            d.to_vec(),
        ));
        true
    }
}

/// The lossy proxy: clients send to [`Proxy::addr`], which forwards to the server; replies
/// go back to the last client address seen.
pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Client → server counters.
    pub forward: Arc<DirectionStats>,
    /// Server → client counters.
    pub backward: Arc<DirectionStats>,
}

fn pump(
    from: Arc<UdpSocket>,
    to: Arc<UdpSocket>,
    dest: Arc<Mutex<Option<SocketAddr>>>,
    source: Option<Arc<Mutex<Option<SocketAddr>>>>,
    mut pipe: Pipe,
    stats: Arc<DirectionStats>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while pipe.queue.front().is_some_and(|(_, due, _)| *due <= now) {
            let Some((_, _, d)) = pipe.queue.pop_front() else {
                break;
            };
            let to_addr = *dest.lock().expect("lock");
            if let Some(a) = to_addr {
                let _ = to.send_to(&d, a);
            }
        }
        let wait = pipe
            .queue
            .front()
            .map_or(Duration::from_millis(5), |(_, due, _)| {
                due.saturating_duration_since(now)
            })
            .clamp(Duration::from_micros(50), Duration::from_millis(5));
        let _ = from.set_read_timeout(Some(wait));
        match from.recv_from(&mut buf) {
            Ok((n, peer)) => {
                if let Some(src) = &source {
                    *src.lock().expect("lock") = Some(peer);
                }
                pipe.admit(Instant::now(), &buf[..n], &stats);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {}
        }
    }
}

impl Proxy {
    /// Starts a proxy to `server` with `imp` in both directions, seeded by `seed`.
    pub fn start(server: SocketAddr, imp: Impairment, seed: u64) -> io::Result<Proxy> {
        let front = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?);
        let back = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?);
        let addr = front.local_addr()?;
        let client = Arc::new(Mutex::new(None));
        let server = Arc::new(Mutex::new(Some(server)));
        let stop = Arc::new(AtomicBool::new(false));
        let forward = Arc::new(DirectionStats::default());
        let backward = Arc::new(DirectionStats::default());
        let now = Instant::now();
        let t1 = {
            let (f, b, s, c, st, stop) = (
                Arc::clone(&front),
                Arc::clone(&back),
                Arc::clone(&server),
                Arc::clone(&client),
                Arc::clone(&forward),
                Arc::clone(&stop),
            );
            let pipe = Pipe::new(imp, seed.wrapping_mul(2), now);
            thread::spawn(move || pump(f, b, s, Some(c), pipe, st, stop))
        };
        let t2 = {
            let (f, b, c, st, stop) = (
                Arc::clone(&front),
                Arc::clone(&back),
                Arc::clone(&client),
                Arc::clone(&backward),
                Arc::clone(&stop),
            );
            let pipe = Pipe::new(imp, seed.wrapping_mul(2) + 1, now);
            thread::spawn(move || pump(b, f, c, None, pipe, st, stop))
        };
        Ok(Proxy {
            addr,
            stop,
            threads: vec![t1, t2],
            forward,
            backward,
        })
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A workload over the proxy.
#[derive(Debug, Clone, Copy)]
pub enum Workload {
    /// Keep the sender's buffer full of 1 KiB messages for this long.
    Bulk(Duration),
    /// This many 200 B messages, one per 10 ms slot.
    Latency(usize),
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Bulk: message bytes delivered within the duration, per second, in KiB/s.
    pub goodput_kib_s: f64,
    /// Latency: one-way latencies in ms of delivered messages, sorted.
    pub latencies_ms: Vec<f64>,
    /// Latency: messages sent.
    pub sent: usize,
    /// Datagrams of the data direction dropped at random and by the full queue.
    pub lost: u64,
    /// Datagrams of the data direction dropped by the full queue.
    pub queue_dropped: u64,
    /// Datagrams of the data direction.
    pub datagrams: u64,
    /// atbus only: the sender's path at the end (packets it declared lost, smoothed RTT in ms,
    /// congestion window in bytes).
    pub sender_path: Option<(u64, f64, u64)>,
    /// atbus only: the sender's window sampled after every driver step.
    pub trace: Option<CwndTrace>,
    /// Datagrams of the reverse direction (acknowledgements).
    pub reverse_datagrams: u64,
}

impl Outcome {
    /// The latency at quantile `q`, ms (nearest rank over every message sent; a message not
    /// delivered counts as infinitely late).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.sent.max(self.latencies_ms.len());
        if n == 0 {
            return f64::NAN;
        }
        let i = ((n - 1) as f64 * q).round() as usize;
        self.latencies_ms.get(i).copied().unwrap_or(f64::INFINITY)
    }
}

/// A message carrying its sequence number and send time (ns since `epoch`).
fn stamped(seq: u64, epoch: Instant, size: usize) -> Bytes {
    let mut m = vec![0u8; size.max(16)];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    let ns = epoch.elapsed().as_nanos() as u64;
    m[8..16].copy_from_slice(&ns.to_le_bytes());
    for (i, b) in m[16..].iter_mut().enumerate() {
        *b = (i as u8) ^ (seq as u8);
    }
    Bytes::from(m)
}

/// Checks a stamped message; returns its one-way latency in ms.
fn latency_of(m: &[u8], epoch: Instant) -> f64 {
    assert!(m.len() >= 16, "short message");
    let seq = u64::from_le_bytes(m[..8].try_into().expect("8 bytes"));
    for (i, b) in m[16..].iter().enumerate() {
        assert_eq!(*b, (i as u8) ^ (seq as u8), "message {seq} corrupted");
    }
    let sent = u64::from_le_bytes(m[8..16].try_into().expect("8 bytes"));
    (epoch.elapsed().as_nanos() as u64).saturating_sub(sent) as f64 / 1e6
}

/// Send times of a latency run: one per slot at a seeded random point of the slot.
fn schedule(count: usize, seed: u64) -> Vec<Duration> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    (0..count)
        .map(|i| LATENCY_INTERVAL * i as u32 + LATENCY_INTERVAL.mul_f64(rng.next_f64()))
        .collect()
}

/// What the receiving side collects.
#[derive(Default)]
struct Received {
    bytes_in_time: u64,
    latencies: Vec<f64>,
}

/// The run's clock: when the measured part starts and ends.
#[derive(Clone, Copy)]
struct Window {
    epoch: Instant,
    start: Instant,
    end: Instant,
}

fn finish(workload: Workload, got: Received, sent: usize, proxy: &Proxy) -> Outcome {
    let mut latencies = got.latencies;
    latencies.sort_by(f64::total_cmp);
    let s = &proxy.forward;
    Outcome {
        goodput_kib_s: match workload {
            Workload::Bulk(d) => got.bytes_in_time as f64 / 1024.0 / d.as_secs_f64(),
            Workload::Latency(_) => 0.0,
        },
        latencies_ms: latencies,
        sent,
        lost: s.lost.load(Ordering::Relaxed),
        queue_dropped: s.queue_dropped.load(Ordering::Relaxed),
        datagrams: s.received.load(Ordering::Relaxed),
        sender_path: None,
        trace: None,
        reverse_datagrams: proxy.backward.received.load(Ordering::Relaxed),
    }
}

fn run_window(workload: Workload) -> Window {
    // Half a second for the handshake to settle through the proxy before measuring.
    let epoch = Instant::now();
    let start = epoch + Duration::from_millis(500);
    let end = match workload {
        Workload::Bulk(d) => start + d,
        Workload::Latency(n) => start + LATENCY_INTERVAL * n as u32 + DRAIN,
    };
    Window { epoch, start, end }
}

// ---------------------------------------------------------------------------------------------
// atbus: two NodeDrivers over udp://, the sender's link going through the proxy.

fn atbus_config(name: &str, mode: AtbusMode) -> NodeConfig {
    let mut c = NodeConfig::new(name);
    c.session.no_delay = mode == AtbusMode::NoDelay;
    c
}

fn atbus_transport() -> TransportConfig {
    TransportConfig {
        udp_mtu_ipv4: MTU,
        ..TransportConfig::default()
    }
}

/// One atbus run over the proxy.
pub fn run_atbus(mode: AtbusMode, imp: Impairment, workload: Workload, seed: u64) -> Outcome {
    let mut b = NodeDriver::new(atbus_config("b", mode), atbus_transport()).expect("node b");
    let bound = b
        .listen(&"udp://127.0.0.1:0".parse::<Url>().expect("url"))
        .expect("listen");
    let server: SocketAddr = bound.ip_socket_addr().expect("udp socket address");
    let proxy = Proxy::start(server, imp, seed).expect("proxy");
    let mut a = NodeDriver::new(atbus_config("a", mode), atbus_transport()).expect("node a");
    a.connect(
        &format!("udp://{}", proxy.addr())
            .parse::<Url>()
            .expect("url"),
    )
    .expect("connect");
    let w = run_window(workload);
    let stop = AtomicBool::new(false);
    let (got, sent) = thread::scope(|s| {
        let stop = &stop;
        let receiver = s.spawn(move || {
            let mut got = Received::default();
            while !stop.load(Ordering::Relaxed) {
                b.run_once(Some(Duration::from_millis(2))).expect("run b");
                let now = Instant::now();
                while let Some(event) = b.poll_event() {
                    if let NodeEvent::Readable { peer, stream_id } = event {
                        while let Some(d) = b.read(&peer, stream_id) {
                            let Delivery::Message(m) = d else { continue };
                            match workload {
                                Workload::Bulk(_) if now >= w.start && now < w.end => {
                                    got.bytes_in_time += m.data.len() as u64;
                                }
                                Workload::Bulk(_) => {}
                                Workload::Latency(_) => {
                                    got.latencies.push(latency_of(&m.data, w.epoch));
                                }
                            }
                        }
                    }
                }
            }
            got
        });
        let (sent, path) = atbus_sender(&mut a, workload, w, seed);
        stop.store(true, Ordering::Relaxed);
        (receiver.join().expect("receiver"), (sent, path))
    });
    let (sent, (path, trace)) = sent;
    Outcome {
        sender_path: path,
        trace: Some(trace),
        ..finish(workload, got, sent, &proxy)
    }
}

/// The sender path's (lost, srtt ms, cwnd).
type SenderPath = Option<(u64, f64, u64)>;

/// Sends the workload; returns the messages sent, the sender path's end state and its window
/// trace over the run.
fn atbus_sender(
    a: &mut NodeDriver,
    workload: Workload,
    w: Window,
    seed: u64,
) -> (usize, (SenderPath, CwndTrace)) {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut up = false;
    while !up {
        assert!(
            Instant::now() < deadline,
            "atbus never came up through the proxy"
        );
        a.run_once(Some(Duration::from_millis(5))).expect("run a");
        while let Some(e) = a.poll_event() {
            up |= matches!(e, NodeEvent::PeerUp { .. });
        }
    }
    let bulk = Bytes::from(vec![0x5au8; BULK_MESSAGE]);
    let times = match workload {
        Workload::Latency(n) => schedule(n, seed),
        Workload::Bulk(_) => Vec::new(),
    };
    let mut sent = 0usize;
    let mut trace = CwndTrace::default();
    loop {
        let now = Instant::now();
        if let Some(st) = a
            .node()
            .session("b")
            .and_then(|s| s.path_stats(s.paths().next()?))
        {
            trace.observe(st.congestion_window, st.packets_lost);
        }
        if now >= w.end {
            // The sender's view of its one path.
            let path = a.node().session("b").and_then(|session| {
                let id = session.paths().next()?;
                let st = session.path_stats(id)?;
                Some((
                    st.packets_lost,
                    st.smoothed_rtt_us as f64 / 1000.0,
                    st.congestion_window,
                ))
            });
            return (sent, (path, trace));
        }
        match workload {
            Workload::Bulk(_) => loop {
                match a.send("b", 1, bulk.clone()) {
                    Ok(_) => sent += 1,
                    Err(NodeError::Send(SendError::WouldBlock)) => break,
                    Err(e) => panic!("atbus send: {e}"),
                }
            },
            Workload::Latency(_) => {
                while sent < times.len() && w.start + times[sent] <= now {
                    let m = stamped(sent as u64, w.epoch, LATENCY_MESSAGE);
                    match a.send("b", 1, m) {
                        Ok(_) => sent += 1,
                        Err(NodeError::Send(SendError::WouldBlock)) => break,
                        Err(e) => panic!("atbus send: {e}"),
                    }
                }
            }
        }
        let next = times
            .get(sent)
            .map_or(Duration::from_millis(2), |t| {
                (w.start + *t).saturating_duration_since(now)
            })
            .min(Duration::from_millis(2));
        a.run_once(Some(next)).expect("run a");
        while a.poll_event().is_some() {}
    }
}

// ---------------------------------------------------------------------------------------------
// KCP over UdpSockets.

/// KCP's output: every write is one datagram to the peer.
struct UdpOut {
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
}

impl io::Write for UdpOut {
    fn write(&mut self, d: &[u8]) -> io::Result<usize> {
        // A full socket buffer is loss, as on a real path.
        let _ = self.sock.send_to(d, self.peer);
        Ok(d.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct KcpEnd {
    kcp: Kcp<UdpOut>,
    sock: Arc<UdpSocket>,
    epoch: Instant,
    buf: Vec<u8>,
}

impl KcpEnd {
    fn new(mode: KcpMode, sock: Arc<UdpSocket>, peer: SocketAddr, epoch: Instant) -> KcpEnd {
        let out = UdpOut {
            sock: Arc::clone(&sock),
            peer,
        };
        let mut kcp = Kcp::new(CONV, out);
        mode.configure(&mut kcp);
        KcpEnd {
            kcp,
            sock,
            epoch,
            buf: vec![0u8; 65_536],
        }
    }

    fn ms(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    /// Waits for a datagram up to `max` or KCP's next update; feeds input; runs the timers.
    fn step(&mut self, max: Duration) {
        let now = self.ms();
        let due = Duration::from_millis(u64::from(self.kcp.check(now)));
        let wait = due.min(max).max(Duration::from_micros(100));
        let _ = self.sock.set_read_timeout(Some(wait));
        if let Ok(n) = self.sock.recv(&mut self.buf) {
            let _ = self.kcp.input(&self.buf[..n]);
            // Take whatever else is already queued without waiting.
            let _ = self.sock.set_nonblocking(true);
            while let Ok(n) = self.sock.recv(&mut self.buf) {
                let _ = self.kcp.input(&self.buf[..n]);
            }
            let _ = self.sock.set_nonblocking(false);
        }
        let now = self.ms();
        if self.kcp.check(now) == 0 {
            let _ = self.kcp.update(now);
        }
    }
}

/// One KCP run over the proxy.
pub fn run_kcp(mode: KcpMode, imp: Impairment, workload: Workload, seed: u64) -> Outcome {
    let b_sock = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind b"));
    let a_sock = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a"));
    let proxy = Proxy::start(b_sock.local_addr().expect("addr"), imp, seed).expect("proxy");
    let w = run_window(workload);
    // B answers the proxy's back socket, which it learns from A's first datagram.
    let stop = AtomicBool::new(false);
    let (got, sent) = thread::scope(|s| {
        let stop = &stop;
        let b_sock2 = Arc::clone(&b_sock);
        let receiver = s.spawn(move || {
            let mut got = Received::default();
            let mut probe = [0u8; 65_536];
            // The first datagram tells B where the proxy sends from.
            let _ = b_sock2.set_read_timeout(Some(SETUP_TIMEOUT));
            let Ok((n, back)) = b_sock2.recv_from(&mut probe) else {
                return got;
            };
            let mut b = KcpEnd::new(mode, b_sock2, back, w.epoch);
            let _ = b.kcp.input(&probe[..n]);
            let mut msg = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                b.step(Duration::from_millis(2));
                let now = Instant::now();
                while let Ok(n) = b.kcp.recv(&mut msg) {
                    match workload {
                        Workload::Bulk(_) if now >= w.start && now < w.end => {
                            got.bytes_in_time += n as u64;
                        }
                        Workload::Bulk(_) => {}
                        // The opening "hello" carries no stamp.
                        Workload::Latency(_) if n < 16 => {}
                        Workload::Latency(_) => got.latencies.push(latency_of(&msg[..n], w.epoch)),
                    }
                }
            }
            got
        });
        let mut a = KcpEnd::new(mode, Arc::clone(&a_sock), proxy.addr(), w.epoch);
        let send_limit = 2 * usize::from(a.kcp.snd_wnd());
        let bulk = vec![0x5au8; BULK_MESSAGE];
        let times = match workload {
            Workload::Latency(n) => schedule(n, seed),
            Workload::Bulk(_) => Vec::new(),
        };
        // Opening datagram so B learns its peer before the measured part.
        a.kcp.send(b"hello").expect("kcp send");
        let _ = a.kcp.flush();
        let mut sent = 0usize;
        let mut sink = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            if now >= w.end {
                break;
            }
            if now >= w.start {
                match workload {
                    Workload::Bulk(_) => {
                        while a.kcp.wait_snd() < send_limit {
                            a.kcp.send(&bulk).expect("kcp send");
                            sent += 1;
                        }
                    }
                    Workload::Latency(_) => {
                        while sent < times.len() && w.start + times[sent] <= now {
                            let m = stamped(sent as u64, w.epoch, LATENCY_MESSAGE);
                            a.kcp.send(&m).expect("kcp send");
                            sent += 1;
                        }
                    }
                }
            }
            let next = times
                .get(sent)
                .map_or(Duration::from_millis(2), |t| {
                    (w.start + *t).saturating_duration_since(now)
                })
                .min(Duration::from_millis(2));
            a.step(next);
            while a.kcp.recv(&mut sink).is_ok() {}
        }
        stop.store(true, Ordering::Relaxed);
        (receiver.join().expect("receiver"), sent)
    });
    finish(workload, got, sent, &proxy)
}

// ---------------------------------------------------------------------------------------------
// The runs of the subcommand, their table, goals and plot.

/// One pairing at one loss rate over the proxy.
#[derive(Debug, Clone)]
pub struct UdpRow {
    /// Pairing name.
    pub pairing: &'static str,
    /// Loss rate.
    pub loss: f64,
    /// KCP bulk.
    pub kcp_bulk: Outcome,
    /// atbus bulk.
    pub atbus_bulk: Outcome,
    /// KCP latency.
    pub kcp_lat: Outcome,
    /// atbus latency.
    pub atbus_lat: Outcome,
}

/// Settings of the real-UDP runs.
#[derive(Debug, Clone, Copy)]
pub struct UdpParams {
    /// Seconds of each bulk run.
    pub bulk: Duration,
    /// Messages of each latency run.
    pub latency_messages: usize,
    /// Seed of the proxy and the schedule.
    pub seed: u64,
}

/// Runs every pairing at every loss rate, one run at a time (KCP bulk, atbus bulk, KCP latency,
/// atbus latency).
pub fn run_rows(pairings: &[crate::Pairing], losses: &[f64], p: UdpParams) -> Vec<UdpRow> {
    let mut rows = Vec::new();
    for pairing in pairings {
        for &loss in losses {
            let imp = Impairment::like_simulated(loss);
            let started = Instant::now();
            let kcp_bulk = run_kcp(pairing.kcp, imp, Workload::Bulk(p.bulk), p.seed);
            let atbus_bulk = run_atbus(pairing.atbus, imp, Workload::Bulk(p.bulk), p.seed);
            let lat = Workload::Latency(p.latency_messages);
            let kcp_lat = run_kcp(pairing.kcp, imp, lat, p.seed + 1);
            let atbus_lat = run_atbus(pairing.atbus, imp, lat, p.seed + 1);
            eprintln!(
                "udp proxy {} {:.0} %: goodput KiB/s kcp {:.0} atbus {:.0} (data datagrams lost at random {} / {} of {} / {}); p99 ms kcp {:.1} atbus {:.1} ({:.1} s)",
                pairing.name,
                loss * 100.0,
                kcp_bulk.goodput_kib_s,
                atbus_bulk.goodput_kib_s,
                kcp_bulk.lost,
                atbus_bulk.lost,
                kcp_bulk.datagrams,
                atbus_bulk.datagrams,
                kcp_lat.quantile_ms(0.99),
                atbus_lat.quantile_ms(0.99),
                started.elapsed().as_secs_f64()
            );
            if let Some(t) = &atbus_bulk.trace {
                eprintln!(
                    "udp proxy {} {:.0} % atbus bulk trace: {}",
                    pairing.name,
                    loss * 100.0,
                    t.describe(atbus_bulk.datagrams, atbus_bulk.reverse_datagrams)
                );
            }
            rows.push(UdpRow {
                pairing: pairing.name,
                loss,
                kcp_bulk,
                atbus_bulk,
                kcp_lat,
                atbus_lat,
            });
        }
    }
    rows
}

fn fmt_ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "lost".to_string()
    }
}

fn fmt_ratio(num: f64, den: f64) -> String {
    if num.is_finite() && den.is_finite() && den > 0.0 {
        format!("{:.2}×", num / den)
    } else {
        "—".to_string()
    }
}

fn drop_pct(o: &Outcome) -> String {
    if o.datagrams == 0 {
        return "—".to_string();
    }
    format!(
        "{:.1} %",
        100.0 * o.queue_dropped as f64 / o.datagrams as f64
    )
}

/// The real-UDP section: setup, table, and the goals read against both this table and the
/// simulated one.
pub fn section(p: &UdpParams, rows: &[UdpRow], sim: &[crate::report::RowFigures]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "### Over real UDP through a lossy proxy\n");
    let _ = writeln!(
        w,
        "The same pairings and workloads in real time over UDP sockets on loopback, through a \
         userspace proxy (`benches/compare/src/lossy_udp.rs`; this kernel has no netem) that does \
         to each direction what the simulated link does: seeded random drop, {} ms added one way \
         ({} ms round trip plus loopback's few µs), a {} bytes/s rate limit with a {} KiB tail-drop \
         queue. One run per cell (real time cannot repeat seeds exactly), each endpoint and each \
         proxy direction on its own thread: KCP on `UdpSocket`s driven by `check`/`update`/`input` \
         with MTU {MTU}; atbus as two `NodeDriver`s over `udp://` with `udp_mtu_ipv4 = {MTU}` and \
         the pairing's `SessionConfig`. Bulk: {} s of 1 KiB messages (KCP: while fewer than 2 × \
         `snd_wnd` wait; atbus: until `WouldBlock`) after 0.5 s for the handshake, goodput = bytes \
         read in that time; latency: {} messages of 200 B, one per 10 ms slot at a seeded point, \
         one-way latency from `send` to the receiver's read, waiting {} s for stragglers (a \
         message not delivered by then counts as infinitely late: \"lost\" in the table).\n",
        ONE_WAY.as_millis(),
        ONE_WAY.as_millis() * 2,
        RATE_10_MBIT,
        QUEUE_LIMIT / 1024,
        p.bulk.as_secs_f64(),
        p.latency_messages,
        DRAIN.as_secs()
    );
    let _ = writeln!(
        w,
        "| pairing | loss | KCP goodput KiB/s | atbus goodput KiB/s | goodput atbus/KCP | KCP p50 ms | KCP p99 ms | atbus p50 ms | atbus p99 ms | p99 atbus/KCP | queue drops KCP / atbus (bulk) | undelivered latency msgs KCP / atbus |"
    );
    let _ = writeln!(
        w,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in rows {
        let (kp99, ap99) = (r.kcp_lat.quantile_ms(0.99), r.atbus_lat.quantile_ms(0.99));
        let _ = writeln!(
            w,
            "| {} | {:.0} % | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} |",
            r.pairing,
            r.loss * 100.0,
            r.kcp_bulk.goodput_kib_s,
            r.atbus_bulk.goodput_kib_s,
            fmt_ratio(r.atbus_bulk.goodput_kib_s, r.kcp_bulk.goodput_kib_s),
            fmt_ms(r.kcp_lat.quantile_ms(0.5)),
            fmt_ms(kp99),
            fmt_ms(r.atbus_lat.quantile_ms(0.5)),
            fmt_ms(ap99),
            fmt_ratio(ap99, kp99),
            drop_pct(&r.kcp_bulk),
            drop_pct(&r.atbus_bulk),
            r.kcp_lat.sent.saturating_sub(r.kcp_lat.latencies_ms.len()),
            r.atbus_lat
                .sent
                .saturating_sub(r.atbus_lat.latencies_ms.len()),
        );
    }
    let _ = writeln!(
        w,
        "\nGoals (issue 9): lossy goodput and p99 ≥ KCP (p99 no worse), per pairing and loss rate, over the simulated link and over real UDP:\n"
    );
    let _ = writeln!(w, "| goal | link | pairing | loss | atbus/KCP | result |");
    let _ = writeln!(w, "| --- | --- | --- | --- | ---: | --- |");
    for g in goals(rows, sim) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.0} % | {} | {} |",
            g.what,
            g.link,
            g.pairing,
            g.loss * 100.0,
            g.ratio.map_or("—".to_string(), |r| format!("{r:.2}×")),
            g.verdict()
        );
    }
    let _ = writeln!(w);
    s
}

/// One lossy goal row.
#[derive(Debug, Clone)]
pub struct LossyGoal {
    /// "goodput ≥ KCP" or "p99 ≤ KCP".
    pub what: &'static str,
    /// "simulated" or "real UDP".
    pub link: &'static str,
    /// Pairing.
    pub pairing: &'static str,
    /// Loss rate.
    pub loss: f64,
    /// atbus / KCP.
    pub ratio: Option<f64>,
    /// Whether it is met.
    pub met: bool,
    /// Measured context of a real-UDP goodput row: what the atbus sender saw.
    pub detail: Option<String>,
}

impl LossyGoal {
    fn verdict(&self) -> String {
        match self.ratio {
            None if self.met => "met (KCP's message at this quantile never arrived)".to_string(),
            None => "not measured (nothing delivered)".to_string(),
            Some(_) if self.met => "met".to_string(),
            Some(r) if self.link == "real UDP" && self.detail.is_none() => format!(
                "not met: {:.2} × away; not profiled (one run per cell in real time on a shared \
                 2-core machine)",
                if r > 1.0 { r } else { 1.0 / r }
            ),
            Some(r) if self.link == "real UDP" => format!(
                "not met: {:.2} × away; measured: {}. Not profiled further: the cause found \
                 before (no-delay mode cut the window whenever one detection round declared two \
                 or more losses, so it depended on how the mio driver batches acknowledgements) \
                 is fixed in atbus-stream, where only a run of three consecutive lost packet \
                 numbers cuts the window now; KCP's fast mode runs without congestion control \
                 (`nc = true`); one run per cell on a shared 2-core machine",
                if r > 1.0 { r } else { 1.0 / r },
                self.detail.as_deref().unwrap_or("not recorded")
            ),
            Some(r) => format!(
                "not met: {:.2} × away; not profiled yet (deterministic simulation: rerun with \
                 the same seeds under callgrind to profile)",
                if r > 1.0 { r } else { 1.0 / r }
            ),
        }
    }
}

/// Goodput and p99 goals of every row of both tables.
pub fn goals(rows: &[UdpRow], sim: &[crate::report::RowFigures]) -> Vec<LossyGoal> {
    let ratio = |a: f64, k: f64| (a.is_finite() && k.is_finite() && k > 0.0).then(|| a / k);
    // atbus delivered its p99 message, KCP did not: atbus is ahead, by no finite ratio.
    let beats = |a: f64, k: f64| a.is_finite() && k == f64::INFINITY;
    let mut g = Vec::new();
    let mut push = |link,
                    pairing,
                    loss,
                    good: Option<f64>,
                    (p99, ahead): (Option<f64>, bool),
                    detail: Option<String>| {
        g.push(LossyGoal {
            what: "goodput ≥ KCP",
            link,
            pairing,
            loss,
            ratio: good,
            met: good.is_some_and(|r| r >= 1.0),
            detail,
        });
        g.push(LossyGoal {
            what: "p99 ≤ KCP",
            link,
            pairing,
            loss,
            ratio: p99,
            met: ahead || p99.is_some_and(|r| r <= 1.0),
            detail: None,
        });
    };
    for f in sim {
        push(
            "simulated",
            f.pairing,
            f.loss,
            ratio(f.atbus_goodput, f.kcp_goodput),
            (ratio(f.atbus_p99, f.kcp_p99), beats(f.atbus_p99, f.kcp_p99)),
            None,
        );
    }
    for r in rows {
        push(
            "real UDP",
            r.pairing,
            r.loss,
            ratio(r.atbus_bulk.goodput_kib_s, r.kcp_bulk.goodput_kib_s),
            {
                let (a, k) = (r.atbus_lat.quantile_ms(0.99), r.kcp_lat.quantile_ms(0.99));
                (ratio(a, k), beats(a, k))
            },
            r.atbus_bulk.sender_path.map(|(lost, srtt, cwnd)| {
                let dropped = r.atbus_bulk.lost + r.atbus_bulk.queue_dropped;
                let spurious = if lost > dropped {
                    format!(
                        ", {} more than the proxy dropped (declared lost on timing alone)",
                        lost - dropped
                    )
                } else {
                    String::new()
                };
                format!(
                    "the atbus sender declared {lost} packets lost where the proxy dropped {} of its {} datagrams at random and {} at \
                     the full queue{spurious}; it ended with a congestion window of {cwnd} B (≈ \
                     {:.0} datagrams of {MTU} B) and a smoothed RTT of {srtt:.1} ms on the 40 ms \
                     path",
                    r.atbus_bulk.lost,
                    r.atbus_bulk.datagrams,
                    r.atbus_bulk.queue_dropped,
                    cwnd as f64 / MTU as f64
                ) + &r.atbus_bulk.trace.map_or(String::new(), |t| {
                    format!(
                        "; over the run: {}",
                        t.describe(r.atbus_bulk.datagrams, r.atbus_bulk.reverse_datagrams)
                    )
                })
            }),
        );
    }
    g
}

/// Goodput against loss: atbus and KCP, both pairings, simulated and real UDP.
pub fn chart(rows: &[UdpRow], sim: &[crate::report::RowFigures]) -> crate::svg::Chart {
    let mut series: Vec<crate::svg::Series> = Vec::new();
    // One colour per protocol and pairing; the real-UDP line dashed beside the simulated one.
    let mut keys: Vec<String> = Vec::new();
    let mut add = |proto: &str, pairing: &str, udp: bool, x: f64, y: f64| {
        let key = format!("{proto} {pairing}");
        let colour = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
            keys.push(key.clone());
            keys.len() - 1
        });
        let name = format!("{key} ({})", if udp { "real UDP" } else { "sim" });
        if let Some(s) = series.iter_mut().find(|s| s.name == name) {
            s.points.push((x, y));
        } else {
            series.push(crate::svg::Series {
                name,
                points: vec![(x, y)],
                colour,
                dashed: udp,
            });
        }
    };
    for f in sim {
        add("atbus", f.pairing, false, f.loss * 100.0, f.atbus_goodput);
        add("KCP", f.pairing, false, f.loss * 100.0, f.kcp_goodput);
    }
    for r in rows {
        add(
            "atbus",
            r.pairing,
            true,
            r.loss * 100.0,
            r.atbus_bulk.goodput_kib_s,
        );
        add(
            "KCP",
            r.pairing,
            true,
            r.loss * 100.0,
            r.kcp_bulk.goodput_kib_s,
        );
    }
    crate::svg::Chart {
        title: "Goodput vs loss, 10 Mbit/s, 40 ms RTT: atbus vs KCP".into(),
        x_label: "random loss per direction, %".into(),
        y_label: "goodput, KiB/s (log scale)".into(),
        log_x: false,
        log_y: true,
        series,
        x_ticks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_uniform_enough() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<f64> = (0..10_000).map(|_| a.next_f64()).collect();
        assert!(
            xs.iter()
                .zip((0..).map(|_| b.next_f64()))
                .all(|(x, y)| *x == y)
        );
        let below: usize = xs.iter().filter(|x| **x < 0.1).count();
        assert!((800..1200).contains(&below), "{below}");
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    }

    #[test]
    fn undelivered_messages_count_as_infinitely_late() {
        let o = Outcome {
            latencies_ms: vec![1.0, 2.0, 3.0],
            sent: 4,
            ..Outcome::default()
        };
        assert_eq!(o.quantile_ms(0.0), 1.0);
        assert_eq!(o.quantile_ms(0.5), 3.0);
        assert_eq!(o.quantile_ms(0.99), f64::INFINITY);
        let lost = UdpRow {
            pairing: "p",
            loss: 0.1,
            kcp_bulk: Outcome {
                goodput_kib_s: 10.0,
                ..Outcome::default()
            },
            atbus_bulk: Outcome {
                goodput_kib_s: 5.0,
                lost: 10,
                queue_dropped: 2,
                datagrams: 100,
                sender_path: Some((15, 55.0, 14_688)),
                ..Outcome::default()
            },
            kcp_lat: o.clone(),
            atbus_lat: Outcome {
                latencies_ms: vec![1.0; 4],
                sent: 4,
                ..Outcome::default()
            },
        };
        let g = goals(&[lost], &[]);
        assert!(!g[0].met && (g[0].ratio.expect("ratio") - 0.5).abs() < 1e-9);
        let v = g[0].verdict();
        assert!(
            v.contains("declared 15 packets lost")
                && v.contains("3 more than the proxy dropped")
                && v.contains("≈ 12 datagrams"),
            "{v}"
        );
        assert!(g[1].met && g[1].ratio.is_none(), "{g:?}");
        assert!(g[1].verdict().starts_with("met"));
    }

    #[test]
    fn the_pipe_drops_delays_and_limits_the_rate() {
        let now = Instant::now();
        let imp = Impairment {
            loss: 0.0,
            delay: Duration::from_millis(20),
            rate: 1_000_000,
            queue_limit: 5_000,
        };
        let stats = DirectionStats::default();
        let mut p = Pipe::new(imp, 1, now);
        // 1000 B at 1 MB/s takes 1 ms; the fifth still fits, the sixth exceeds 5000 B waiting.
        let admitted: Vec<bool> = (0..7).map(|_| p.admit(now, &[0u8; 1000], &stats)).collect();
        assert_eq!(admitted, [true, true, true, true, true, false, false]);
        assert_eq!(stats.queue_dropped.load(Ordering::Relaxed), 2);
        let due: Vec<Duration> = p.queue.iter().map(|(_, d, _)| *d - now).collect();
        assert_eq!(due[0], Duration::from_millis(21));
        assert_eq!(due[4], Duration::from_millis(25));
        let mut lossy = Pipe::new(Impairment { loss: 0.5, ..imp }, 2, now);
        let stats = DirectionStats::default();
        let kept = (0..1000)
            .filter(|i| lossy.admit(now + Duration::from_millis(*i), &[0u8; 10], &stats))
            .count();
        assert!((400..600).contains(&kept), "{kept}");
        assert_eq!(stats.lost.load(Ordering::Relaxed) as usize, 1000 - kept);
    }

    /// Real sockets through a real proxy: both protocols deliver with 5 % loss.
    #[test]
    fn both_protocols_deliver_through_the_proxy() {
        let imp = Impairment {
            delay: Duration::from_millis(5),
            ..Impairment::like_simulated(0.05)
        };
        for (kcp, atbus) in [(KcpMode::Fast { wnd: 128 }, AtbusMode::NoDelay)] {
            let k = run_kcp(kcp, imp, Workload::Latency(50), 1);
            let a = run_atbus(atbus, imp, Workload::Latency(50), 1);
            for o in [&k, &a] {
                assert_eq!(o.sent, 50);
                assert!(o.latencies_ms.len() >= 45, "{}", o.latencies_ms.len());
                assert!(o.quantile_ms(0.5) >= 5.0, "{}", o.quantile_ms(0.5));
            }
            let k = run_kcp(kcp, imp, Workload::Bulk(Duration::from_millis(500)), 2);
            let a = run_atbus(atbus, imp, Workload::Bulk(Duration::from_millis(500)), 2);
            assert!(k.goodput_kib_s > 50.0, "{}", k.goodput_kib_s);
            assert!(a.goodput_kib_s > 50.0, "{}", a.goodput_kib_s);
            // Hundreds of data datagrams at 5 %: the proxy dropped some of each.
            assert!(k.lost > 0 && a.lost > 0, "{} {}", k.lost, a.lost);
        }
    }
}
