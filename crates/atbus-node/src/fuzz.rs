//! Fuzz body: arbitrary bytes, datagrams and frames fed to a node's links.

use std::time::{Duration, Instant};

use atbus_frame::FrameLimits;
use bytes::Bytes;

use crate::{AccessToken, AnonymousPolicy, AuthMode, Direction, LinkKind, Node, NodeConfig};

/// Signing key of the fuzz node's token key ring (key id `k1`), so seeds can carry valid
/// signed tokens.
pub const FUZZ_TOKEN_SECRET: &[u8] = b"fuzz-token-signing-secret-012345";
/// Wall clock of the fuzz node at start, Unix milliseconds.
pub const FUZZ_UNIX_MS: i64 = 1_800_000_000_000;

/// A deterministic RNG for the fuzz body (not for production use).
struct FuzzRng(u64);

impl rand_core::RngCore for FuzzRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl rand_core::CryptoRng for FuzzRng {}

/// Feeds `data` to a node as a script of link operations and checks it never panics, never
/// sends a datagram over its link's MTU and keeps its handshakes bounded.
///
/// Script: each operation is one byte `op` then, for data operations, a length byte and that
/// many bytes. `op % 8`: 0 raw bytes on a byte-stream link; 1 a datagram; 2 the bytes wrapped as
/// a valid package (so they reach the frame router) on a byte-stream link; 3 the same on a
/// datagram link; 4 a new link (direction and kind from `op`); 5 close a link; 6 advance time;
/// 7 drain outputs, or with bit 7 of `op` set: bit 3 clear, the newest datagram link's source
/// address is reported ([`Node::handle_link_source`]): IPv4 from the first four data bytes,
/// port from the next two (defaults for missing bytes); bit 3 set, the data is a
/// `frame_message` whose handshake gets the cookie of the node's latest `handshake_retry` and
/// goes as a package on the newest datagram link. The first byte configures the node: bit 0
/// a pre-shared token `k1`, bit 1 a token key ring (`k1`, [`FUZZ_TOKEN_SECRET`]), `auth 0rtt`
/// and anonymous peers; bit 2 the node is under load from the second handshake on
/// (`cookie_threshold` 1, two handshakes per source); bit 3 loopback sources are counted
/// (`limit_loopback`). Its wall clock starts at [`FUZZ_UNIX_MS`] and advances with time.
pub fn fuzz_handshake(data: &[u8]) {
    fuzz_handshake_stats(data);
}

/// As [`fuzz_handshake`]; returns the node's [`Node::cookie_stats`] at the end (retries sent,
/// hellos admitted with a valid cookie), so seeds can show they reach the cookie path.
pub fn fuzz_handshake_stats(data: &[u8]) -> (u64, u64) {
    let start = Instant::now();
    let mut now = start;
    let mut config = NodeConfig::new("fuzz-node");
    if data.first().is_some_and(|b| b & 1 == 1) {
        config.tokens = vec![AccessToken::new("k1", *b"0123456789abcdef")];
    }
    if data.first().is_some_and(|b| b & 2 == 2) {
        let mut ring = atbus_auth::TokenKeyring::new();
        if let Ok(key) = atbus_auth::TokenKey::new("k1", FUZZ_TOKEN_SECRET.to_vec()) {
            let _ = ring.insert(key);
        }
        config.token_keyring = Some(ring);
        config.auth = Some(AuthMode::ZeroRtt);
        config.anonymous = Some(AnonymousPolicy::default());
        config.anti_replay.window_ms = 1000;
    }
    if data.first().is_some_and(|b| b & 4 == 4) {
        config.limits.cookie_threshold = 1;
        config.limits.max_handshakes_per_source = 2;
    }
    config.limits.limit_loopback = data.first().is_some_and(|b| b & 8 == 8);
    config.limits.max_handshakes_in_flight = 4;
    let Ok(mut node) = Node::new(config, now, FuzzRng(7)) else {
        return (0, 0);
    };
    node.set_unix_time(FUZZ_UNIX_MS);
    let mut links = vec![(node.new_link_id(), LinkKind::ByteStream, 1 << 16)];
    node.handle_link_up(
        now,
        links[0].0,
        LinkKind::ByteStream,
        1 << 16,
        Direction::Inbound,
    );
    let dg = node.new_link_id();
    node.handle_link_up(now, dg, LinkKind::Datagram, 548, Direction::Inbound);
    links.push((dg, LinkKind::Datagram, 548));
    let mut buf = Vec::new();
    // The cookie of the latest handshake_retry the node sent.
    let mut cookie = Bytes::new();
    let mut i = 1;
    while i < data.len() {
        let op = data[i];
        i += 1;
        let pick = |want: LinkKind| links.iter().rev().find(|l| l.1 == want).map(|l| l.0);
        let mut take = || {
            let len = data.get(i).copied().unwrap_or(0) as usize;
            let end = (i + 1 + len).min(data.len());
            let chunk = data.get(i + 1..end).unwrap_or(&[]);
            i = end;
            chunk
        };
        match op % 8 {
            0 => {
                let chunk = take();
                if let Some(l) = pick(LinkKind::ByteStream) {
                    node.handle_link_bytes(now, l, chunk);
                }
            }
            1 => {
                let chunk = Bytes::copy_from_slice(take());
                if let Some(l) = pick(LinkKind::Datagram) {
                    node.handle_datagram(now, l, chunk);
                }
            }
            2 | 3 => {
                let chunk = take();
                let mut package = Vec::new();
                if atbus_frame::encode_raw(chunk, &FrameLimits::default(), &mut package).is_ok() {
                    if op % 8 == 2 {
                        if let Some(l) = pick(LinkKind::ByteStream) {
                            node.handle_link_bytes(now, l, &package);
                        }
                    } else if let Some(l) = pick(LinkKind::Datagram) {
                        node.handle_datagram(now, l, package.into());
                    }
                }
            }
            4 => {
                let id = node.new_link_id();
                let kind = if op & 0x10 == 0 {
                    LinkKind::ByteStream
                } else {
                    LinkKind::Datagram
                };
                let dir = if op & 0x20 == 0 {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                let mtu = if kind == LinkKind::Datagram {
                    548
                } else {
                    1 << 16
                };
                node.handle_link_up(now, id, kind, mtu, dir);
                links.push((id, kind, mtu));
            }
            5 => {
                if let Some(&(l, ..)) = links.get(op as usize / 8 % links.len().max(1)) {
                    node.handle_link_closed(now, l);
                }
            }
            6 => {
                now += Duration::from_millis(u64::from(op) * 40);
                let elapsed = i64::try_from(now.duration_since(start).as_millis()).unwrap_or(0);
                node.handle_timeout(now, FUZZ_UNIX_MS + elapsed);
            }
            _ if op & 0x88 == 0x80 => {
                let chunk = take();
                let byte = |k: usize, d: u8| chunk.get(k).copied().unwrap_or(d);
                let ip =
                    std::net::Ipv4Addr::new(byte(0, 203), byte(1, 0), byte(2, 113), byte(3, 7));
                let port = u16::from_be_bytes([byte(4, 0x0f), byte(5, 0xa0)]);
                if let Some(l) = pick(LinkKind::Datagram) {
                    node.handle_link_source(now, l, &format!("{ip}:{port}"));
                }
            }
            _ if op & 0x88 == 0x88 => {
                let chunk = take();
                if let Some(package) = with_cookie(chunk, &cookie) {
                    if let Some(l) = pick(LinkKind::Datagram) {
                        node.handle_datagram(now, l, package.into());
                    }
                }
            }
            _ => {}
        }
        while let Some((link, size)) = node.poll_transmit(now, &mut buf) {
            assert_eq!(size, buf.len());
            if let Some(&(_, LinkKind::Datagram, mtu)) = links.iter().find(|l| l.0 == link) {
                assert!(size <= mtu, "datagram of {size} bytes over MTU {mtu}");
                if let Some(c) = retry_cookie(&buf) {
                    cookie = c;
                }
            }
        }
        while node.poll_action().is_some() {}
        while node.poll_event().is_some() {}
        let handshaking = links.iter().filter(|l| node.is_handshaking(l.0)).count();
        assert!(handshaking <= 4, "handshakes in flight unbounded");
    }
    node.cookie_stats()
}

/// The cookie of a `handshake_retry` package, if `package` is one.
fn retry_cookie(package: &[u8]) -> Option<Bytes> {
    let bytes = Bytes::copy_from_slice(package);
    let raw = atbus_frame::parse_package(&bytes, &FrameLimits::default()).ok()??;
    match atbus_frame::decode_frame(raw.frame).ok()?.body? {
        atbus_proto::frame_message::Body::Handshake(atbus_proto::HandshakeData {
            step: Some(atbus_proto::handshake_data::Step::Retry(r)),
            ..
        }) => Some(r.cookie),
        _ => None,
    }
}

/// `frame` (an encoded `frame_message` with a handshake body) with `cookie` in its
/// handshake_data, as a whole package.
fn with_cookie(frame: &[u8], cookie: &Bytes) -> Option<Vec<u8>> {
    use prost::Message as _;
    let mut message = atbus_proto::FrameMessage::decode(frame).ok()?;
    let Some(atbus_proto::frame_message::Body::Handshake(h)) = &mut message.body else {
        return None;
    };
    h.cookie = cookie.clone();
    let mut package = Vec::new();
    atbus_frame::encode(&message, &FrameLimits::default(), &mut package).ok()?;
    Some(package)
}
