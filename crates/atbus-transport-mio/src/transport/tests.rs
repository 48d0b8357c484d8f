//! Write coalescing and the short-read rule on byte streams, against std socket peers.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::{LinkId, SendStatus, Transport, TransportConfig, TransportEvent, Url};

/// A transport with one TCP link up to a std socket the test reads from.
fn linked(config: TransportConfig) -> (Transport, LinkId, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut t = Transport::new(config).expect("transport");
    let link = t
        .connect(&Url::tcp(listener.local_addr().expect("addr")))
        .expect("connect");
    let (peer, _) = listener.accept().expect("accept");
    wait_up(&mut t, link);
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (t, link, peer)
}

fn wait_up(t: &mut Transport, link: LinkId) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no LinkUp");
        t.poll_events(Some(Duration::from_millis(20)), &mut events)
            .expect("poll");
        if events
            .drain(..)
            .any(|e| matches!(e, TransportEvent::LinkUp { link: l, .. } if l == link))
        {
            break;
        }
    }
}

fn sent(t: &Transport, link: LinkId) -> u64 {
    t.link_stats(link).expect("stats").bytes_sent
}

#[test]
fn small_sends_wait_for_the_next_poll_then_leave_together_in_order() {
    let (mut t, link, mut peer) = linked(TransportConfig::default());
    let messages: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
    for m in &messages {
        assert_eq!(t.send(link, m).expect("send"), SendStatus::Queued);
    }
    let total: usize = messages.iter().map(Vec::len).sum();
    assert_eq!(
        sent(&t, link),
        0,
        "a small send was written before the turn ended"
    );
    assert_eq!(t.link_stats(link).expect("stats").queued_bytes, total);
    t.poll_events(Some(Duration::ZERO), &mut Vec::new())
        .expect("poll");
    assert_eq!(sent(&t, link), total as u64);
    let mut got = vec![0u8; total];
    peer.read_exact(&mut got).expect("read");
    assert_eq!(got, messages.concat());
}

#[test]
fn a_large_send_goes_out_at_once_behind_the_queued_small_ones() {
    let (mut t, link, mut peer) = linked(TransportConfig::default());
    let small = vec![7u8; 300];
    let large: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    assert_eq!(t.send(link, &small).expect("send"), SendStatus::Queued);
    assert_eq!(t.send(link, &large).expect("send"), SendStatus::Sent);
    assert_eq!(sent(&t, link), (small.len() + large.len()) as u64);
    let mut got = vec![0u8; small.len() + large.len()];
    peer.read_exact(&mut got).expect("read");
    assert_eq!(&got[..small.len()], &small[..]);
    assert_eq!(&got[small.len()..], &large[..]);
}

#[test]
fn a_full_coalescing_chunk_is_written_without_waiting_for_the_poll() {
    let (mut t, link, mut peer) = linked(TransportConfig::default());
    let m = vec![1u8; 1000];
    let mut statuses = Vec::new();
    for _ in 0..70 {
        statuses.push(t.send(link, &m).expect("send"));
    }
    // 64 KiB of small sends fill one chunk: that one goes out during the send that completes it.
    assert!(statuses.contains(&SendStatus::Sent), "{statuses:?}");
    assert!(
        sent(&t, link) >= 64_000,
        "only {} bytes written",
        sent(&t, link)
    );
    t.poll_events(Some(Duration::ZERO), &mut Vec::new())
        .expect("poll");
    assert_eq!(sent(&t, link), 70_000);
    let mut got = vec![0u8; 70_000];
    peer.read_exact(&mut got).expect("read");
    assert!(got.iter().all(|&b| b == 1));
}

#[test]
fn coalescing_off_writes_every_send_at_once() {
    let (mut t, link, mut peer) = linked(TransportConfig {
        coalesce_below: 0,
        ..Default::default()
    });
    assert_eq!(t.send(link, b"abc").expect("send"), SendStatus::Sent);
    assert_eq!(sent(&t, link), 3);
    let mut got = [0u8; 3];
    peer.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"abc");
}

#[test]
fn dropping_the_transport_writes_what_small_sends_queued() {
    let (mut t, link, mut peer) = linked(TransportConfig::default());
    assert_eq!(
        t.send(link, b"last words").expect("send"),
        SendStatus::Queued
    );
    drop(t);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"last words");
}

/// Polls until `done` says so with everything received so far; returns the bytes and whether
/// the link closed because the peer finished.
fn receive_until(
    t: &mut Transport,
    link: LinkId,
    mut done: impl FnMut(&[u8], bool) -> bool,
) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut got, mut closed) = (Vec::new(), false);
    let mut events = Vec::new();
    while !done(&got, closed) {
        assert!(
            Instant::now() < deadline,
            "stuck with {} bytes, closed: {closed}",
            got.len()
        );
        t.poll_events(Some(Duration::from_millis(20)), &mut events)
            .expect("poll");
        for e in events.drain(..) {
            match e {
                TransportEvent::Bytes { link: l, data } if l == link => {
                    got.extend_from_slice(&data)
                }
                TransportEvent::LinkClosed { link: l, reason } if l == link => {
                    assert!(
                        matches!(reason, crate::CloseReason::PeerClosed),
                        "{reason:?}"
                    );
                    closed = true;
                }
                _ => {}
            }
        }
    }
    (got, closed)
}

#[test]
fn data_arriving_after_a_short_read_is_read_in_a_later_round() {
    use std::io::Write;
    let (mut t, link, mut peer) = linked(TransportConfig::default());
    for burst in 0..20u8 {
        peer.write_all(&[burst; 100]).expect("write");
        let (got, _) = receive_until(&mut t, link, |got, _| got.len() >= 100);
        assert_eq!(got, vec![burst; 100]);
    }
}

#[test]
fn data_followed_by_end_of_stream_is_delivered_before_the_close() {
    use std::io::Write;
    let (mut t, link, mut peer) = linked(TransportConfig::default());
    peer.write_all(&[9u8; 300]).expect("write");
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let (got, closed) = receive_until(&mut t, link, |_, closed| closed);
    assert!(closed);
    assert_eq!(got, vec![9u8; 300]);
}

#[test]
fn unix_data_followed_by_end_of_stream_is_delivered_before_the_close() {
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    let path = std::env::temp_dir().join(format!("atbus-short-read-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind");
    let mut t = Transport::new(TransportConfig::default()).expect("transport");
    let url: Url = format!("unix://{}", path.display()).parse().expect("url");
    let link = t.connect(&url).expect("connect");
    let (mut peer, _) = listener.accept().expect("accept");
    wait_up(&mut t, link);
    peer.write_all(&[5u8; 300]).expect("write");
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let (got, closed) = receive_until(&mut t, link, |_, closed| closed);
    let _ = std::fs::remove_file(&path);
    assert!(closed);
    assert_eq!(got, vec![5u8; 300]);
}
