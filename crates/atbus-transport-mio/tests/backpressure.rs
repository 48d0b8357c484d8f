//! Write backpressure, read pausing and graceful close against real loopback sockets.

mod common;

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::sync::mpsc;
use std::thread;

use atbus_transport_mio::{
    CloseReason, LinkId, LinkOverflow, OverflowSend, SendStatus, Transport, TransportConfig,
    TransportEvent, Url,
};
use common::drive;

const CHUNK: usize = 8 * 1024;

fn chunk(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; CHUNK]
}

/// Reads to end of stream and checks the chunk pattern; returns the byte count.
fn read_all_verified(mut s: std::net::TcpStream) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0usize;
    loop {
        let n = s.read(&mut buf).expect("peer read");
        if n == 0 {
            return pos;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            let expected = (((pos + k) / CHUNK) % 251) as u8;
            assert_eq!(*b, expected, "byte {} out of order", pos + k);
        }
        pos += n;
    }
}

/// A transport whose links queue at most `limit` bytes each.
fn transport(limit: usize) -> Transport {
    Transport::new(TransportConfig {
        write_queue_limit: limit,
        ..Default::default()
    })
    .expect("transport")
}

/// Sends chunks from `*next` on over a byte-stream link until it answers `Blocked` (true) or
/// `total` chunks went (false).
fn send_chunks(t: &mut Transport, link: LinkId, next: &mut usize, total: usize) -> bool {
    while *next < total {
        match t.send(link, &chunk(*next)).expect("send") {
            SendStatus::Blocked => return true,
            SendStatus::Sent | SendStatus::Queued => *next += 1,
            SendStatus::Dropped => unreachable!("a byte stream never drops"),
        }
    }
    false
}

/// Listens on `url` and connects to it; the accepted end stops reading as soon as it is up.
/// Returns (client, server).
fn paused_pair(t: &mut Transport, url: &str) -> (LinkId, LinkId) {
    let (_l, bound) = t.listen(&url.parse().expect("url")).expect("listen");
    let client = t.connect(&bound).expect("connect");
    let mut server = None;
    let mut client_up = false;
    drive(t, "both ends up", |t, evs| {
        for e in evs {
            if let TransportEvent::LinkUp { link, .. } = e {
                if link == client {
                    client_up = true;
                } else {
                    t.pause_reading(link).expect("pause");
                    server = Some(link);
                }
            }
        }
        client_up && server.is_some()
    });
    (client, server.expect("server link"))
}

/// Fails if any of `evs` delivers bytes on `server` (whose reading is paused).
fn assert_no_bytes(evs: &[TransportEvent], server: LinkId) {
    for e in evs {
        assert!(
            !matches!(e, TransportEvent::Bytes { link, .. } if *link == server),
            "Bytes delivered while paused"
        );
    }
}

fn connect_to_std(t: &mut Transport) -> (LinkId, std::net::TcpStream) {
    let std_listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = std_listener.local_addr().expect("addr");
    let link = t.connect(&Url::tcp(addr)).expect("connect");
    let (peer, _) = std_listener.accept().expect("accept");
    drive(t, "LinkUp", |_, evs| {
        evs.iter()
            .any(|e| matches!(e, TransportEvent::LinkUp { link: l, .. } if *l == link))
    });
    (link, peer)
}

#[test]
fn non_reading_peer_blocks_sender_with_bounded_queue_then_writable_resumes() {
    let limit = 64 * 1024;
    let mut t = transport(limit);
    let (link, peer) = connect_to_std(&mut t);

    // The peer does not read: kernel buffers fill, then the queue, then send says Blocked.
    let total_chunks = 2048; // 16 MiB at most
    let mut next = 0;
    send_chunks(&mut t, link, &mut next, total_chunks);
    assert!(next < total_chunks, "send never answered Blocked");
    let queued = t.link_stats(link).expect("stats").queued_bytes;
    assert!(
        queued <= limit + CHUNK,
        "queue grew past its limit: {queued} bytes"
    );
    assert!(queued > 0, "Blocked with an empty queue");

    // Now the peer reads everything; Writable arrives and the rest goes through.
    let reader = thread::spawn(move || read_all_verified(peer));
    let mut writables = 0;
    let mut closed = false;
    drive(&mut t, "all chunks sent and link closed", |t, evs| {
        for e in evs {
            match e {
                TransportEvent::Writable { link: l } if l == link => writables += 1,
                TransportEvent::LinkClosed { link: l, reason } if l == link => {
                    assert!(matches!(reason, CloseReason::Local), "{reason:?}");
                    closed = true;
                }
                _ => {}
            }
        }
        if writables > 0 && next < total_chunks {
            send_chunks(t, link, &mut next, total_chunks);
            if next == total_chunks {
                t.close(link).expect("close");
            }
        }
        closed
    });
    assert!(writables > 0);
    assert_eq!(reader.join().expect("reader"), total_chunks * CHUNK);
}

/// The drivers' overflow queue: a refused buffer is kept (`Blocked` once), later ones wait
/// behind it (`Queued`) without reaching the transport, and after `Writable` they all go out in
/// order, nothing lost or repeated.
#[test]
fn link_overflow_keeps_refused_bytes_in_order_until_writable() {
    let limit = 64 * 1024;
    let mut t = Transport::new(TransportConfig {
        write_queue_limit: limit,
        ..Default::default()
    })
    .expect("transport");
    let (link, peer) = connect_to_std(&mut t);
    let mut overflow = LinkOverflow::default();
    let total_chunks = 2048; // 16 MiB at most
    let mut next = 0;
    let mut blocked_at = None;
    while next < total_chunks {
        let outcome = overflow.send(&mut t, link, &chunk(next));
        next += 1;
        if outcome == OverflowSend::Blocked {
            blocked_at = Some(next - 1);
            break;
        }
        assert_eq!(outcome, OverflowSend::Passed, "nothing kept yet");
    }
    let blocked_at = blocked_at.expect("the transport never refused a send");
    assert!(!overflow.is_empty());
    let queued_before = t.link_stats(link).expect("stats").queued_bytes;
    // Behind a kept buffer, sends wait in the overflow and the transport sees none of them.
    for _ in 0..3 {
        assert_eq!(
            overflow.send(&mut t, link, &chunk(next)),
            OverflowSend::Queued
        );
        next += 1;
    }
    assert_eq!(overflow.len_bytes(), 4 * CHUNK);
    assert_eq!(
        t.link_stats(link).expect("stats").queued_bytes,
        queued_before
    );
    assert!(!overflow.flush(&mut t, link), "still blocked, nobody reads");

    let reader = thread::spawn(move || read_all_verified(peer));
    let mut closed = false;
    drive(&mut t, "overflow drained and link closed", |t, evs| {
        for e in evs {
            match e {
                TransportEvent::Writable { link: l } if l == link => {
                    if overflow.flush(t, link) && next < total_chunks {
                        while next < total_chunks {
                            let outcome = overflow.send(t, link, &chunk(next));
                            next += 1;
                            if outcome != OverflowSend::Passed {
                                break;
                            }
                        }
                    }
                    if overflow.is_empty() && next == total_chunks {
                        t.close(link).expect("close");
                    }
                }
                TransportEvent::LinkClosed { link: l, reason } if l == link => {
                    assert!(matches!(reason, CloseReason::Local), "{reason:?}");
                    closed = true;
                }
                _ => {}
            }
        }
        closed
    });
    assert!(
        blocked_at > 0,
        "the first send into an empty queue is accepted"
    );
    assert_eq!(reader.join().expect("reader"), total_chunks * CHUNK);
}

#[test]
fn graceful_close_flushes_queued_data() {
    let mut t = transport(32 * 1024 * 1024);
    let (link, peer) = connect_to_std(&mut t);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader = thread::spawn(move || {
        go_rx.recv().expect("go");
        read_all_verified(peer)
    });
    // Send until at least 1 MiB waits in our queue (the peer is not reading yet).
    let mut chunks = 0;
    while t.link_stats(link).expect("stats").queued_bytes < 1024 * 1024 {
        assert_ne!(
            t.send(link, &chunk(chunks)).expect("send"),
            SendStatus::Blocked
        );
        chunks += 1;
        assert!(chunks < 4096, "32 MiB sent and still nothing queued");
    }
    t.close(link).expect("close");
    assert!(
        t.send(link, b"late").is_err(),
        "a closing link accepts no data"
    );
    go_tx.send(()).expect("signal reader");
    drive(&mut t, "LinkClosed after flush", |_, evs| {
        evs.iter().any(|e| match e {
            TransportEvent::LinkClosed { link: l, reason } if *l == link => {
                assert!(matches!(reason, CloseReason::Local), "{reason:?}");
                true
            }
            _ => false,
        })
    });
    assert_eq!(reader.join().expect("reader"), chunks * CHUNK);
}

#[test]
fn pause_reading_stops_bytes_and_resume_delivers_rest_in_order() {
    let mut t = transport(64 * 1024);
    let (client, server) = paused_pair(&mut t, "tcp://127.0.0.1:0");

    let total_chunks = 2048;
    let mut next = 0;
    let mut blocked = false;
    drive(&mut t, "sender blocked by the paused reader", |t, evs| {
        assert_no_bytes(&evs, server);
        if !blocked {
            blocked = send_chunks(t, client, &mut next, total_chunks);
        }
        assert!(next < total_chunks, "never blocked");
        blocked
    });
    // A few more rounds while paused: still nothing.
    let mut rounds = 0;
    drive(&mut t, "quiet rounds", |_, evs| {
        assert_no_bytes(&evs, server);
        rounds += 1;
        rounds == 5
    });

    t.resume_reading(server).expect("resume");
    let mut received: Vec<u8> = Vec::new();
    drive(&mut t, "everything delivered after resume", |t, evs| {
        for e in evs {
            match e {
                TransportEvent::Bytes { link, data } if link == server => {
                    received.extend_from_slice(&data)
                }
                TransportEvent::Writable { link } if link == client => blocked = false,
                _ => {}
            }
        }
        if !blocked {
            blocked = send_chunks(t, client, &mut next, total_chunks);
        }
        received.len() == total_chunks * CHUNK
    });
    for (i, c) in received.chunks(CHUNK).enumerate() {
        assert!(c == chunk(i).as_slice(), "chunk {i} out of order");
    }
}

#[test]
fn mem_pause_blocks_sender_and_resume_delivers_in_order() {
    let limit = 64 * 1024;
    let mut t = transport(limit);
    let (client, server) = paused_pair(&mut t, "mem://pause-test");
    let mut next = 0;
    while t.send(client, &chunk(next)).expect("send") != SendStatus::Blocked {
        next += 1;
        assert!(next < 1000, "never blocked");
    }
    assert_eq!(next, limit / CHUNK);
    let mut rounds = 0;
    drive(&mut t, "quiet rounds", |_, evs| {
        assert!(
            evs.iter()
                .all(|e| !matches!(e, TransportEvent::Datagram { .. }))
        );
        rounds += 1;
        rounds == 3
    });
    t.resume_reading(server).expect("resume");
    let mut got = 0;
    let mut writable = false;
    drive(&mut t, "delivery and Writable", |_, evs| {
        for e in evs {
            match e {
                TransportEvent::Datagram { link, data } if link == server => {
                    assert!(data == chunk(got), "chunk {got} out of order");
                    got += 1;
                }
                TransportEvent::Writable { link } if link == client => writable = true,
                _ => {}
            }
        }
        got == next && writable
    });
}

/// The byte at stream position `p` of the segmented-send test: a pattern in which a lost,
/// repeated or moved piece of any length shows.
fn pattern(p: usize) -> u8 {
    (p.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// How far the segmented-send test got.
#[derive(Default)]
struct Progress {
    /// Stream position of the next byte to send.
    pos: usize,
    /// Index of the next send.
    next: usize,
    /// Sends the transport refused (kept in the overflow).
    blocked: usize,
}

impl Progress {
    /// Sends until the transport refuses one or all went.
    fn send_some(
        &mut self,
        t: &mut Transport,
        link: LinkId,
        overflow: &mut LinkOverflow,
        sends: &[[usize; 3]],
    ) {
        while self.next < sends.len() {
            let parts: Vec<Vec<u8>> = sends[self.next]
                .iter()
                .map(|&len| {
                    let part = (self.pos..self.pos + len).map(pattern).collect();
                    self.pos += len;
                    part
                })
                .collect();
            let segments: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            self.next += 1;
            match overflow.send_segments(t, link, &segments) {
                OverflowSend::Passed => {}
                OverflowSend::Blocked => {
                    self.blocked += 1;
                    return;
                }
                OverflowSend::Queued => unreachable!("nothing is sent behind a kept send"),
            }
        }
    }
}

/// Sends in several segments each (`send_segments`, as the node driver does for spliced
/// payloads) to a peer with a small receive buffer that reads slowly: writes are cut short
/// anywhere inside the segments, the overflow keeps refused sends, and the peer still reads
/// every byte once, in order.
#[test]
fn segmented_sends_cut_short_by_a_slow_peer_arrive_whole_and_in_order() {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    // Inherited by the accepted socket: the kernel holds little, so writes are partial.
    listener.set_recv_buffer_size(4096).expect("rcvbuf");
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    listener.bind(&addr.into()).expect("bind");
    listener.listen(1).expect("listen");
    let std_listener: StdListener = listener.into();
    let addr = std_listener.local_addr().expect("addr");

    let mut t = transport(64 * 1024);
    let link = t.connect(&Url::tcp(addr)).expect("connect");
    let (peer, _) = std_listener.accept().expect("accept");
    drive(&mut t, "LinkUp", |_, evs| {
        evs.iter()
            .any(|e| matches!(e, TransportEvent::LinkUp { link: l, .. } if *l == link))
    });

    // Sizes of (head, payload, tail) per send; the payloads are large (spliced in the driver).
    let sends: Vec<[usize; 3]> = (0..120)
        .map(|i| [1 + i % 37, 16 * 1024 + (i * 7919) % 60_000, i % 5])
        .collect();
    let total: usize = sends.iter().flatten().sum();
    let reader = thread::spawn(move || {
        let mut peer = peer;
        let mut buf = vec![0u8; 3000];
        let mut pos = 0usize;
        loop {
            let n = peer.read(&mut buf).expect("peer read");
            if n == 0 {
                return pos;
            }
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, pattern(pos + k), "byte {} wrong", pos + k);
            }
            pos += n;
            if pos % 7 == 0 {
                thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    });

    let mut overflow = LinkOverflow::default();
    let mut at = Progress::default();
    at.send_some(&mut t, link, &mut overflow, &sends);
    let mut closed = false;
    drive(&mut t, "every segmented send written", |t, evs| {
        for e in evs {
            match e {
                TransportEvent::Writable { link: l } if l == link => {
                    if overflow.flush(t, link) {
                        at.send_some(t, link, &mut overflow, &sends);
                    }
                    if overflow.is_empty() && at.next == sends.len() {
                        t.close(link).expect("close");
                    }
                }
                TransportEvent::LinkClosed { link: l, reason } if l == link => {
                    assert!(matches!(reason, CloseReason::Local), "{reason:?}");
                    closed = true;
                }
                _ => {}
            }
        }
        closed
    });
    assert!(
        at.blocked > 0,
        "the slow peer never made the transport refuse a send"
    );
    assert_eq!(reader.join().expect("reader"), total);
}
