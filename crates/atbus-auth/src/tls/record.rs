//! The TLS handshake record: what `packet_data.content` holds in a packet whose flags carry
//! `TLS_HANDSHAKE` (specified in `docs/protocol.md`, "TLS handshake records").
//!
//! ```text
//! data record  = 0x01 ‖ level (1) ‖ u32_be(offset) ‖ u32_be(ack initial) ‖ u32_be(ack handshake) ‖ bytes
//! alert record = 0x02 ‖ refusal (1) ‖ TLS alert description (1)
//! ```
//!
//! A data record carries `bytes` of the sender's TLS handshake stream of one encryption level
//! (0 = initial, 1 = handshake), starting at `offset` of that stream, plus how many contiguous
//! bytes of each of the peer's streams the sender has received (its acknowledgement). An
//! empty `bytes` is a pure acknowledgement. The record fills the whole content: `bytes` runs
//! to its end.

use thiserror::Error;

/// Kind byte of a data record.
pub const KIND_DATA: u8 = 1;
/// Kind byte of an alert record.
pub const KIND_ALERT: u8 = 2;
/// Encryption levels a record may name: initial (0) and handshake (1).
pub const LEVELS: usize = 2;
/// Bytes of a data record before its handshake bytes.
pub const DATA_HEADER_LEN: usize = 2 + 4 + 4 * LEVELS;
/// Length of an alert record.
pub const ALERT_LEN: usize = 3;
/// Largest handshake stream of one level (offset + length), in either direction: far above a
/// TLS 1.3 flight with a few certificates, small enough to bound what a peer can make us keep.
pub const MAX_LEVEL_BYTES: u32 = 64 * 1024;
/// Largest number of handshake bytes in one record.
pub const MAX_RECORD_DATA: usize = 16 * 1024;

/// One decoded TLS handshake record, borrowing its bytes from the packet content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRecord<'a> {
    /// Handshake bytes of one level and the sender's acknowledgement.
    Data {
        /// Encryption level of `bytes` (0 initial, 1 handshake).
        level: u8,
        /// Offset of `bytes` in the sender's stream of that level.
        offset: u32,
        /// Contiguous bytes of each of the receiver's streams the sender has received.
        ack: [u32; LEVELS],
        /// The handshake bytes (empty for a pure acknowledgement).
        bytes: &'a [u8],
    },
    /// The sender gave up on the handshake, and why.
    Alert {
        /// The sender's reason, as a [`TlsRefusal`] code.
        refusal: TlsRefusal,
        /// The TLS alert description rustls chose (0 when none), for logs.
        alert: u8,
    },
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The content is shorter than the record's fixed header.
    #[error("TLS record truncated: {len} bytes, at least {need} needed")]
    Truncated {
        /// Bytes seen.
        len: usize,
        /// Bytes the header needs.
        need: usize,
    },
    /// The kind byte is neither data nor alert.
    #[error("TLS record kind {0} is unknown")]
    UnknownKind(u8),
    /// The level byte is not 0 or 1.
    #[error("TLS record level {0} is unknown")]
    UnknownLevel(u8),
    /// More handshake bytes than one record may hold.
    #[error("TLS record holds {0} bytes, the limit is {MAX_RECORD_DATA}")]
    TooLarge(usize),
    /// `offset + length` or an acknowledgement is beyond [`MAX_LEVEL_BYTES`].
    #[error("TLS record offset or acknowledgement beyond {MAX_LEVEL_BYTES} bytes")]
    BeyondLimit,
    /// An alert record with bytes after it.
    #[error("TLS alert record is {0} bytes, not {ALERT_LEN}")]
    AlertLength(usize),
}

/// Why a side gave up on a TLS handshake, as carried in an alert record. Each maps to one
/// [`crate::TlsError`] on the side that refused and to `PeerRefused` on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsRefusal {
    /// The peer's certificate is not issued by a configured CA.
    UnknownIssuer,
    /// The peer's certificate has expired.
    CertificateExpired,
    /// The peer's certificate is not valid yet.
    CertificateNotYetValid,
    /// The server requires a client certificate and none was presented.
    ClientCertificateRequired,
    /// The peer's certificate has no `atbus://<namespace>/<name>` URI SAN.
    NoAtbusIdentity,
    /// The certificate's atbus identity is not the name the peer claims.
    IdentityMismatch,
    /// The certificate was refused for another reason (bad signature, wrong key usage, …).
    BadCertificate,
    /// The handshake did not finish in time.
    Timeout,
    /// Any other TLS or protocol failure.
    HandshakeFailure,
    /// A code this build does not know (a newer peer).
    Unknown(u8),
}

impl TlsRefusal {
    /// The code byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            TlsRefusal::UnknownIssuer => 1,
            TlsRefusal::CertificateExpired => 2,
            TlsRefusal::CertificateNotYetValid => 3,
            TlsRefusal::ClientCertificateRequired => 4,
            TlsRefusal::NoAtbusIdentity => 5,
            TlsRefusal::IdentityMismatch => 6,
            TlsRefusal::BadCertificate => 7,
            TlsRefusal::Timeout => 8,
            TlsRefusal::HandshakeFailure => 9,
            TlsRefusal::Unknown(code) => code,
        }
    }

    /// The refusal of code byte `code`.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => TlsRefusal::UnknownIssuer,
            2 => TlsRefusal::CertificateExpired,
            3 => TlsRefusal::CertificateNotYetValid,
            4 => TlsRefusal::ClientCertificateRequired,
            5 => TlsRefusal::NoAtbusIdentity,
            6 => TlsRefusal::IdentityMismatch,
            7 => TlsRefusal::BadCertificate,
            8 => TlsRefusal::Timeout,
            9 => TlsRefusal::HandshakeFailure,
            other => TlsRefusal::Unknown(other),
        }
    }

    /// A short stable name, used as the first word of close messages.
    pub fn name(self) -> &'static str {
        match self {
            TlsRefusal::UnknownIssuer => "tls-unknown-issuer",
            TlsRefusal::CertificateExpired => "tls-certificate-expired",
            TlsRefusal::CertificateNotYetValid => "tls-certificate-not-yet-valid",
            TlsRefusal::ClientCertificateRequired => "tls-client-certificate-required",
            TlsRefusal::NoAtbusIdentity => "tls-no-atbus-identity",
            TlsRefusal::IdentityMismatch => "tls-identity-mismatch",
            TlsRefusal::BadCertificate => "tls-bad-certificate",
            TlsRefusal::Timeout => "tls-timeout",
            TlsRefusal::HandshakeFailure => "tls-handshake-failure",
            TlsRefusal::Unknown(_) => "tls-unknown-refusal",
        }
    }
}

impl std::fmt::Display for TlsRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

impl<'a> TlsRecord<'a> {
    /// Decodes a record from the whole of a packet's content.
    pub fn decode(content: &'a [u8]) -> Result<Self, RecordError> {
        let Some(&kind) = content.first() else {
            return Err(RecordError::Truncated {
                len: 0,
                need: ALERT_LEN,
            });
        };
        match kind {
            KIND_DATA => {
                if content.len() < DATA_HEADER_LEN {
                    return Err(RecordError::Truncated {
                        len: content.len(),
                        need: DATA_HEADER_LEN,
                    });
                }
                let level = content[1];
                if usize::from(level) >= LEVELS {
                    return Err(RecordError::UnknownLevel(level));
                }
                let offset = u32_at(content, 2);
                let ack = [u32_at(content, 6), u32_at(content, 10)];
                let bytes = &content[DATA_HEADER_LEN..];
                if bytes.len() > MAX_RECORD_DATA {
                    return Err(RecordError::TooLarge(bytes.len()));
                }
                // `bytes.len()` is at most MAX_RECORD_DATA, so the sum cannot overflow u64.
                let end = u64::from(offset) + bytes.len() as u64;
                if end > u64::from(MAX_LEVEL_BYTES) || ack.iter().any(|&a| a > MAX_LEVEL_BYTES) {
                    return Err(RecordError::BeyondLimit);
                }
                Ok(TlsRecord::Data {
                    level,
                    offset,
                    ack,
                    bytes,
                })
            }
            KIND_ALERT => {
                if content.len() != ALERT_LEN {
                    return Err(if content.len() < ALERT_LEN {
                        RecordError::Truncated {
                            len: content.len(),
                            need: ALERT_LEN,
                        }
                    } else {
                        RecordError::AlertLength(content.len())
                    });
                }
                Ok(TlsRecord::Alert {
                    refusal: TlsRefusal::from_code(content[1]),
                    alert: content[2],
                })
            }
            other => Err(RecordError::UnknownKind(other)),
        }
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            TlsRecord::Data {
                level,
                offset,
                ack,
                bytes,
            } => {
                out.reserve(DATA_HEADER_LEN + bytes.len());
                out.push(KIND_DATA);
                out.push(level);
                out.extend_from_slice(&offset.to_be_bytes());
                for a in ack {
                    out.extend_from_slice(&a.to_be_bytes());
                }
                out.extend_from_slice(bytes);
            }
            TlsRecord::Alert { refusal, alert } => {
                out.extend_from_slice(&[KIND_ALERT, refusal.code(), alert]);
            }
        }
    }
}

/// Fuzz body of `fuzz/fuzz_targets/tls_record.rs` (kept here so its corpus replays as an
/// ordinary test): decoding never panics, a decoded record re-encodes to exactly its input
/// (the format is canonical), and every error is one of the typed refusals.
#[doc(hidden)]
pub fn fuzz_tls_record(data: &[u8]) {
    match TlsRecord::decode(data) {
        Ok(record) => {
            let mut out = Vec::with_capacity(data.len());
            record.encode(&mut out);
            assert_eq!(out, data, "record encoding is canonical");
            if let TlsRecord::Data { offset, bytes, .. } = record {
                assert!(offset as usize + bytes.len() <= MAX_LEVEL_BYTES as usize);
                assert!(bytes.len() <= MAX_RECORD_DATA);
            }
        }
        Err(RecordError::Truncated { len, need }) => assert!(len < need && len == data.len()),
        Err(RecordError::UnknownKind(kind)) => assert_eq!(Some(&kind), data.first()),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_record_round_trips() {
        let rec = TlsRecord::Data {
            level: 1,
            offset: 300,
            ack: [12, 7],
            bytes: b"handshake bytes",
        };
        let mut out = Vec::new();
        rec.encode(&mut out);
        assert_eq!(out.len(), DATA_HEADER_LEN + 15);
        assert_eq!(TlsRecord::decode(&out), Ok(rec));
    }

    #[test]
    fn alert_record_round_trips_every_code() {
        for code in 0..=255u8 {
            let rec = TlsRecord::Alert {
                refusal: TlsRefusal::from_code(code),
                alert: 42,
            };
            let mut out = Vec::new();
            rec.encode(&mut out);
            assert_eq!(out, [KIND_ALERT, code, 42]);
            assert_eq!(TlsRecord::decode(&out), Ok(rec));
        }
    }

    #[test]
    fn malformed_records_are_refused() {
        assert!(matches!(
            TlsRecord::decode(&[]),
            Err(RecordError::Truncated { .. })
        ));
        assert_eq!(
            TlsRecord::decode(&[9, 0, 0]),
            Err(RecordError::UnknownKind(9))
        );
        assert!(matches!(
            TlsRecord::decode(&[KIND_DATA, 0, 0]),
            Err(RecordError::Truncated { .. })
        ));
        let mut rec = vec![KIND_DATA, 2];
        rec.extend_from_slice(&[0; 12]);
        assert_eq!(TlsRecord::decode(&rec), Err(RecordError::UnknownLevel(2)));
        // Offset + length past the per-level cap.
        let mut out = Vec::new();
        TlsRecord::Data {
            level: 0,
            offset: MAX_LEVEL_BYTES - 1,
            ack: [0, 0],
            bytes: b"xy",
        }
        .encode(&mut out);
        assert_eq!(TlsRecord::decode(&out), Err(RecordError::BeyondLimit));
        // An acknowledgement past the cap.
        out.clear();
        TlsRecord::Data {
            level: 0,
            offset: 0,
            ack: [0, MAX_LEVEL_BYTES + 1],
            bytes: b"",
        }
        .encode(&mut out);
        assert_eq!(TlsRecord::decode(&out), Err(RecordError::BeyondLimit));
        // Too many bytes in one record.
        out.clear();
        let big = vec![0u8; MAX_RECORD_DATA + 1];
        TlsRecord::Data {
            level: 0,
            offset: 0,
            ack: [0, 0],
            bytes: &big,
        }
        .encode(&mut out);
        assert_eq!(
            TlsRecord::decode(&out),
            Err(RecordError::TooLarge(MAX_RECORD_DATA + 1))
        );
        assert_eq!(
            TlsRecord::decode(&[KIND_ALERT, 1, 2, 3]),
            Err(RecordError::AlertLength(4))
        );
        assert!(matches!(
            TlsRecord::decode(&[KIND_ALERT, 1]),
            Err(RecordError::Truncated { .. })
        ));
    }
}
