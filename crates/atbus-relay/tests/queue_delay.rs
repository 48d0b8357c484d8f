//! The per-destination queue delay of the relay core, in virtual time over `atbus-netsim`
//! links: the time a frame waits in the relay (queued → handed to the driver) is recorded in the
//! series of its destination link, a blocked destination shows its wait without delaying the
//! others, and the number of series stays bounded.

mod common;

use std::time::Duration;

use atbus_node::LinkKind;
use atbus_relay::{DelayHistogram, OTHER_DESTINATIONS, QUEUE_DELAY_BOUNDS};
use common::{World, byte_link, messages, node_config, relay_config};

fn series(w: &World, r: usize, destination: &str) -> Option<DelayHistogram> {
    w.relay(r)
        .queue_delays()
        .series()
        .into_iter()
        .find_map(|(d, h)| (d == destination).then_some(h))
}

/// Frames that waited longer than `seconds` (cumulative count above that bound).
fn slower_than(h: &DelayHistogram, seconds: f64) -> u64 {
    let i = QUEUE_DELAY_BOUNDS
        .iter()
        .position(|&b| b == seconds)
        .expect("a bucket bound");
    h.count - h.cumulative()[i]
}

#[test]
fn a_blocked_destination_shows_its_wait_and_delays_no_other() {
    let mut w = World::new(31);
    let a = w.add_node(node_config("a", &["relay"]));
    let b = w.add_node(node_config("b", &["relay"]));
    let c = w.add_node(node_config("c", &["relay"]));
    let r = w.add_relay(relay_config("relay", &[]));
    w.connect(a, r, LinkKind::ByteStream, byte_link());
    w.connect(b, r, LinkKind::ByteStream, byte_link());
    let to_c = w.connect(c, r, LinkKind::ByteStream, byte_link());
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r) == 3));
    let c_link = w.link_id(to_c, r);
    w.route(a, "b", "relay");
    w.route(a, "c", "relay");
    let msgs = messages(31, 50, 500);
    // c's socket pushes back for 300 ms while a sends to both.
    w.relay_mut(r).handle_link_blocked(c_link);
    for m in &msgs {
        w.send(a, "b", 1, m.clone());
        w.send(a, "c", 1, m.clone());
    }
    w.run_for(Duration::from_millis(300));
    w.relay_mut(r).handle_link_writable(c_link);
    assert!(w.run_until(Duration::from_secs(30), |w| {
        w.got(b, "a", 1).len() >= msgs.len() && w.got(c, "a", 1).len() >= msgs.len()
    }));
    assert_eq!(w.got(c, "a", 1), &msgs[..]);

    let to_c = series(&w, r, "c").expect("c has a series");
    let to_b = series(&w, r, "b").expect("b has a series");
    let to_a = series(&w, r, "a").expect("a has a series (acknowledgements)");
    assert!(to_c.count > 0 && to_b.count > 0 && to_a.count > 0);
    // The frames queued while c was blocked waited about 300 ms.
    assert!(slower_than(&to_c, 0.25) > 0, "{to_c:?}");
    assert!(to_c.sum_ns >= 250_000_000, "{to_c:?}");
    // In virtual time the relay writes what it queued at the same instant: b never waited.
    assert_eq!(slower_than(&to_b, 0.000_01), 0, "{to_b:?}");
    // Every frame forwarded is in exactly one series.
    let m = w.relay(r).metrics();
    assert_eq!(w.relay(r).queue_delays().total(), m.frames_forwarded);
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[test]
fn series_stay_bounded_with_many_destinations() {
    let mut w = World::new(32);
    let mut rc = relay_config("relay", &[]);
    rc.queue_delay_destinations = 2;
    let r = w.add_relay(rc);
    let a = w.add_node(node_config("a", &["relay"]));
    w.connect(a, r, LinkKind::ByteStream, byte_link());
    let names: Vec<String> = (0..6).map(|i| format!("d{i}")).collect();
    let mut dests = Vec::new();
    for name in &names {
        let d = w.add_node(node_config(name, &["relay"]));
        w.connect(d, r, LinkKind::ByteStream, byte_link());
        dests.push(d);
    }
    assert!(w.run_until(Duration::from_secs(2), |w| w.links_up(r) == 7));
    let msgs = messages(32, 20, 300);
    for name in &names {
        w.route(a, name, "relay");
        for m in &msgs {
            w.send(a, name, 1, m.clone());
        }
    }
    assert!(w.run_until(Duration::from_secs(30), |w| {
        dests.iter().all(|&d| w.got(d, "a", 1).len() >= msgs.len())
    }));
    let all = w.relay(r).queue_delays().series();
    assert!(all.len() <= 3, "{} series", all.len());
    assert_eq!(
        all.last().map(|(n, _)| n.as_str()),
        Some(OTHER_DESTINATIONS)
    );
    let other = &all.last().expect("other").1;
    assert!(other.count > 0, "destinations past the limit share other");
    let m = w.relay(r).metrics();
    let total: u64 = all.iter().map(|(_, h)| h.count).sum();
    assert_eq!(total, m.frames_forwarded);
}
