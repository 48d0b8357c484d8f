//! `atbus token issue` and `atbus token verify` as an operator scripts them: a token issued from
//! a secret file verifies under the same key, and is refused under another secret, another
//! namespace, or after one character of it changed.

mod common;

use common::atbus;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn issue(dir: &std::path::Path) -> String {
    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let out = atbus(
        &[
            "token",
            "issue",
            "--key-id",
            "k1",
            "--secret-file",
            file.to_str().unwrap(),
            "--name",
            "game-1",
            "--streams",
            "1,5-9",
            "--namespace",
            "eu",
            "--ttl",
            "10m",
        ],
        b"",
    );
    assert_eq!(out.code, 0, "issue failed: {}", out.stderr);
    let token = out.stdout.trim().to_string();
    assert!(token.starts_with("atbus1."), "token text form: {token:?}");
    token
}

fn verify(token: &str, key: &str, namespace: &str) -> common::Output {
    atbus(
        &[
            "token",
            "verify",
            "--key",
            key,
            "--namespace",
            namespace,
            "-",
        ],
        token.as_bytes(),
    )
}

#[test]
fn an_issued_token_verifies_and_shows_its_claims() {
    let dir = tempfile::tempdir().unwrap();
    let token = issue(dir.path());
    let out = verify(&token, &format!("k1:{SECRET}"), "eu");
    assert_eq!(out.code, 0, "verify failed: {}", out.stderr);
    assert!(out.stdout.contains("\"game-1\""), "{}", out.stdout);
    assert!(out.stdout.contains("1,5-9"), "{}", out.stdout);
}

#[test]
fn a_token_is_refused_under_another_secret_namespace_or_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let token = issue(dir.path());

    let other_secret = verify(&token, "k1:ffffffffffffffffffffffffffffffff", "eu");
    assert_ne!(other_secret.code, 0);
    assert!(
        other_secret.stderr.contains("MAC"),
        "{}",
        other_secret.stderr
    );

    let other_namespace = verify(&token, &format!("k1:{SECRET}"), "us");
    assert_ne!(other_namespace.code, 0);
    assert!(
        other_namespace.stderr.contains("namespace"),
        "{}",
        other_namespace.stderr
    );

    // Change one character in the middle of the signed part.
    let mut altered: Vec<char> = token.chars().collect();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();
    let out = verify(&altered, &format!("k1:{SECRET}"), "eu");
    assert_ne!(out.code, 0, "an altered token verified: {}", out.stdout);
}
