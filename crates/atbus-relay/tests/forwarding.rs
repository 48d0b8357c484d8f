//! Relays in deterministic simulation: delivery through one and two relays with loss, the trust
//! rules, the hop limit, loops, and bounded queues under a slow destination.

mod common;

use std::time::Duration;

use atbus_frame::FrameLimits;
use atbus_netsim::for_each_seed;
use atbus_node::{LinkKind, NodeEvent};
use atbus_proto::{AtbusCloseReason, FrameMessage, MessageHead, PingData, frame_message::Body};
use atbus_relay::DropReason;
use bytes::Bytes;
use common::*;

/// a → relay → b over lossy datagram links on both sides.
fn star(seed: u64, loss: f64) -> (World, usize, usize, usize) {
    let mut w = World::new(seed);
    let a = w.add_node(node_config("a", &["relay"]));
    let b = w.add_node(node_config("b", &["relay"]));
    let r = w.add_relay(relay_config("relay", &[]));
    w.connect(a, r, LinkKind::Datagram, lossy_link(loss));
    w.connect(b, r, LinkKind::Datagram, lossy_link(loss));
    assert!(w.run_until(Duration::from_secs(5), |w| w.links_up(r) == 2
        && w.links_up(a) == 1
        && w.links_up(b) == 1));
    (w, a, b, r)
}

fn encode(frame: &FrameMessage) -> Vec<u8> {
    let mut out = Vec::new();
    atbus_frame::encode(frame, &FrameLimits::default(), &mut out).expect("encodes");
    out
}

fn ping(head: MessageHead) -> Vec<u8> {
    encode(&FrameMessage {
        head: Some(head),
        body: Some(Body::Ping(PingData {
            ping_id: 1,
            timepoint_microseconds: 0,
        })),
    })
}

#[test]
fn a_relay_delivers_exactly_once_in_order_over_lossy_links() {
    for_each_seed(4, |seed| {
        let (mut w, a, b, r) = star(seed, 0.05);
        w.route(a, "b", "relay");
        let msgs = messages(seed, 300, 3000);
        w.send_all(a, "b", 1, &msgs);
        assert!(
            w.run_until_got(b, "a", 1, msgs.len(), Duration::from_secs(60)),
            "seed {seed}: got {}",
            w.got(b, "a", 1).len()
        );
        assert_eq!(
            w.got(b, "a", 1),
            &msgs[..],
            "seed {seed}: exactly once, in order"
        );
        // Replies travel back the same way: b's session with a was created by the relay path.
        w.send(b, "a", 2, Bytes::from_static(b"reply"));
        assert!(w.run_until(Duration::from_secs(10), |w| !w.got(a, "b", 2).is_empty()));
        assert!(w.violations.is_empty(), "seed {seed}: {:?}", w.violations);
        let m = w.relay(r).metrics();
        assert!(m.frames_forwarded > 300, "seed {seed}: {m:?}");
        assert_eq!(m.drops(DropReason::ForgedSource), 0);
        // The receiving side sees who the relay authenticated, after one hop.
        let heads: Vec<_> = w.seen[b]
            .iter()
            .filter(|s| matches!(s.body, Some(Body::Packet(_))))
            .collect();
        assert!(!heads.is_empty());
        for s in heads {
            assert_eq!(s.head.source, "a");
            assert_eq!(s.head.forward_for_source, "a");
            assert_eq!(s.head.hop_count, 1);
        }
        // The relayed path is lossy: the session has an RTO safety net on it.
        let session = w.node(a).session("b").expect("session");
        let path = session.paths().next().expect("a relayed path");
        assert!(session.path_stats(path).expect("stats").packets_sent > 0);
    });
}

#[test]
fn a_chain_of_two_relays_delivers_and_counts_two_hops() {
    for_each_seed(3, |seed| {
        let mut w = World::new(seed);
        let a = w.add_node(node_config("a", &["r1"]));
        let b = w.add_node(node_config("b", &["r2"]));
        let mut c1 = relay_config("r1", &["r2"]);
        c1.upstream = Some("r2".into());
        let r1 = w.add_relay(c1);
        let mut c2 = relay_config("r2", &["r1"]);
        c2.routes.insert("a".into(), "r1".into());
        let r2 = w.add_relay(c2);
        w.connect(a, r1, LinkKind::Datagram, lossy_link(0.03));
        w.connect(r1, r2, LinkKind::ByteStream, byte_link());
        w.connect(b, r2, LinkKind::Datagram, lossy_link(0.03));
        assert!(w.run_until(Duration::from_secs(5), |w| w.links_up(r1) == 2
            && w.links_up(r2) == 2));
        w.route(a, "b", "r1");
        let msgs = messages(seed, 200, 2000);
        w.send_all(a, "b", 3, &msgs);
        assert!(
            w.run_until_got(b, "a", 3, msgs.len(), Duration::from_secs(60)),
            "seed {seed}"
        );
        assert_eq!(w.got(b, "a", 3), &msgs);
        assert!(w.violations.is_empty(), "seed {seed}: {:?}", w.violations);
        let packets: Vec<_> = w.seen[b]
            .iter()
            .filter(|s| matches!(s.body, Some(Body::Packet(_))))
            .collect();
        assert!(!packets.is_empty());
        for s in packets {
            assert_eq!(s.head.forward_for_source, "a");
            assert_eq!(s.head.hop_count, 2, "two relays crossed");
        }
        // Acks from b travel back through r2 and r1 to a.
        assert!(w.relay(r2).metrics().frames_forwarded > 0);
        assert_eq!(w.relay(r1).metrics().drops_total(), 0, "seed {seed}");
    });
}

/// A third plain node, "mallory", linked to the star's relay `r`: its index and sim link.
fn mallory(w: &mut World, r: usize) -> (usize, usize) {
    let m = w.add_node(node_config("mallory", &["relay"]));
    let link = w.connect(m, r, LinkKind::ByteStream, byte_link());
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r) == 3));
    (m, link)
}

#[test]
fn a_forged_source_from_a_plain_node_is_dropped() {
    let (mut w, _a, b, r) = star(7, 0.0);
    let (m, link) = mallory(&mut w, r);
    let forged = ping(MessageHead {
        source: "a".into(),
        destination: "b".into(),
        ..MessageHead::default()
    });
    w.inject(link, m, forged);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.relay(r).metrics().drops(DropReason::ForgedSource), 1);
    assert!(w.node(b).session("a").is_none(), "b never heard of a");
    assert!(w.seen[b].iter().all(|s| s.head.source != "a"));
}

#[test]
fn forwarding_fields_from_a_plain_node_are_replaced() {
    let (mut w, _a, b, r) = star(8, 0.0);
    let (m, link) = mallory(&mut w, r);
    let relay_side = w.link_id(link, r);
    w.inject(
        link,
        m,
        ping(MessageHead {
            source: "mallory".into(),
            destination: "b".into(),
            forward_for_source: "a".into(),
            forward_for_connection_id: 999,
            hop_count: 7,
        }),
    );
    w.run_for(Duration::from_secs(1));
    let s = w.seen[b]
        .iter()
        .find(|s| s.head.source == "mallory")
        .expect("the ping was forwarded");
    assert_eq!(s.head.forward_for_source, "mallory");
    assert_eq!(s.head.forward_for_connection_id, relay_side.0 as i64);
    assert_eq!(s.head.hop_count, 1);
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[test]
fn the_hop_limit_sends_a_typed_error_to_the_source() {
    let mut w = World::new(11);
    let a = w.add_node(node_config("a", &["r1"]));
    let b = w.add_node(node_config("b", &["r3"]));
    let mut c1 = relay_config("r1", &["r2"]);
    c1.upstream = Some("r2".into());
    let r1 = w.add_relay(c1);
    let mut c2 = relay_config("r2", &["r1", "r3"]);
    c2.upstream = Some("r3".into());
    c2.routes.insert("a".into(), "r1".into());
    c2.hop_limit = 1;
    let r2 = w.add_relay(c2);
    let r3 = w.add_relay(relay_config("r3", &["r2"]));
    w.connect_bytes(&[(a, r1), (r1, r2), (r2, r3), (b, r3)]);
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r2) == 2
        && w.links_up(r3) == 2));
    w.route(a, "b", "r1");
    w.send(a, "b", 1, Bytes::from_static(b"too far"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.forward_errors(a).is_empty()));
    let errors = w.forward_errors(a);
    assert_eq!(
        errors[0],
        ("r2".to_owned(), "b".to_owned(), AtbusCloseReason::HopLimit)
    );
    assert!(w.relay(r2).metrics().drops(DropReason::HopLimit) >= 1);
    assert_eq!(
        w.relay(r3).metrics().frames_forwarded,
        0,
        "nothing passed r2"
    );
    assert!(w.got(b, "a", 1).is_empty());
    // Retransmissions do not flood the source: one error per interval.
    w.run_for(Duration::from_secs(2));
    let m = w.relay(r2).metrics();
    assert!(m.forward_errors_sent <= 21, "{m:?}");
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[test]
fn an_unknown_destination_is_reported_unreachable() {
    let (mut w, a, _b, r) = star(12, 0.0);
    w.route(a, "nobody", "relay");
    w.send(a, "nobody", 1, Bytes::from_static(b"hello?"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.forward_errors(a).is_empty()));
    assert_eq!(
        w.forward_errors(a)[0],
        (
            "relay".to_owned(),
            "nobody".to_owned(),
            AtbusCloseReason::Unreachable
        )
    );
    assert!(w.relay(r).metrics().drops(DropReason::Unreachable) >= 1);
}

#[test]
fn a_two_relay_loop_is_broken_at_once() {
    let mut w = World::new(13);
    let n = w.add_node(node_config("n", &["ra"]));
    let mut ca = relay_config("ra", &["rb"]);
    ca.routes.insert("x".into(), "rb".into());
    let ra = w.add_relay(ca);
    let mut cb = relay_config("rb", &["ra"]);
    cb.routes.insert("x".into(), "ra".into());
    let rb = w.add_relay(cb);
    w.connect_bytes(&[(n, ra), (ra, rb)]);
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(ra) == 2));
    w.route(n, "x", "ra");
    w.send(n, "x", 1, Bytes::from_static(b"loop"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.forward_errors(n).is_empty()));
    assert_eq!(w.forward_errors(n)[0].2, AtbusCloseReason::Unreachable);
    let (ma, mb) = (w.relay(ra).metrics().clone(), w.relay(rb).metrics().clone());
    assert!(mb.drops(DropReason::Reflection) >= 1, "{mb:?}");
    // Every frame n sent crossed ra → rb once and stopped; only errors came back.
    assert_eq!(ma.drops_total(), 0, "{ma:?}");
    assert!(
        mb.frames_received <= ma.frames_forwarded,
        "no frame went around: {ma:?} {mb:?}"
    );
    assert_eq!(mb.frames_forwarded, mb.forward_errors_sent);
}

#[test]
fn a_triangle_loop_ends_at_the_hop_limit() {
    let mut w = World::new(14);
    let n = w.add_node(node_config("n", &["ra"]));
    let mut ca = relay_config("ra", &["rb", "rc"]);
    ca.routes.insert("x".into(), "rb".into());
    let ra = w.add_relay(ca);
    let mut cb = relay_config("rb", &["ra", "rc"]);
    cb.routes.insert("x".into(), "rc".into());
    cb.upstream = Some("ra".into());
    let rb = w.add_relay(cb);
    let mut cc = relay_config("rc", &["ra", "rb"]);
    cc.routes.insert("x".into(), "ra".into());
    cc.upstream = Some("ra".into());
    let rc = w.add_relay(cc);
    w.connect_bytes(&[(n, ra), (ra, rb), (rb, rc), (rc, ra)]);
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(ra) == 3
        && w.links_up(rb) == 2
        && w.links_up(rc) == 2));
    w.route(n, "x", "ra");
    w.send(n, "x", 1, Bytes::from_static(b"around"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.forward_errors(n).is_empty()));
    assert_eq!(w.forward_errors(n)[0].2, AtbusCloseReason::HopLimit);
    let hop_drops: u64 = [ra, rb, rc]
        .iter()
        .map(|&r| w.relay(r).metrics().drops(DropReason::HopLimit))
        .sum();
    assert!(hop_drops >= 1);
    // Each frame n sent was forwarded at most 16 times (plus the errors going back).
    let received_from_n = w.relay(ra).link_metrics()[0].frames_in;
    let forwarded: u64 = [ra, rb, rc]
        .iter()
        .map(|&r| {
            let m = w.relay(r).metrics();
            m.frames_forwarded - m.forward_errors_sent
        })
        .sum();
    assert!(
        forwarded <= received_from_n * 16 + 16,
        "{forwarded} forwards for {received_from_n} frames"
    );
}

#[test]
fn a_blocked_destination_drops_its_own_overflow_and_never_stalls_another() {
    let mut w = World::new(15);
    let a = w.add_node(node_config("a", &["relay"]));
    let b = w.add_node(node_config("b", &["relay"]));
    let c = w.add_node(node_config("c", &["relay"]));
    let mut rc = relay_config("relay", &[]);
    rc.max_queue_bytes = 4 * 1024;
    rc.max_queue_frames = 4;
    let r = w.add_relay(rc);
    w.connect_bytes(&[(a, r), (b, r)]);
    let to_c = w.connect(c, r, LinkKind::ByteStream, byte_link());
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r) == 3));
    let c_link = w.link_id(to_c, r);
    w.relay_mut(r).handle_link_blocked(c_link);
    for peer in ["b", "c"] {
        w.route(a, peer, "relay");
    }
    let msgs = messages(15, 400, 4000);
    for m in &msgs {
        w.send(a, "b", 1, m.clone());
        w.send(a, "c", 1, m.clone());
    }
    let mut max_depth = 0;
    assert!(w.run_until(Duration::from_secs(30), |w| {
        let depth = w
            .relay(r)
            .link_metrics()
            .iter()
            .map(|l| l.queued_bytes)
            .max()
            .unwrap_or(0);
        max_depth = max_depth.max(depth);
        w.got(b, "a", 1).len() >= msgs.len()
    }));
    assert_eq!(
        w.got(b, "a", 1),
        &msgs[..],
        "b got everything while c was stuck"
    );
    assert!(w.got(c, "a", 1).is_empty());
    assert!(max_depth <= 4 * 1024, "queue depth {max_depth}");
    let m = w.relay(r).metrics();
    assert!(m.drops(DropReason::QueueFull) > 0, "{m:?}");
    let c_metrics = w
        .relay(r)
        .link_metrics()
        .into_iter()
        .find(|l| l.link == c_link)
        .expect("c's link");
    assert!(c_metrics.blocked && c_metrics.queued_frames <= 4);
    // c's own overflow was dropped (bursts from a may also overflow b's small queue: the
    // sessions recover those).
    assert!(c_metrics.dropped_queue_full > 0);
    assert!(c_metrics.dropped_queue_full <= m.drops(DropReason::QueueFull));
    // Once c's link drains, the sessions recover what the relay dropped.
    w.relay_mut(r).handle_link_writable(c_link);
    assert!(
        w.run_until_got(c, "a", 1, msgs.len(), Duration::from_secs(120)),
        "c got {}",
        w.got(c, "a", 1).len()
    );
    assert_eq!(w.got(c, "a", 1), &msgs);
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[test]
fn the_relay_never_acknowledges_stream_data() {
    let (mut w, a, b, r) = star(16, 0.02);
    w.route(a, "b", "relay");
    let msgs = messages(16, 100, 2000);
    w.send_all(a, "b", 1, &msgs);
    assert!(w.run_until_got(b, "a", 1, msgs.len(), Duration::from_secs(30)));
    let acked = w.run_until(Duration::from_secs(10), |w| match &w.actors[a] {
        Actor::Node(n) => n.session("b").is_some_and(|s| s.is_stream_acknowledged(1)),
        Actor::Relay(_) => false,
    });
    assert!(acked, "b's acknowledgements reached a");
    // Every ack a received came from b (forwarded), none from the relay.
    let acks: Vec<_> = w.seen[a]
        .iter()
        .filter(|s| matches!(s.body, Some(Body::Acknowledge(_))))
        .collect();
    assert!(!acks.is_empty());
    assert!(
        acks.iter()
            .all(|s| s.head.source == "b" && s.head.hop_count == 1)
    );
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    // Until b acknowledged, a's data stayed unacknowledged: the relay has no session.
    assert!(w.relay(r).node().session("a").is_none());
    assert!(
        !w.events[a]
            .iter()
            .any(|e| matches!(e, NodeEvent::Undeliverable { .. }))
    );
}

#[test]
fn a_session_mixes_relayed_and_direct_paths_and_survives_losing_the_direct_one() {
    for_each_seed(3, |seed| {
        let (mut w, a, b, r) = star(seed, 0.02);
        w.route(a, "b", "relay");
        let msgs = messages(seed, 400, 3000);
        w.send_all(a, "b", 1, &msgs[..50]);
        assert!(w.run_until_got(b, "a", 1, 50, Duration::from_secs(20)));
        // Before any direct link, the relayed handshake told the peer's incarnation.
        let b_incarnation = w.node(b).incarnation();
        assert_eq!(w.node(a).peer_incarnation("b"), Some(b_incarnation));
        // A direct link joins the same session: no restart is reported.
        let direct = w.connect(a, b, LinkKind::ByteStream, byte_link().with_rate(1_000_000));
        assert!(w.run_until(Duration::from_secs(5), |w| w.links_up(a) == 2
            && w.links_up(b) == 2));
        assert_eq!(w.node(a).peer_incarnation("b"), Some(b_incarnation));
        assert_eq!(w.node(a).session("b").expect("session").paths().count(), 2);
        w.send_all(a, "b", 1, &msgs[50..]);
        w.run_until_got(b, "a", 1, 100, Duration::from_secs(20));
        assert!(
            w.got(b, "a", 1).len() < msgs.len(),
            "seed {seed}: already over"
        );
        w.kill_link(direct);
        assert!(
            w.run_until_got(b, "a", 1, msgs.len(), Duration::from_secs(60)),
            "seed {seed}: got {}",
            w.got(b, "a", 1).len()
        );
        assert_eq!(
            w.got(b, "a", 1),
            &msgs[..],
            "seed {seed}: exactly once, in order"
        );
        assert!(
            !w.events[a].iter().any(|e| matches!(
                e,
                NodeEvent::Undeliverable { .. } | NodeEvent::PeerDown { .. }
            )),
            "seed {seed}"
        );
        // The relay link outlived the direct one and still serves the session.
        assert_eq!(w.node(a).peer_links("b").len(), 1);
        assert!(w.relay(r).metrics().frames_forwarded > 0);
    });
}

#[test]
fn a_peer_announcing_relay_that_is_not_trusted_is_an_ordinary_peer() {
    let mut w = World::new(17);
    // "a" does not list "relay" among its relays.
    let a = w.add_node(node_config("a", &[]));
    let r = w.add_relay(relay_config("relay", &[]));
    w.connect(a, r, LinkKind::ByteStream, byte_link());
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(a) == 1));
    assert!(
        w.node(a).session("relay").is_some(),
        "a session, as with any peer"
    );
    let now = w.clock.now();
    let route = w.node(a).route_via_relay(now, "b", "relay");
    assert!(matches!(route, Err(atbus_node::NodeError::NotARelay(_))));
    // Its session frames are addressed to the relay itself: dropped, never answered.
    w.send(a, "relay", 1, Bytes::from_static(b"hello relay"));
    w.run_for(Duration::from_secs(1));
    assert!(w.relay(r).metrics().drops(DropReason::ToRelay) >= 1);
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[test]
fn when_the_relay_link_closes_the_relayed_sessions_wait_and_resume_on_a_new_one() {
    let (mut w, a, b, r) = star(18, 0.0);
    w.route(a, "b", "relay");
    let msgs = messages(18, 200, 2000);
    w.send_all(a, "b", 1, &msgs[..100]);
    assert!(w.run_until_got(b, "a", 1, 100, Duration::from_secs(20)));
    w.kill_link(0);
    w.run_for(Duration::from_millis(100));
    assert!(
        w.events[a]
            .iter()
            .any(|e| matches!(e, NodeEvent::PeerDown { peer } if peer == "b"))
    );
    w.send_all(a, "b", 1, &msgs[100..]);
    // A new link to the relay: the route gives the session its path back.
    w.connect(a, r, LinkKind::Datagram, lossy_link(0.0));
    assert!(
        w.run_until_got(b, "a", 1, msgs.len(), Duration::from_secs(30)),
        "got {}",
        w.got(b, "a", 1).len()
    );
    assert_eq!(w.got(b, "a", 1), &msgs);
}

#[test]
fn relay_links_stay_up_while_idle_and_close_when_the_peer_falls_silent() {
    let (mut w, a, _b, r) = star(19, 0.0);
    // No traffic for a while: link keepalives hold both relay links up.
    w.run_for(Duration::from_secs(40));
    assert!(
        !w.events[a]
            .iter()
            .any(|e| matches!(e, NodeEvent::LinkClosed { .. }))
    );
    assert_eq!(w.relay(r).link_metrics().len(), 2);
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    // The datagram link to a goes dark without either side being told.
    w.links[0].net.set_up(false);
    // The harness's idle timeout is 30 s.
    w.run_for(Duration::from_secs(35));
    let closed = w.events[a].iter().find_map(|e| match e {
        NodeEvent::LinkClosed { peer, reason, .. } if peer == "relay" => reason.clone(),
        _ => None,
    });
    assert_eq!(
        closed.map(|r| r.code),
        Some(AtbusCloseReason::IdleTimeout),
        "a closed its silent relay link"
    );
    assert!(w.relay_events[r].iter().any(|e| matches!(
        e,
        atbus_relay::RelayEvent::LinkDown { peer, .. } if peer == "a"
    )));
    assert_eq!(w.relay(r).link_metrics().len(), 1, "only b's link is left");
}

#[test]
fn a_package_over_the_destinations_limit_is_dropped_not_delivered_to_close_its_link() {
    let mut w = World::new(20);
    let mut ca = node_config("a", &["relay"]);
    ca.relayed_path_mtu = 16 * 1024;
    let a = w.add_node(ca);
    let mut cb = node_config("b", &["relay"]);
    cb.limits.max_frame_length = 2000;
    let b = w.add_node(cb);
    let r = w.add_relay(relay_config("relay", &[]));
    w.connect_bytes(&[(a, r), (b, r)]);
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r) == 2));
    w.route(a, "b", "relay");
    // Small messages fit b's limit; a large one is cut into packages b would refuse.
    w.send(a, "b", 1, Bytes::from_static(b"small"));
    w.send(a, "b", 2, Bytes::from(vec![7u8; 12_000]));
    w.run_for(Duration::from_secs(3));
    assert_eq!(w.got(b, "a", 1).len(), 1);
    assert!(w.got(b, "a", 2).is_empty());
    assert!(w.relay(r).metrics().drops(DropReason::TooLarge) >= 1);
    assert!(
        !w.events[b]
            .iter()
            .any(|e| matches!(e, NodeEvent::LinkClosed { .. })),
        "b's relay link stays up"
    );
}

#[test]
fn routes_learned_from_discovery_records_reach_a_node_behind_another_relay() {
    use atbus_discovery::{NodeRecord, RelayRef};
    let mut w = World::new(21);
    let a = w.add_node(node_config("a", &["r1"]));
    let b = w.add_node(node_config("b", &["r2"]));
    let r1 = w.add_relay(relay_config("r1", &["r2"]));
    let r2 = w.add_relay(relay_config("r2", &["r1"]));
    w.connect_bytes(&[(a, r1), (r1, r2), (b, r2)]);
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r1) == 2
        && w.links_up(r2) == 2));
    let advertising = |name: &str, relay: &str| {
        let mut r = NodeRecord::new(name);
        r.advertise_relay = Some(RelayRef {
            name: Some(relay.into()),
            metadata: None,
        });
        r
    };
    let records = [advertising("a", "r1"), advertising("b", "r2")];
    for r in [r1, r2] {
        w.relay_mut(r).set_discovered_routes(&records);
    }
    assert_eq!(w.relay(r1).route_of("b"), Some("r2"));
    assert_eq!(w.relay(r1).route_of("a"), None, "a advertises r1 itself");
    assert_eq!(w.relay(r2).route_of("a"), Some("r1"));
    w.route(a, "b", "r1");
    w.send(a, "b", 1, Bytes::from_static(b"found through discovery"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.got(b, "a", 1).is_empty()));
    // An explicit route wins over a discovered one; records that vanish take their routes.
    w.relay_mut(r1).set_route("b", "elsewhere");
    assert_eq!(w.relay(r1).route_of("b"), Some("elsewhere"));
    w.relay_mut(r1).remove_route("b");
    w.relay_mut(r1).set_discovered_routes(&[]);
    // What is left is the route learned from b's answers (its end-to-end handshake reply).
    assert_eq!(w.relay(r1).learned_route("b"), Some("r2"));
    assert_eq!(w.relay(r1).route_of("b"), Some("r2"));
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[test]
fn a_relay_reference_by_metadata_only_is_resolved_among_the_relay_records() {
    use atbus_discovery::{
        Discovery, DiscoveryEvent, MemoryRegistry, MetadataMatch, NodeRecord, RelayRef, Selector,
    };
    let mut w = World::new(24);
    let a = w.add_node(node_config("a", &["r1"]));
    let b = w.add_node(node_config("b", &["r2"]));
    let r1 = w.add_relay(relay_config("r1", &["r2"]));
    let r2 = w.add_relay(relay_config("r2", &["r1"]));
    w.connect_bytes(&[(a, r1), (r1, r2), (b, r2)]);
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r1) == 2
        && w.links_up(r2) == 2));
    // The records go through the discovery API's in-memory backend, as the service's watch
    // would deliver them: b names its relay only by the relay's namespace.
    let relay_record = |name: &str, ns: &str| {
        let mut r = NodeRecord::new(name);
        r.metadata.kind = atbus_relay::RELAY_KIND.into();
        r.metadata.namespace_name = ns.into();
        r
    };
    let mut b_record = NodeRecord::new("b");
    b_record.advertise_relay = Some(RelayRef {
        name: None,
        metadata: Some(MetadataMatch {
            namespace_name: Some("ns2".into()),
            ..MetadataMatch::default()
        }),
    });
    // A non-relay record in ns2 sorts first by name and must not be chosen.
    let mut impostor = NodeRecord::new("a-node-in-ns2");
    impostor.metadata.namespace_name = "ns2".into();
    let registry = MemoryRegistry::new();
    for r in [
        relay_record("r1", "ns1"),
        relay_record("r2", "ns2"),
        impostor,
        b_record,
    ] {
        registry.put(r).expect("a valid record");
    }
    let mut handle = registry.handle();
    let request = Discovery::list(&mut handle, &Selector::everything());
    let records = std::iter::from_fn(|| handle.poll_event())
        .find_map(|e| match e {
            DiscoveryEvent::List {
                request: r,
                records,
            } if r == request => Some(records),
            _ => None,
        })
        .expect("the list answer");
    w.relay_mut(r1).set_discovered_routes(&records);
    assert_eq!(w.relay(r1).route_of("b"), Some("r2"));
    assert_eq!(w.relay(r1).route_of("a-node-in-ns2"), None);
    // r2 is b's relay itself: b links there, no route.
    w.relay_mut(r2).set_discovered_routes(&records);
    assert_eq!(w.relay(r2).route_of("b"), None);
    w.route(a, "b", "r1");
    w.send(a, "b", 1, Bytes::from_static(b"found by metadata"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.got(b, "a", 1).is_empty()));
    // A reference no relay record matches gives no route.
    let mut lost = NodeRecord::new("c");
    lost.advertise_relay = Some(RelayRef {
        name: None,
        metadata: Some(MetadataMatch {
            namespace_name: Some("ns9".into()),
            ..MetadataMatch::default()
        }),
    });
    w.relay_mut(r1).set_discovered_routes([&lost]);
    assert_eq!(w.relay(r1).route_of("c"), None);
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[test]
fn a_relay_shutting_down_tells_every_peer_why() {
    let (mut w, a, b, r) = star(22, 0.0);
    w.route(a, "b", "relay");
    w.send(a, "b", 1, Bytes::from_static(b"before"));
    assert!(w.run_until(Duration::from_secs(5), |w| !w.got(b, "a", 1).is_empty()));
    let now = w.clock.now();
    w.relay_mut(r).shutdown(now);
    w.run_for(Duration::from_millis(200));
    for n in [a, b] {
        let reason = w.events[n].iter().find_map(|e| match e {
            NodeEvent::LinkClosed { peer, reason, .. } if peer == "relay" => reason.clone(),
            _ => None,
        });
        let reason = reason.expect("the relay link closed");
        assert_eq!(reason.code, AtbusCloseReason::Shutdown);
        assert!(reason.by_peer);
    }
    assert!(w.relay(r).link_metrics().is_empty());
}

#[test]
fn a_peer_relay_is_trusted_only_with_a_relay_key_when_relay_keys_are_set() {
    use atbus_node::AccessToken;
    let nodes_key = AccessToken::new("nodes", b"a-secret-all-nodes-hold".to_vec());
    let relays_key = AccessToken::new("relays", b"a-secret-only-relays-hold".to_vec());
    for (r1_key, trusted) in [(nodes_key.clone(), false), (relays_key.clone(), true)] {
        let mut w = World::new(23);
        let mut ca = node_config("a", &["r1"]);
        ca.tokens = vec![nodes_key.clone()];
        let a = w.add_node(ca);
        let mut cb = node_config("b", &["r2"]);
        cb.tokens = vec![nodes_key.clone()];
        let b = w.add_node(cb);
        let mut c1 = relay_config("r1", &["r2"]);
        c1.upstream = Some("r2".into());
        // r1 dials r2 with its first token; it accepts nodes with the shared one.
        c1.node.tokens = if r1_key == nodes_key {
            vec![nodes_key.clone()]
        } else {
            vec![r1_key.clone(), nodes_key.clone()]
        };
        let r1 = w.add_relay(c1);
        let mut c2 = relay_config("r2", &["r1"]);
        c2.relay_key_ids = vec!["relays".into()];
        c2.node.tokens = vec![nodes_key.clone(), relays_key.clone()];
        let r2 = w.add_relay(c2);
        w.connect_bytes(&[(a, r1), (r1, r2), (b, r2)]);
        assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r1) == 2
            && w.links_up(r2) == 2));
        let r1_trusted_at_r2 = w
            .relay(r2)
            .link_metrics()
            .iter()
            .any(|l| l.peer == "r1" && l.relay);
        assert_eq!(r1_trusted_at_r2, trusted);
        w.route(a, "b", "r1");
        w.send(a, "b", 1, Bytes::from_static(b"through two relays"));
        let delivered = w.run_until(Duration::from_secs(3), |w| !w.got(b, "a", 1).is_empty());
        assert_eq!(delivered, trusted, "key {}", r1_key.key_id());
        if !trusted {
            // Untrusted, r1 is a plain node to r2: frames it forwards for a carry a's name.
            assert!(w.relay(r2).metrics().drops(DropReason::ForgedSource) >= 1);
        }
    }
}
