//! ZeroMQ (libzmq through the `zmq` crate) echo pairs over loopback TCP (`tcp://`) and Unix
//! sockets (`ipc://`), the same echo pattern as the atbus and raw pairs.
//!
//! Settings: libzmq defaults (TCP_NODELAY is on for every `tcp://` connection, high-water marks of
//! 1000 messages each way, ZeroMQ's own write batching in its I/O thread). Client and echo share
//! one context with one I/O thread, as two processes would each have one: on a 2-core machine one
//! shared I/O thread is the kinder setting for ZeroMQ.
//!
//! - [`ZmqStream`]: the client PUSHes to the echo's PULL socket and the echo PUSHes every message
//!   back to the client's PULL socket; the client keeps at most `window` messages in flight, as
//!   the atbus client does.
//! - [`ZmqReqRep`]: REQ/REP, one strict round trip per request.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::loopback::Family;

/// Longest any exchange may take before the benchmark gives up.
const TIMEOUT: Duration = Duration::from_secs(60);

static NEXT_IPC: AtomicU64 = AtomicU64::new(0);

/// Endpoints a ZeroMQ echo binds: (address to bind, file to remove afterwards).
fn bind_address(family: Family) -> (String, Option<PathBuf>) {
    match family {
        Family::Tcp => ("tcp://127.0.0.1:*".to_string(), None),
        Family::Unix => {
            let n = NEXT_IPC.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("atbus-compare-zmq-{}-{n}.sock", std::process::id()));
            (format!("ipc://{}", path.display()), Some(path))
        }
    }
}

/// Binds `socket` on a fresh loopback endpoint and returns the endpoint to connect to.
fn bind(socket: &zmq::Socket, family: Family, files: &mut Vec<PathBuf>) -> String {
    let (address, file) = bind_address(family);
    socket.bind(&address).expect("zmq bind");
    files.extend(file);
    socket
        .get_last_endpoint()
        .expect("zmq endpoint")
        .expect("zmq endpoint is UTF-8")
}

/// A client streaming to a ZeroMQ PUSH/PULL echo thread.
pub struct ZmqStream {
    push: zmq::Socket,
    pull: zmq::Socket,
    echo: Option<JoinHandle<()>>,
    files: Vec<PathBuf>,
    msg: zmq::Message,
    _ctx: zmq::Context,
}

impl ZmqStream {
    /// Starts the echo thread on fresh loopback endpoints and connects to it.
    pub fn new(family: Family) -> ZmqStream {
        let ctx = zmq::Context::new();
        let echo_in = ctx.socket(zmq::PULL).expect("zmq socket");
        let echo_out = ctx.socket(zmq::PUSH).expect("zmq socket");
        let mut files = Vec::new();
        let in_ep = bind(&echo_in, family, &mut files);
        let out_ep = bind(&echo_out, family, &mut files);
        let echo = thread::spawn(move || {
            let mut msg = zmq::Message::new();
            loop {
                if echo_in.recv(&mut msg, 0).is_err() {
                    return;
                }
                // An empty message ends the echo.
                if msg.is_empty() {
                    return;
                }
                let out = std::mem::replace(&mut msg, zmq::Message::new());
                if echo_out.send(out, 0).is_err() {
                    return;
                }
            }
        });
        let push = ctx.socket(zmq::PUSH).expect("zmq socket");
        let pull = ctx.socket(zmq::PULL).expect("zmq socket");
        push.connect(&in_ep).expect("zmq connect");
        pull.connect(&out_ep).expect("zmq connect");
        pull.set_rcvtimeo(TIMEOUT.as_millis() as i32)
            .expect("zmq rcvtimeo");
        ZmqStream {
            push,
            pull,
            echo: Some(echo),
            files,
            msg: zmq::Message::new(),
            _ctx: ctx,
        }
    }

    /// Sends `count` messages of `data`, at most `window` in flight, and checks every echo.
    pub fn stream(&mut self, data: &[u8], count: usize, window: usize) {
        let window = window.max(1);
        let (mut sent, mut received) = (0usize, 0usize);
        let deadline = Instant::now() + TIMEOUT;
        while received < count {
            assert!(
                Instant::now() < deadline,
                "zmq timed out: {received}/{count}"
            );
            while sent < count && sent - received < window {
                match self.push.send(data, zmq::DONTWAIT) {
                    Ok(()) => sent += 1,
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => panic!("zmq send: {e}"),
                }
            }
            // libzmq learns that the peer took messages off a pipe only in batches, so a send
            // can report EAGAIN with nothing in flight: then wait in a blocking send instead.
            if sent == received && sent < count {
                self.push.send(data, 0).expect("zmq send");
                sent += 1;
            }
            // One blocking receive, then whatever else is already there.
            let mut flags = 0;
            loop {
                match self.pull.recv(&mut self.msg, flags) {
                    Ok(()) => {
                        assert!(&self.msg[..] == data, "zmq echo differs");
                        received += 1;
                        flags = zmq::DONTWAIT;
                        if received == count {
                            break;
                        }
                    }
                    Err(zmq::Error::EAGAIN) if flags == zmq::DONTWAIT => break,
                    Err(e) => panic!("zmq recv: {e} ({received} of {sent} echoed)"),
                }
            }
        }
    }
}

impl Drop for ZmqStream {
    fn drop(&mut self) {
        let _ = self.push.send(&[][..], 0);
        let _ = self.push.set_linger(0);
        let _ = self.pull.set_linger(0);
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A REQ client of a REP echo thread.
pub struct ZmqReqRep {
    req: zmq::Socket,
    echo: Option<JoinHandle<()>>,
    files: Vec<PathBuf>,
    msg: zmq::Message,
    _ctx: zmq::Context,
}

impl ZmqReqRep {
    /// Starts the REP echo thread on a fresh loopback endpoint and connects to it.
    pub fn new(family: Family) -> ZmqReqRep {
        let ctx = zmq::Context::new();
        let rep = ctx.socket(zmq::REP).expect("zmq socket");
        let mut files = Vec::new();
        let ep = bind(&rep, family, &mut files);
        let echo = thread::spawn(move || {
            let mut msg = zmq::Message::new();
            loop {
                if rep.recv(&mut msg, 0).is_err() {
                    return;
                }
                let stop = msg.is_empty();
                let out = std::mem::replace(&mut msg, zmq::Message::new());
                if rep.send(out, 0).is_err() || stop {
                    return;
                }
            }
        });
        let req = ctx.socket(zmq::REQ).expect("zmq socket");
        req.connect(&ep).expect("zmq connect");
        req.set_rcvtimeo(TIMEOUT.as_millis() as i32)
            .expect("zmq rcvtimeo");
        ZmqReqRep {
            req,
            echo: Some(echo),
            files,
            msg: zmq::Message::new(),
            _ctx: ctx,
        }
    }

    /// One request of `data` and its reply; returns the round trip.
    pub fn round_trip(&mut self, data: &[u8]) -> Duration {
        let start = Instant::now();
        self.req.send(data, 0).expect("zmq send");
        self.req.recv(&mut self.msg, 0).expect("zmq recv");
        let took = start.elapsed();
        assert!(&self.msg[..] == data, "zmq reply differs");
        took
    }
}

impl Drop for ZmqReqRep {
    fn drop(&mut self) {
        if self.req.send(&[][..], 0).is_ok() {
            let _ = self.req.recv(&mut self.msg, 0);
        }
        let _ = self.req.set_linger(0);
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}
