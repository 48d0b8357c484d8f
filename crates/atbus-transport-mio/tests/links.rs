//! Listening, connecting, failures, URLs, the cross-thread handle and UDP peers.

mod common;

use std::collections::HashSet;
use std::io;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use atbus_transport_mio::{
    CloseReason, Direction, LinkId, LinkKind, SendStatus, Transport, TransportConfig,
    TransportError, TransportEvent, Url, UrlError,
};
use common::drive;

fn url(s: &str) -> Url {
    s.parse().expect("url")
}

fn wait_closed(t: &mut Transport, link: LinkId) -> CloseReason {
    let mut reason = None;
    drive(t, "LinkClosed", |_, evs| {
        for e in evs {
            match e {
                TransportEvent::LinkClosed { link: l, reason: r } if l == link => reason = Some(r),
                TransportEvent::LinkUp { link: l, .. } if l == link => {
                    panic!("{link} came up unexpectedly")
                }
                _ => {}
            }
        }
        reason.is_some()
    });
    reason.expect("reason")
}

#[test]
fn listen_on_port_zero_returns_bound_port() {
    let mut t = Transport::new(TransportConfig::default()).expect("transport");
    for s in ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"] {
        let (_id, bound) = t.listen(&url(s)).expect("listen");
        assert_eq!(bound.scheme(), url(s).scheme());
        assert_ne!(bound.port(), Some(0), "{s} bound to {bound}");
        assert!(bound.ip_socket_addr().is_some());
    }
}

#[test]
fn connect_to_closed_port_reports_connect_failed() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut t = Transport::new(TransportConfig::default()).expect("transport");
    let link = t
        .connect(&url(&format!("tcp://127.0.0.1:{port}")))
        .expect("connect");
    match wait_closed(&mut t, link) {
        CloseReason::ConnectFailed(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    assert!(matches!(
        t.send(link, b"x"),
        Err(TransportError::UnknownLink(_))
    ));
}

#[test]
fn connect_to_missing_unix_and_mem_endpoints_reports_connect_failed() {
    let mut t = Transport::new(TransportConfig::default()).expect("transport");
    let missing =
        std::env::temp_dir().join(format!("atbus-mio-missing-{}.sock", std::process::id()));
    for u in [
        format!("unix://{}", missing.display()),
        "mem://nobody-here".into(),
    ] {
        let link = t.connect(&url(&u)).expect("connect");
        let reason = wait_closed(&mut t, link);
        assert!(
            matches!(reason, CloseReason::ConnectFailed(_)),
            "{u}: {reason:?}"
        );
    }
}

#[test]
fn host_names_resolve_off_the_loop() {
    let mut t = Transport::new(TransportConfig::default()).expect("transport");
    let (_l, bound) = t.listen(&url("tcp://127.0.0.1:0")).expect("listen");
    let port = bound.port().expect("port");
    let link = t
        .connect(&url(&format!("tcp://localhost:{port}")))
        .expect("connect");
    assert!(matches!(
        t.send(link, b"x"),
        Err(TransportError::NotConnected(_))
    ));
    let mut up = false;
    drive(&mut t, "LinkUp via localhost", |_, evs| {
        for e in evs {
            match e {
                TransportEvent::LinkUp {
                    link: l, direction, ..
                } if l == link => {
                    assert_eq!(direction, Direction::Outbound);
                    up = true;
                }
                TransportEvent::LinkClosed { link: l, reason } if l == link => {
                    panic!("localhost connect failed: {reason:?}")
                }
                _ => {}
            }
        }
        up
    });
    // An unresolvable name fails as a connect failure, not a call error.
    let bad = t
        .connect(&url("tcp://no-such-host.invalid:1"))
        .expect("connect");
    assert!(matches!(
        wait_closed(&mut t, bad),
        CloseReason::ConnectFailed(_)
    ));
}

#[test]
fn garbage_urls_give_typed_errors() {
    assert!(matches!(
        "localhost:80".parse::<Url>(),
        Err(UrlError::MissingScheme(_))
    ));
    assert!(matches!(
        "ftp://a:1".parse::<Url>(),
        Err(UrlError::UnsupportedScheme(_))
    ));
    assert!(matches!(
        "tcp://a".parse::<Url>(),
        Err(UrlError::MissingPort(_))
    ));
    assert!(matches!(
        "udp://a:port".parse::<Url>(),
        Err(UrlError::InvalidPort(_))
    ));
    assert!(matches!(
        "tcp://a b:1".parse::<Url>(),
        Err(UrlError::InvalidHost(_))
    ));
    assert!(matches!(
        "unix://".parse::<Url>(),
        Err(UrlError::EmptyPath(_))
    ));
    assert!(matches!(
        "mem://".parse::<Url>(),
        Err(UrlError::InvalidName(_))
    ));
    let err: TransportError = "tcp://[::1".parse::<Url>().unwrap_err().into();
    assert!(matches!(err, TransportError::Url(UrlError::InvalidHost(_))));
}

#[test]
fn mem_name_taken_twice_is_a_listen_error() {
    let mut t = Transport::new(TransportConfig::default()).expect("transport");
    t.listen(&url("mem://taken")).expect("first listen");
    let err = t.listen(&url("mem://taken")).unwrap_err();
    assert!(
        matches!(err, TransportError::Listen { ref source, .. } if source.kind() == io::ErrorKind::AddrInUse)
    );
}

#[test]
fn handle_wakes_the_loop_and_runs_commands() {
    let mut t = Transport::new(TransportConfig::default()).expect("transport");
    let handle = t.handle();
    let (tx, rx) = mpsc::channel();
    let poster = thread::spawn(move || {
        handle
            .post(move |t: &mut Transport| {
                let bound = t
                    .listen(&"mem://from-handle".parse().expect("url"))
                    .map(|(_, u)| u);
                tx.send(bound.is_ok()).expect("report");
            })
            .expect("post");
    });
    let mut events = Vec::new();
    // A blocking poll (no timeout of ours that could end it) must return because of the wake.
    while !events.iter().any(|e| matches!(e, TransportEvent::Woken)) {
        t.poll_events(Some(common::TIMEOUT), &mut events)
            .expect("poll");
    }
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)),
        Ok(true),
        "command did not run"
    );
    poster.join().expect("poster");

    let handle = t.handle();
    handle.wake().expect("wake");
    events.clear();
    t.poll_events(Some(common::TIMEOUT), &mut events)
        .expect("poll");
    assert!(events.iter().any(|e| matches!(e, TransportEvent::Woken)));
    drop(t);
    assert!(matches!(handle.wake(), Err(TransportError::Gone)));
}

#[test]
fn mem_links_across_transports_on_threads_and_peer_drop() {
    let mut server = Transport::new(TransportConfig::default()).expect("server");
    let (_l, bound) = server.listen(&url("mem://cross-thread")).expect("listen");
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let server_thread = thread::spawn(move || {
        let mut events = Vec::new();
        while stop_rx.try_recv().is_err() {
            server
                .poll_events(Some(Duration::from_millis(20)), &mut events)
                .expect("poll");
            for e in events.drain(..) {
                if let TransportEvent::Datagram { link, data } = e {
                    assert_eq!(server.send(link, &data).expect("echo"), SendStatus::Sent);
                }
            }
        }
        // Dropping the server transport closes its links.
    });
    let mut t = Transport::new(TransportConfig::default()).expect("client");
    let link = t.connect(&bound).expect("connect");
    let mut got = 0u32;
    drive(&mut t, "mem echoes across threads", |t, evs| {
        for e in evs {
            match e {
                TransportEvent::LinkUp { link: l, kind, .. } if l == link => {
                    assert_eq!(kind, LinkKind::InProcess);
                    for i in 0..100u32 {
                        t.send(link, &i.to_le_bytes()).expect("send");
                    }
                }
                TransportEvent::Datagram { link: l, data } if l == link => {
                    assert_eq!(data[..], got.to_le_bytes());
                    got += 1;
                }
                _ => {}
            }
        }
        got == 100
    });
    stop_tx.send(()).expect("stop");
    server_thread.join().expect("server thread");
    assert!(matches!(wait_closed(&mut t, link), CloseReason::PeerClosed));
}

#[test]
fn udp_peers_become_separate_links_up_to_the_limit() {
    let max_peers = 3;
    let mut t = Transport::new(TransportConfig {
        udp_max_peers: max_peers,
        ..Default::default()
    })
    .expect("transport");
    let (listener, bound) = t.listen(&url("udp://127.0.0.1:0")).expect("listen");
    let clients: Vec<LinkId> = (0..5)
        .map(|_| t.connect(&bound).expect("connect"))
        .collect();
    let mut sent = false;
    let mut server_links: Vec<LinkId> = Vec::new();
    let mut peers = HashSet::new();
    let mut answered = HashSet::new();
    drive(
        &mut t,
        "peer limit reached and admitted peers answered",
        |t, evs| {
            for e in evs {
                match e {
                    TransportEvent::LinkUp {
                        link,
                        direction: Direction::Inbound,
                        peer,
                        kind,
                        ..
                    } => {
                        assert_eq!(kind, LinkKind::Datagram);
                        assert!(peers.insert(peer), "two links for one peer address");
                        server_links.push(link);
                    }
                    TransportEvent::Datagram { link, data } if server_links.contains(&link) => {
                        t.send(link, &data).expect("reply");
                    }
                    TransportEvent::Datagram { link, data } => {
                        let i = clients.iter().position(|c| *c == link).expect("a client");
                        assert_eq!(data[..], [i as u8]);
                        answered.insert(i);
                    }
                    _ => {}
                }
            }
            if !sent && clients.iter().all(|c| t.link_stats(*c).is_some()) {
                for (i, c) in clients.iter().enumerate() {
                    assert_eq!(t.send(*c, &[i as u8]).expect("send"), SendStatus::Sent);
                }
                sent = true;
            }
            let stats = t.listener_stats(listener).expect("stats");
            stats.udp_peer_limit_drops >= 2 && answered.len() == max_peers
        },
    );
    let stats = t.listener_stats(listener).expect("stats");
    assert_eq!(server_links.len(), max_peers);
    assert_eq!(stats.udp_peers, max_peers);
    assert_eq!(stats.accepted, max_peers as u64);
    // Closing a served peer frees a slot.
    t.close(server_links[0]).expect("close");
    assert_eq!(
        t.listener_stats(listener).expect("stats").udp_peers,
        max_peers - 1
    );
}

#[test]
fn shutdown_closes_everything() {
    let mut t = Transport::new(TransportConfig::default()).expect("transport");
    let (_l, bound) = t.listen(&url("tcp://127.0.0.1:0")).expect("listen");
    let client = t.connect(&bound).expect("connect");
    let mut ups = 0;
    drive(&mut t, "both ends up", |_, evs| {
        ups += evs
            .iter()
            .filter(|e| matches!(e, TransportEvent::LinkUp { .. }))
            .count();
        ups == 2
    });
    t.send(client, &[7u8; 100_000]).expect("send");
    let mut events = Vec::new();
    t.shutdown(Duration::from_secs(10), &mut events)
        .expect("shutdown");
    let closed = events
        .iter()
        .filter(|e| matches!(e, TransportEvent::LinkClosed { .. }))
        .count();
    assert_eq!(closed, 2, "{events:?}");
    assert_eq!(t.link_count(), 0);
}
