//! Fuzz bodies of `fuzz/fuzz_targets/auth_token.rs` and `auth_open.rs`, kept here so the corpus replays as an
//! ordinary test on stable Rust.

use crate::early::EarlyProof;
use crate::keyring::{TokenKey, TokenKeyring, VerifyPolicy};
use crate::protect::ContentHeader;
use crate::replay::{AntiReplay, AntiReplayConfig};
use crate::streams::StreamSet;
use crate::token::{self, TokenClaims};

/// Unix time (seconds) the fuzz body verifies at.
pub const FUZZ_NOW: u64 = 1_800_000_000;

/// The key ring of the fuzz body: `k1` and `k2` with fixed secrets, `k1` issuing.
pub fn fuzz_keyring() -> TokenKeyring {
    let mut ring = TokenKeyring::with_policy(VerifyPolicy::default());
    for (id, secret) in [
        ("k1", &b"fuzz-secret-one-0123456789abcdef"[..]),
        ("k2", &b"fuzz-secret-two-0123456789abcdef"[..]),
    ] {
        if let Ok(key) = TokenKey::new(id, secret) {
            let _ = ring.insert(key);
        }
    }
    ring
}

/// Valid claims for seeds: `name` in namespace `ns`, valid around [`FUZZ_NOW`].
pub fn fuzz_claims(name: &str, ns: &str, streams: &str) -> TokenClaims {
    TokenClaims {
        name: name.to_owned(),
        namespace: ns.to_owned(),
        streams: StreamSet::parse(streams).unwrap_or_default(),
        issued_at: FUZZ_NOW - 60,
        expires_at: FUZZ_NOW + 3600,
        nonce: [0x5a; token::TOKEN_NONCE_LEN],
    }
}

/// Input: one mode byte, then the token. Mode bit 0 selects the audience (`""` or `"ns"`),
/// bit 1 the text form instead of the binary one. Checks that nothing panics, that every
/// token that verifies re-encodes to exactly its input (the encoding is canonical), and that
/// decoding and verification agree on malformed input.
pub fn fuzz_auth_token(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let ring = fuzz_keyring();
    let audience = if mode & 1 == 0 { "" } else { "ns" };
    let binary: Option<Vec<u8>> = if mode & 2 == 0 {
        Some(body.to_vec())
    } else {
        let text = String::from_utf8_lossy(body);
        let via_text = ring.verify_text(&text, audience, FUZZ_NOW);
        match token::from_text(&text) {
            Ok(bytes) => {
                assert_eq!(
                    token::to_text(&bytes),
                    text.trim(),
                    "text form is canonical"
                );
                Some(bytes)
            }
            Err(e) => {
                assert_eq!(via_text, Err(e), "text errors agree");
                None
            }
        }
    };
    if let Some(bytes) = binary {
        let verified = ring.verify(&bytes, audience, FUZZ_NOW);
        match token::decode(&bytes) {
            Err(e) => assert_eq!(verified, Err(e), "decode and verify agree"),
            Ok(t) => {
                assert_eq!(t.signed_len + token::TAG_LEN, bytes.len());
                let mut again = Vec::new();
                token::encode_signed(&t.key_id, &t.claims, &mut again);
                assert_eq!(again, bytes[..t.signed_len], "decoding is canonical");
            }
        }
        if let Ok(v) = verified {
            assert!(v.claims.namespace == audience);
            let key = TokenKey::new(
                v.key_id.clone(),
                match v.key_id.as_str() {
                    "k1" => &b"fuzz-secret-one-0123456789abcdef"[..],
                    _ => &b"fuzz-secret-two-0123456789abcdef"[..],
                },
            );
            if let Ok(key) = key {
                if let Ok(issued) = key.issue(&v.claims) {
                    assert_eq!(
                        issued.bytes, bytes,
                        "a verified token re-issues identically"
                    );
                    assert_eq!(issued.holder_secret, v.holder_secret);
                }
            }
            let _ = v.check_name(&v.claims.name.clone());
            let _ = v.check_stream(i64::from(mode));
        }
    }
    // The other parsers of this crate take the same bytes.
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = StreamSet::parse(text);
    }
    if let Ok(p) = EarlyProof::from_bytes(body) {
        let mut guard = AntiReplay::new(AntiReplayConfig::default(), p.unix_ms / 3);
        let _ = guard.check(p.unix_ms.wrapping_add(u64::from(mode)), &p);
    }
}

/// Client-to-server secret of the `auth_open` fuzz body.
pub const FUZZ_C2S_SECRET: [u8; 32] = [0x11; 32];
/// Server-to-client secret of the `auth_open` fuzz body.
pub const FUZZ_S2C_SECRET: [u8; 32] = [0x22; 32];
/// Decompression cap of the `auth_open` fuzz body (small, so bombs are cheap to find).
pub const FUZZ_MAX_DECOMPRESSED: usize = 64 * 1024;
/// Length of the `auth_open` input prefix before the wire content.
pub const FUZZ_OPEN_PREFIX_LEN: usize = 11;

/// A content codec of the fuzz body. `mode` bit 0: compression negotiated; bit 1: AES-256-GCM
/// instead of ChaCha20-Poly1305; bit 2: the codec is the client's (else the server's); bit 3:
/// no encryption.
pub fn fuzz_codec(mode: u8, client: bool) -> crate::content::ContentCodec {
    use crate::protect::{CipherSuite, PacketProtection, Side};
    let suite = if mode & 2 == 0 {
        CipherSuite::ChaCha20Poly1305
    } else {
        CipherSuite::Aes256Gcm
    };
    let side = if client { Side::Client } else { Side::Server };
    let protection = if mode & 8 == 0 {
        PacketProtection::new(suite, side, &FUZZ_C2S_SECRET, &FUZZ_S2C_SECRET).ok()
    } else {
        None
    };
    let compression = (mode & 1 == 1).then_some(crate::compress::CompressionConfig {
        threshold: 16,
        max_decompressed: FUZZ_MAX_DECOMPRESSED,
    });
    crate::content::ContentCodec::new(protection, compression)
}

/// The header of a fuzz input: path id byte, packet number (8 bytes, big-endian, any sign) and
/// flags byte from `prefix`; names and stream fields fixed and chosen by the mode's side.
pub fn fuzz_header(mode: u8, prefix: &[u8; FUZZ_OPEN_PREFIX_LEN - 1]) -> ContentHeader<'static> {
    let (source, destination) = if mode & 4 == 0 {
        ("fuzz-client", "fuzz-server")
    } else {
        ("fuzz-server", "fuzz-client")
    };
    let mut pn = [0u8; 8];
    pn.copy_from_slice(&prefix[1..9]);
    ContentHeader {
        source,
        destination,
        stream_id: 1,
        stream_offset: 4096,
        flags: i32::from(prefix[9]),
        padding_size: 0,
        timepoint_microseconds: 1_800_000_000_000_000,
        packet_number: i64::from_be_bytes(pn),
        path_id: i64::from(prefix[0]),
    }
}

/// Input: mode byte (see [`fuzz_codec`]; the receiving codec is the server's when bit 2 is
/// clear), path id byte, packet number (8 bytes), flags byte, then the wire content. Checks
/// that opening and decompressing never panic and respect the cap, that content which opens
/// re-seals to the same bytes (when not compressed), that the raw bytes decompress within the
/// cap or fail typed, and that the same bytes sent through a sender codec come back intact.
pub fn fuzz_auth_open(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((prefix, wire)) = rest.split_first_chunk::<{ FUZZ_OPEN_PREFIX_LEN - 1 }>() else {
        return;
    };
    let receiver_is_client = mode & 4 != 0;
    let header = fuzz_header(mode, prefix);
    let mut receiver = fuzz_codec(mode, receiver_is_client);
    let mut out = vec![0xee];
    match receiver.decode(&header, wire, &mut out) {
        Ok(n) => {
            assert_eq!(out.len(), 1 + n, "decode appends what it reports");
            if header.flags & atbus_proto::packet_flags::COMPRESSED != 0 {
                assert!(n <= FUZZ_MAX_DECOMPRESSED, "cap respected");
            } else if header.flags & atbus_proto::packet_flags::ENCRYPTED != 0 {
                // Sealing is deterministic: the same plaintext under the same header re-seals
                // to exactly the bytes that opened.
                let mut sender = fuzz_codec(mode & !1, !receiver_is_client);
                let mut again_header = header;
                let mut again = Vec::new();
                if sender
                    .encode(&mut again_header, &out[1..], &mut again)
                    .is_ok()
                {
                    assert_eq!(again, wire, "opened content re-seals identically");
                    assert_eq!(again_header.flags, header.flags);
                }
            }
        }
        Err(_) => assert_eq!(out, [0xee], "a refused packet leaves the output alone"),
    }
    // The raw bytes as an LZ4 payload.
    let cap = crate::compress::CompressionConfig {
        threshold: 0,
        max_decompressed: FUZZ_MAX_DECOMPRESSED,
    };
    let mut plain = Vec::new();
    if let Ok(n) = cap.decompress(wire, &mut plain) {
        assert!(n <= FUZZ_MAX_DECOMPRESSED && plain.len() == n);
    }
    // The raw bytes as content to send: they must come back intact.
    let mut sender = fuzz_codec(mode, !receiver_is_client);
    let mut sent_header = header;
    let mut sent = Vec::new();
    if sender.encode(&mut sent_header, wire, &mut sent).is_ok() {
        let mut back = Vec::new();
        let decoded = receiver.decode(&sent_header, &sent, &mut back);
        assert_eq!(decoded, Ok(wire.len()), "round trip");
        assert_eq!(back, wire, "round trip content");
    }
}

/// Builds an `auth_open` input: `content` encoded by the sending codec of `mode` as packet
/// `packet_number` on path `path_id`, with `extra_flags` set (the codec adds its own).
pub fn fuzz_open_seed(
    mode: u8,
    path_id: u8,
    packet_number: i64,
    extra_flags: u8,
    content: &[u8],
) -> Vec<u8> {
    let mut prefix = [0u8; FUZZ_OPEN_PREFIX_LEN - 1];
    prefix[0] = path_id;
    prefix[1..9].copy_from_slice(&packet_number.to_be_bytes());
    prefix[9] = extra_flags;
    let mut header = fuzz_header(mode, &prefix);
    let mut sender = fuzz_codec(mode, mode & 4 == 0);
    let mut wire = Vec::new();
    if sender.encode(&mut header, content, &mut wire).is_err() {
        wire = content.to_vec();
    }
    // Flags of this protocol version fit one byte.
    prefix[9] = (header.flags & 0xff) as u8;
    let mut seed = vec![mode];
    seed.extend_from_slice(&prefix);
    seed.extend_from_slice(&wire);
    seed
}
