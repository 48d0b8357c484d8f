//! Runs `N` mutual-TLS handshakes of `atbus_auth::tls` between two in-memory ends (certificates
//! made once by rcgen at start-up, ECDSA P-256), for instruction counts under callgrind that
//! do not depend on machine load:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/tls_cost N
//! ```
//!
//! Instructions per handshake (both ends, secrets exported) = (total at N - total at 0) / N.

use std::time::Instant;

use atbus_auth::tls::{AtbusIdentity, TlsConfig, TlsHandshake, TlsTransport};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

/// 2027-06-01 in Unix milliseconds, inside the certificates' default validity.
const UNIX_MS: i64 = 1_811_808_000_000;

fn leaf(issuer: &Issuer<'_, KeyPair>, uri: &str) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names.push(SanType::URI(uri.try_into()?));
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, n] = args.as_slice() else {
        return Err("usage: tls_cost N".into());
    };
    let n: u32 = n.parse()?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let (server_cert, server_key) = leaf(&issuer, "atbus://bench/server")?;
    let (client_cert, client_key) = leaf(&issuer, "atbus://bench/client")?;
    let server_config = TlsConfig::from_pem(
        Some(server_cert.as_bytes()),
        Some(server_key.as_bytes()),
        ca_pem.as_bytes(),
        true,
    )?;
    let client_config = TlsConfig::from_pem(
        Some(client_cert.as_bytes()),
        Some(client_key.as_bytes()),
        ca_pem.as_bytes(),
        false,
    )?;
    let now = Instant::now();
    let mut buf = Vec::new();
    for _ in 0..n {
        let mut client =
            TlsHandshake::client(&client_config, TlsTransport::reliable(), now, [1; 32])?;
        let mut server =
            TlsHandshake::server(&server_config, TlsTransport::reliable(), now, [2; 32])?;
        client.expect_peer(AtbusIdentity::new("bench", "server"));
        server.expect_peer(AtbusIdentity::new("bench", "client"));
        loop {
            let mut moved = false;
            while client.poll_transmit(now, &mut buf) {
                server.handle_record(now, UNIX_MS, &buf)?;
                buf.clear();
                moved = true;
            }
            while server.poll_transmit(now, &mut buf) {
                client.handle_record(now, UNIX_MS, &buf)?;
                buf.clear();
                moved = true;
            }
            if !moved {
                break;
            }
        }
        let (c, s) = (client.export_secrets(b"")?, server.export_secrets(b"")?);
        if c != s {
            return Err("secrets differ".into());
        }
    }
    Ok(())
}
