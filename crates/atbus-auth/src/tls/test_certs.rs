//! Certificates for tests, made at run time with rcgen (none is ever stored): a CA and leaves
//! naming atbus identities, with chosen validity periods. Built for this crate's own tests and,
//! with the `test-certs` feature, for the node and command-line tests of the workspace.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, date_time_ymd,
};

/// Key algorithm of a test certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestKey {
    /// ECDSA P-256 (the usual choice; its signatures draw fresh randomness).
    #[default]
    EcdsaP256,
    /// Ed25519 (deterministic signatures: handshakes replay byte for byte under one seed).
    Ed25519,
}

impl TestKey {
    fn generate(self) -> KeyPair {
        let alg = match self {
            TestKey::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            TestKey::Ed25519 => &rcgen::PKCS_ED25519,
        };
        KeyPair::generate_for(alg).expect("test key pair")
    }
}

/// A test certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    key: TestKey,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A leaf certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct TestLeaf {
    /// The certificate, PEM.
    pub cert: String,
    /// The private key, PEM (PKCS#8).
    pub key: String,
}

impl TestCa {
    /// A self-signed CA called `name`, ECDSA P-256.
    pub fn new(name: &str) -> Self {
        Self::with_key(name, TestKey::EcdsaP256)
    }

    /// A self-signed CA called `name` whose key and leaves use `key`.
    pub fn with_key(name: &str, key: TestKey) -> Self {
        let pair = key.generate();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&pair).expect("CA certificate");
        Self {
            issuer: Issuer::new(params, pair),
            key,
            pem: cert.pem(),
        }
    }

    /// A leaf with the given URI SANs and DNS names, valid from January 1st of `from` to
    /// January 1st of `until`.
    pub fn leaf(&self, uris: &[&str], dns: &[&str], from: i32, until: i32) -> TestLeaf {
        let key = self.key.generate();
        let mut params =
            CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>())
                .expect("leaf params");
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().expect("URI is ASCII")));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "atbus node");
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(until, 1, 1);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        TestLeaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A leaf naming `atbus://<namespace>/<name>`, valid 2020–2100 (current for any test run).
    pub fn node(&self, namespace: &str, name: &str) -> TestLeaf {
        let uri = format!("atbus://{namespace}/{name}");
        self.leaf(&[&uri], &[], 2020, 2100)
    }

    /// Writes the CA certificate to `dir/<file>` and returns the path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        write_file(dir, file, &self.pem)
    }
}

impl TestLeaf {
    /// Writes the certificate and key to `dir/<stem>.crt` and `dir/<stem>.key`; returns both
    /// paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        (
            write_file(dir, &format!("{stem}.crt"), &self.cert),
            write_file(dir, &format!("{stem}.key"), &self.key),
        )
    }
}

fn write_file(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write test certificate");
    path
}
