//! TLS between the etcd backend and a real `etcd` (Debian package `etcd-server`) serving its
//! clients on `https://127.0.0.1:PORT`, with and without client certificates. Every key and
//! certificate is generated here, at test time, into a temporary directory (none is stored in
//! the repository). The harness polls health with `etcdctl` (package `etcd-client`); a missing
//! `etcd` or `etcdctl` fails every test.
#![cfg(feature = "tls")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atbus_discovery::{Discovery, DiscoveryEvent, NodeRecord, Selector};
use atbus_discovery_etcd::testing::{EtcdProcess as Etcd, ServerTls};
use common::{next, register, register_fails};

mod common;
use atbus_discovery_etcd::{EtcdConfig, EtcdDiscovery, EtcdTls, SetupError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "atbus-etcd-tls-{}-{tag}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A leaf certificate for `names` with the given uses; returns (certificate, key) PEM.
    fn leaf(&self, cn: &str, names: &[&str], uses: &[ExtendedKeyUsagePurpose]) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = uses.to_vec();
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// Everything one test needs on disk: the etcd CA and server pair, a client pair from the same
/// CA, and a second CA etcd knows nothing of (with a client pair of its own).
struct Pki {
    dir: TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
    other_client_cert: PathBuf,
    other_client_key: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Self {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let dir = TempDir::new(tag);
        let ca = Ca::new("atbus test CA");
        // etcd's own gateway and the harness's etcdctl present the server pair as a client.
        let (server_cert, server_key) = ca.leaf(
            "etcd",
            &["127.0.0.1", "localhost"],
            &[ServerAuth, ClientAuth],
        );
        let (client_cert, client_key) = ca.leaf("atbus-node", &[], &[ClientAuth]);
        let other = Ca::new("some other CA");
        let (other_client_cert, other_client_key) = other.leaf("intruder", &[], &[ClientAuth]);
        Self {
            ca: dir.write("ca.pem", &ca.pem),
            server_cert: dir.write("server.pem", &server_cert),
            server_key: dir.write("server-key.pem", &server_key),
            client_cert: dir.write("client.pem", &client_cert),
            client_key: dir.write("client-key.pem", &client_key),
            other_ca: dir.write("other-ca.pem", &other.pem),
            other_client_cert: dir.write("other-client.pem", &other_client_cert),
            other_client_key: dir.write("other-client-key.pem", &other_client_key),
            dir,
        }
    }

    fn etcd(&self, client_cert_auth: bool) -> Etcd {
        Etcd::start_tls(ServerTls {
            ca: self.ca.clone(),
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_cert_auth,
        })
    }

    /// Client TLS trusting `ca`, presenting `identity` if any.
    fn client(&self, ca: &Path, identity: Option<(&Path, &Path)>) -> EtcdTls {
        EtcdTls {
            ca_pem: Some(ca.to_owned()),
            cert_pem: identity.map(|(c, _)| c.to_owned()),
            key_pem: identity.map(|(_, k)| k.to_owned()),
            domain: None,
        }
    }

    fn trusted(&self) -> EtcdTls {
        self.client(&self.ca, None)
    }

    fn trusted_with_cert(&self) -> EtcdTls {
        self.client(&self.ca, Some((&self.client_cert, &self.client_key)))
    }
}

fn handle(etcd: &Etcd, tls: EtcdTls) -> EtcdDiscovery {
    let mut c = common::quick_config(etcd, Duration::from_secs(3));
    c.tls = Some(tls);
    EtcdDiscovery::new(c).expect("worker")
}

fn record(name: &str) -> NodeRecord {
    common::kind_record(name, "echo")
}

/// Whether `reason` shows etcd refusing the client's certificate (or its absence). Under TLS
/// 1.3 that refusal comes after the client finished its handshake, so an attempt may see only
/// the closed connection; the backend then names the alert an earlier attempt saw, which with
/// the several attempts of one request is all but certain; a request whose every attempt lost
/// the race is still a refusal.
fn refused_client(reason: &str) -> bool {
    let alert = reason.contains("BadCertificate") || reason.contains("CertificateRequired");
    let closed = reason.contains("connection closed") || reason.contains("broken pipe");
    if !alert {
        eprintln!("no TLS alert in the reason (every attempt lost the race): {reason}");
    }
    alert || closed
}

/// The record keys in etcd, read with etcdctl over TLS.
fn keys(etcd: &Etcd) -> Vec<String> {
    etcd.ctl(&["get", "--prefix", "--keys-only", "/atbus/nodes/"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Register, list and watch between two handles, then the lease revoke seen as a delete.
fn register_list_watch(etcd: &Etcd, tls: impl Fn() -> EtcdTls) {
    let mut a = handle(etcd, tls());
    let mut b = handle(etcd, tls());
    let req = b.watch(&Selector::parse("kind=echo").expect("selector"));
    let w = match next(&mut b) {
        DiscoveryEvent::List { request, records } if request == req => {
            assert!(records.is_empty(), "{records:?}");
            req
        }
        other => panic!("expected List for {req}, got {other:?}"),
    };

    let echo = record("echo-1");
    register(&mut a, echo.clone());
    assert_eq!(keys(etcd), vec!["/atbus/nodes/echo-1"]);
    match next(&mut b) {
        DiscoveryEvent::Put { watch, record } if watch == w => assert_eq!(*record, echo),
        other => panic!("expected Put on {w}, got {other:?}"),
    }
    let req = b.list(&Selector::parse("kind=echo").expect("selector"));
    match next(&mut b) {
        DiscoveryEvent::List { request, records } if request == req => {
            assert_eq!(records, vec![echo.clone()]);
        }
        other => panic!("expected List for {req}, got {other:?}"),
    }

    a.shutdown();
    match next(&mut b) {
        DiscoveryEvent::Delete { watch, name } if watch == w => assert_eq!(name, "echo-1"),
        other => panic!("expected Delete on {w}, got {other:?}"),
    }
    assert!(keys(etcd).is_empty());
}

#[test]
fn register_list_watch_over_tls() {
    let pki = Pki::new("tls");
    let etcd = pki.etcd(false);
    assert!(etcd.endpoint().starts_with("https://"));
    register_list_watch(&etcd, || pki.trusted());
}

#[test]
fn wrong_ca_is_a_clear_error_and_writes_nothing() {
    let pki = Pki::new("wrong-ca");
    let etcd = pki.etcd(false);
    let mut d = handle(&etcd, pki.client(&pki.other_ca, None));
    let started = Instant::now();
    let reason = register_fails(&mut d, record("echo-1"));
    assert!(
        reason.contains("certificate") && reason.contains("UnknownIssuer"),
        "unclear reason: {reason}"
    );
    // Retried until the request timeout (3 s), not for ever.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(keys(&etcd).is_empty());
}

#[test]
fn mutual_tls_register_list_watch() {
    let pki = Pki::new("mtls");
    let etcd = pki.etcd(true);
    register_list_watch(&etcd, || pki.trusted_with_cert());
}

#[test]
fn mutual_tls_refuses_a_client_without_certificate() {
    let pki = Pki::new("mtls-nocert");
    let etcd = pki.etcd(true);
    let mut d = handle(&etcd, pki.trusted());
    let reason = register_fails(&mut d, record("echo-1"));
    assert!(refused_client(&reason), "unclear reason: {reason}");
    assert!(keys(&etcd).is_empty());
}

#[test]
fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let pki = Pki::new("mtls-other");
    let etcd = pki.etcd(true);
    let tls = pki.client(
        &pki.ca,
        Some((&pki.other_client_cert, &pki.other_client_key)),
    );
    let mut d = handle(&etcd, tls);
    let reason = register_fails(&mut d, record("echo-1"));
    assert!(refused_client(&reason), "unclear reason: {reason}");
    assert!(keys(&etcd).is_empty());
}

#[test]
fn bad_tls_settings_fail_at_setup() {
    let pki = Pki::new("setup");
    let with = |endpoint: &str, tls: Option<EtcdTls>| {
        let mut c = EtcdConfig::new(vec![endpoint.to_owned()]);
        c.tls = tls;
        EtcdDiscovery::new(c).map(|_| ())
    };
    assert!(matches!(
        with("https://127.0.0.1:1", Some(EtcdTls::default())),
        Err(SetupError::TlsNoCa)
    ));
    assert!(matches!(
        with("http://127.0.0.1:1", Some(pki.trusted())),
        Err(SetupError::TlsScheme { .. })
    ));
    assert!(matches!(
        with("https://127.0.0.1:1", None),
        Err(SetupError::TlsScheme { .. })
    ));
    let mut half = pki.trusted();
    half.cert_pem = Some(pki.client_cert.clone());
    assert!(matches!(
        with("https://127.0.0.1:1", Some(half)),
        Err(SetupError::TlsIdentity)
    ));
    let missing = pki.client(&pki.dir.0.join("nope.pem"), None);
    match with("https://127.0.0.1:1", Some(missing)) {
        Err(SetupError::TlsFile { path, .. }) => assert!(path.ends_with("nope.pem")),
        other => panic!("expected TlsFile, got {other:?}"),
    }
    // The spec form reaches the same files.
    let spec = format!("etcds://127.0.0.1:1?ca={}", pki.ca.display());
    let c = EtcdConfig::from_spec(&spec).expect("spec");
    assert_eq!(c.tls, Some(pki.trusted()));
    assert!(EtcdDiscovery::new(c).is_ok());
}
