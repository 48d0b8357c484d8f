//! Several links per peer, link loss, peer restarts and garbage input.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use atbus_netsim::for_each_seed;
use atbus_node::{Action, LinkKind, NodeEvent, UndeliverableReason};
use atbus_proto::AtbusCloseReason;
use bytes::Bytes;
use common::*;

fn pair(seed: u64) -> World {
    let mut w = World::new(seed);
    let t = token("k1", "a-shared-secret-of-32-bytes-long");
    w.add_node(config("client", vec![t.clone()]));
    w.add_node(config("server", vec![t]));
    w
}

#[test]
fn a_datagram_link_joins_the_session_and_a_killed_link_loses_nothing() {
    for_each_seed(6, |seed| {
        let mut w = pair(seed);
        let tcp = w.connect(0, 1, LinkKind::ByteStream, byte_link().with_rate(2_000_000));
        assert!(w.run_until(Duration::from_secs(2), |w| w.accepted(0) == 1));
        w.connect(0, 1, LinkKind::Datagram, lossy_link(0.05));
        assert!(
            w.run_until(Duration::from_secs(5), |w| w.accepted(0) == 2
                && w.accepted(1) == 2),
            "seed {seed}"
        );
        // Same session, one more path; one PeerUp only.
        let session = w.nodes[0].session("server").expect("session");
        assert_eq!(session.paths().count(), 2);
        assert_eq!(w.nodes[0].peer_links("server").len(), 2);
        let ups = w.events[0]
            .iter()
            .filter(|e| matches!(e, NodeEvent::PeerUp { .. }))
            .count();
        assert_eq!(ups, 1, "seed {seed}");

        let msgs = messages(seed, 400, 4000);
        for m in &msgs {
            w.send(0, "server", 1, m.clone());
        }
        // Kill the byte stream mid-transfer.
        w.run_until(Duration::from_secs(10), |w| {
            w.got(1, "client", 1).len() >= 40
        });
        assert!(
            w.got(1, "client", 1).len() < 400,
            "seed {seed}: transfer already over"
        );
        w.kill_link(tcp);
        assert!(
            w.run_until(Duration::from_secs(60), |w| w.got(1, "client", 1).len()
                >= 400),
            "seed {seed}: got {}",
            w.got(1, "client", 1).len()
        );
        assert_eq!(
            w.got(1, "client", 1),
            &msgs[..],
            "seed {seed}: exactly once, in order"
        );
        // The datagram path carried the rest.
        let session = w.nodes[0].session("server").expect("session");
        let paths: Vec<_> = session.paths().collect();
        assert_eq!(paths.len(), 1);
        let stats = session.path_stats(paths[0]).expect("stats");
        assert!(stats.bytes_sent > 100_000, "seed {seed}: {stats:?}");
        assert!(
            !w.events[0].iter().any(|e| matches!(
                e,
                NodeEvent::PeerDown { .. } | NodeEvent::Undeliverable { .. }
            )),
            "seed {seed}"
        );
    });
}

#[test]
fn peer_restart_reports_undeliverable_and_the_new_session_works() {
    for_each_seed(4, |seed| {
        let mut w = pair(seed);
        let mut slow = byte_link().with_latency(Duration::from_millis(40));
        slow = slow.with_rate(2_000_000);
        w.connect(0, 1, LinkKind::ByteStream, slow);
        assert!(w.run_until(Duration::from_secs(2), |w| w.accepted(0) == 1));
        let old_incarnation = w.nodes[0].peer_incarnation("server").expect("peer");
        let msgs = messages(seed, 300, 8000);
        let mut offsets = Vec::new();
        for m in &msgs {
            offsets.push(w.send(0, "server", 5, m.clone()));
        }
        w.run_until(Duration::from_secs(10), |w| {
            w.got(1, "client", 5).len() >= 20
        });
        let delivered_to_old: Vec<Bytes> = w.got(1, "client", 5).to_vec();
        assert!(delivered_to_old.len() < 300, "seed {seed}");

        // The server process restarts: same name, new incarnation, a new link.
        let t = token("k1", "a-shared-secret-of-32-bytes-long");
        w.restart_node(1, config("server", vec![t]));
        w.connect(0, 1, LinkKind::ByteStream, byte_link());
        assert!(
            w.run_until(Duration::from_secs(3), |w| w.accepted(1) >= 1
                && w.accepted(0) == 2),
            "seed {seed}: {:?}",
            w.events[0]
        );
        let new_incarnation = w.nodes[0].peer_incarnation("server").expect("peer");
        assert_ne!(new_incarnation, old_incarnation);
        assert_eq!(new_incarnation, w.nodes[1].incarnation());

        // Every message reached the old process or is reported; none silently lost or resent.
        let undeliverable: Vec<(u64, Bytes)> = w.events[0]
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Undeliverable {
                    peer,
                    stream_id: 5,
                    offset,
                    data,
                    reason: UndeliverableReason::PeerRestarted,
                    ..
                } if peer == "server" => Some((*offset, data.clone())),
                _ => None,
            })
            .collect();
        assert!(!undeliverable.is_empty(), "seed {seed}");
        let reported: BTreeSet<u64> = undeliverable.iter().map(|(o, _)| *o).collect();
        for (i, m) in msgs.iter().enumerate() {
            let delivered = i < delivered_to_old.len();
            if delivered {
                assert_eq!(&delivered_to_old[i], m, "seed {seed}");
            }
            assert!(
                delivered || reported.contains(&offsets[i]),
                "seed {seed}: message {i} neither delivered nor reported"
            );
        }
        for (o, d) in &undeliverable {
            let i = offsets.iter().position(|x| x == o).expect("known offset");
            assert_eq!(d, &msgs[i]);
        }
        assert!(
            w.got(1, "client", 5).is_empty(),
            "nothing resumed mid-stream"
        );

        // The new session works both ways, from offset 0.
        w.send(0, "server", 5, Bytes::from_static(b"after restart"));
        w.send(1, "client", 5, Bytes::from_static(b"hello again"));
        assert!(w.run_until(Duration::from_secs(3), |w| {
            !w.got(1, "client", 5).is_empty() && !w.got(0, "server", 5).is_empty()
        }));
        assert_eq!(
            w.got(1, "client", 5),
            &[Bytes::from_static(b"after restart")]
        );
    });
}

#[test]
fn unacknowledged_messages_wait_for_a_reconnect_then_time_out() {
    let mut w = pair(11);
    let l = w.connect(0, 1, LinkKind::ByteStream, byte_link());
    assert!(w.run_until(Duration::from_secs(2), |w| w.accepted(0) == 1));
    w.kill_link(l);
    w.run_for(Duration::from_millis(10));
    assert!(
        w.events[0]
            .iter()
            .any(|e| matches!(e, NodeEvent::PeerDown { .. }))
    );
    // Sent while down: waits for the reconnect and is delivered on the new link.
    w.send(0, "server", 2, Bytes::from_static(b"queued while down"));
    w.run_for(Duration::from_secs(1));
    w.connect(0, 1, LinkKind::ByteStream, byte_link());
    assert!(w.run_until(Duration::from_secs(3), |w| {
        !w.got(1, "client", 2).is_empty()
    }));
    // Down again, past the reconnect wait (60 s in these tests): reported undeliverable.
    let l2 = w.links.len() - 1;
    w.kill_link(l2);
    w.send(0, "server", 2, Bytes::from_static(b"never delivered"));
    w.run_for(Duration::from_secs(61));
    assert!(w.events[0].iter().any(|e| matches!(e,
        NodeEvent::Undeliverable { data, reason: UndeliverableReason::ReconnectTimeout, .. }
            if &data[..] == b"never delivered")));
    assert!(w.nodes[0].session("server").is_none());
}

#[test]
fn garbage_on_a_byte_stream_closes_that_link_only() {
    let mut w = World::new(21);
    let s = w.add_node(config("server", vec![]));
    let c = w.add_node(config("client", vec![]));
    w.connect(c, s, LinkKind::ByteStream, byte_link());
    assert!(w.run_until(Duration::from_secs(2), |w| w.accepted(0) == 1
        && w.accepted(1) == 1));
    // An attacker's connection to the server sends garbage.
    let now = w.clock.now();
    let bad = w.nodes[s].new_link_id();
    w.nodes[s].handle_link_up(
        now,
        bad,
        LinkKind::ByteStream,
        65536,
        atbus_node::Direction::Inbound,
    );
    w.nodes[s].handle_link_bytes(now, bad, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let mut close_frame = false;
    while let Some((link, n)) = w.nodes[s].poll_transmit(now, &mut buf) {
        if link == bad {
            let mut d = atbus_frame::StreamDecoder::new(Default::default());
            d.feed(&buf[..n]);
            let f = d.next_frame().expect("valid").expect("frame");
            close_frame = matches!(f.body, Some(atbus_proto::frame_message::Body::LinkClose(_)));
        }
    }
    assert!(close_frame, "a link_close goes out first");
    let actions: Vec<_> = std::iter::from_fn(|| w.nodes[s].poll_action()).collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Close { link, reason }
            if *link == bad && reason.code == AtbusCloseReason::UnsupportedVersion)),
        "{actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Close { link, .. } if *link != bad)),
        "{actions:?}"
    );
    // The good peer is unaffected.
    w.send(c, "server", 1, Bytes::from_static(b"still here"));
    assert!(w.run_until(Duration::from_secs(2), |w| {
        !w.got(0, "client", 1).is_empty()
    }));
    assert_eq!(w.nodes[s].peer_links("client").len(), 1);
}

#[test]
fn configured_peers_reconnect_with_backoff() {
    let now = std::time::Instant::now();
    let rng = <rand_chacha::ChaCha20Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(3);
    let mut c = config("client", vec![]);
    c.connect = vec!["tcp://server:1".into()];
    let mut node = atbus_node::Node::new(c, now, rng).expect("node");
    let mut times = Vec::new();
    let mut t = now;
    for _ in 0..6 {
        // Every attempt fails at once.
        let Some(Action::Connect { link, peer_url }) = node.poll_action() else {
            panic!("expected a connect");
        };
        assert_eq!(peer_url, "tcp://server:1");
        times.push(t - now);
        node.handle_link_closed(t, link);
        t = node.poll_timeout().expect("reconnect timer");
        node.handle_timeout(t, 0);
    }
    let gaps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Exponential with equal jitter: each gap in [base/2, base), base doubling from 100 ms.
    for (i, g) in gaps.iter().enumerate() {
        let base = Duration::from_millis(100) * (1 << i);
        assert!(*g >= base / 2 && *g < base, "gap {i} = {g:?}");
    }
}
