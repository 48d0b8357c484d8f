//! `atbus token issue` and `atbus token verify`: signed access tokens (see `atbus-auth` and
//! `docs/security.md`) from the command line.
//!
//! `issue` signs a token binding a node name, allowed streams, a namespace and a validity
//! period with a key (`--key-id` plus `--secret`, `--secret-file` or `ATBUS_TOKEN_SECRET`) and
//! prints its text form (`atbus1.…`), or with `--json` the token, its claims and the holder
//! secret the client proves in the handshake. `verify` checks a token against one or more keys
//! (`--key KEY_ID:SECRET`, `--key-file` or `ATBUS_TOKEN_KEYS`) and prints its claims, or fails
//! with the reason. Both take the Unix time as an argument so tests control the clock.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use atbus_auth::{
    IssueError, KeyError, StreamSet, StreamSetError, TokenClaims, TokenError, TokenKey,
    TokenKeyring, VerifiedToken, VerifyPolicy, Violation,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Environment variable holding the signing secret when neither `--secret` nor
/// `--secret-file` is given.
pub const SECRET_ENV: &str = "ATBUS_TOKEN_SECRET";
/// Environment variable holding one verification key `KEY_ID:SECRET` when neither `--key` nor
/// `--key-file` is given.
pub const KEYS_ENV: &str = "ATBUS_TOKEN_KEYS";
/// Longest lifetime `--ttl` accepts (ten years).
pub const MAX_TTL_SECS: u64 = 10 * 366 * 24 * 3600;

/// Errors of `atbus token`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenCliError {
    /// No secret or key was given, or one could not be read.
    #[error("{0}")]
    Secret(String),
    /// The key is not acceptable (key id syntax, secret length, duplicates).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// `--streams` does not parse.
    #[error("--streams: {0}")]
    Streams(#[from] StreamSetError),
    /// `--ttl` or `--expires` is not acceptable.
    #[error("{0}")]
    Lifetime(String),
    /// The claims cannot be signed.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The operating system's random source failed.
    #[error("cannot draw a token nonce from the operating system: {0}")]
    Random(String),
    /// The token did not verify.
    #[error("token refused: {0}")]
    Refused(#[from] TokenError),
    /// The token verified but does not allow what `--name` or `--stream` asked.
    #[error("token does not permit this: {0}")]
    Violation(#[from] Violation),
    /// Writing the output or reading standard input failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Where the signing secret comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecretArgs {
    /// Signing secret (at least 16 bytes; visible to other users in the process list: prefer
    /// --secret-file or ATBUS_TOKEN_SECRET)
    #[arg(long, value_name = "SECRET", conflicts_with = "secret_file")]
    pub secret: Option<String>,
    /// File holding the signing secret (surrounding whitespace is trimmed)
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
}

/// Arguments of `atbus token issue`.
#[derive(Debug, Clone, clap::Args)]
pub struct IssueArgs {
    /// Key id of the signing key (travels in the token; rotate by issuing under a new id)
    #[arg(long, value_name = "KEY_ID")]
    pub key_id: String,
    /// Signing secret; without --secret or --secret-file, the ATBUS_TOKEN_SECRET variable
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Node name the token binds (the holder must use it as its name and every frame's source)
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Stream ids the holder may send on: `*`, or ids and ranges such as `1,5-9`
    #[arg(long, value_name = "LIST")]
    pub streams: String,
    /// Namespace (audience) the token is valid in; empty is the default namespace
    #[arg(long, value_name = "NS", default_value = "")]
    pub namespace: String,
    /// Lifetime from now: seconds, or a number with s, m, h or d (default 1h)
    #[arg(long, value_name = "DURATION", conflicts_with = "expires")]
    pub ttl: Option<String>,
    /// Absolute expiry, Unix seconds
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub expires: Option<u64>,
    /// Print a JSON object (token, claims, holder secret) instead of the token alone
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `atbus token verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The token (`atbus1.…`); `-` reads it from standard input
    #[arg(value_name = "TOKEN")]
    pub token: String,
    /// Verification key `KEY_ID:SECRET`; repeat to accept several (rotation). Without --key or
    /// --key-file, the ATBUS_TOKEN_KEYS variable (one key)
    #[arg(
        long = "key",
        value_name = "KEY_ID:SECRET",
        conflicts_with = "key_file"
    )]
    pub keys: Vec<String>,
    /// File with one `KEY_ID:SECRET` per line (blank lines and `#` comments skipped)
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Namespace (audience) the verifier serves
    #[arg(long, value_name = "NS", default_value = "")]
    pub namespace: String,
    /// Clock-skew allowance at both ends of the validity period, seconds
    #[arg(long, value_name = "SECONDS", default_value_t = atbus_auth::DEFAULT_CLOCK_SKEW_SECS)]
    pub skew: u64,
    /// Also require that the token binds this node name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Also require that the token allows this stream id (repeatable)
    #[arg(long = "stream", value_name = "ID")]
    pub streams: Vec<i64>,
    /// Print a JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// `atbus token …` subcommands, for the command's parser.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Sign a token binding a node name, streams, namespace and validity period
    Issue(IssueArgs),
    /// Check a token against verification keys and print its claims
    Verify(VerifyArgs),
}

/// Runs a `token` subcommand at Unix time `now_unix`, writing to `out` (and reading a `-`
/// token from standard input).
pub fn run_command(
    cmd: &TokenCommand,
    now_unix: u64,
    out: &mut dyn Write,
) -> Result<(), TokenCliError> {
    match cmd {
        TokenCommand::Issue(args) => run(args, now_unix, out),
        TokenCommand::Verify(args) => run_verify(args, now_unix, &mut std::io::stdin(), out),
    }
}

/// The signing secret: `--secret`, else `--secret-file`, else `env` (the value of
/// [`SECRET_ENV`]).
pub fn resolve_secret(args: &SecretArgs, env: Option<String>) -> Result<Vec<u8>, TokenCliError> {
    if let Some(s) = &args.secret {
        return Ok(s.as_bytes().to_vec());
    }
    if let Some(path) = &args.secret_file {
        let text = read_text(path)?;
        return Ok(text.trim().as_bytes().to_vec());
    }
    match env {
        Some(s) if !s.trim().is_empty() => Ok(s.trim().as_bytes().to_vec()),
        _ => Err(TokenCliError::Secret(format!(
            "no signing secret: give --secret, --secret-file or {SECRET_ENV}"
        ))),
    }
}

fn read_text(path: &Path) -> Result<String, TokenCliError> {
    std::fs::read_to_string(path)
        .map_err(|e| TokenCliError::Secret(format!("{}: {e}", path.display())))
}

/// Parses a lifetime: seconds, or a number followed by `s`, `m`, `h` or `d`.
pub fn parse_ttl(text: &str) -> Result<u64, TokenCliError> {
    let text = text.trim();
    let bad = || {
        TokenCliError::Lifetime(format!(
            "--ttl {text:?}: expected seconds or a number with s, m, h or d"
        ))
    };
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    if secs == 0 || secs > MAX_TTL_SECS {
        return Err(TokenCliError::Lifetime(format!(
            "--ttl {text:?}: must be between 1 s and {MAX_TTL_SECS} s"
        )));
    }
    Ok(secs)
}

/// Runs `atbus token issue` at Unix time `now_unix`: the nonce comes from the operating
/// system's random source, the secret from the arguments or [`SECRET_ENV`].
pub fn run(args: &IssueArgs, now_unix: u64, out: &mut dyn Write) -> Result<(), TokenCliError> {
    use rand_core::TryRngCore as _;
    let mut nonce = [0u8; atbus_auth::token::TOKEN_NONCE_LEN];
    rand_core::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|e| TokenCliError::Random(e.to_string()))?;
    let secret = resolve_secret(&args.secret, std::env::var(SECRET_ENV).ok())?;
    run_with(args, &secret, now_unix, nonce, out)
}

/// `atbus token issue` with the secret and nonce given (deterministic, for tests).
pub fn run_with(
    args: &IssueArgs,
    secret: &[u8],
    now_unix: u64,
    nonce: [u8; atbus_auth::token::TOKEN_NONCE_LEN],
    out: &mut dyn Write,
) -> Result<(), TokenCliError> {
    let key = TokenKey::new(args.key_id.clone(), secret.to_vec())?;
    let expires_at = match (args.expires, &args.ttl) {
        (Some(at), _) => {
            if at <= now_unix {
                return Err(TokenCliError::Lifetime(format!(
                    "--expires {at} is not after now ({now_unix})"
                )));
            }
            at
        }
        (None, Some(ttl)) => now_unix.saturating_add(parse_ttl(ttl)?),
        (None, None) => now_unix.saturating_add(3600),
    };
    let claims = TokenClaims {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        streams: StreamSet::parse(&args.streams)?,
        issued_at: now_unix,
        expires_at,
        nonce,
    };
    let issued = key
        .issue(&claims)
        .map_err(|e| TokenCliError::Issue(IssueError::Claims(e)))?;
    let text = issued.to_text();
    if args.json {
        let mut v = claims_json(args.key_id.as_str(), &claims);
        v["token"] = text.into();
        v["holder_secret"] = URL_SAFE_NO_PAD.encode(issued.holder_secret.0).into();
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

fn claims_json(key_id: &str, c: &TokenClaims) -> serde_json::Value {
    serde_json::json!({
        "key_id": key_id,
        "name": c.name,
        "namespace": c.namespace,
        "streams": c.streams.to_string(),
        "issued_at": c.issued_at,
        "expires_at": c.expires_at,
        "nonce": hex(&c.nonce),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses verification keys `KEY_ID:SECRET` (split at the first colon) into a key ring with
/// `policy`.
pub fn keyring(keys: &[String], policy: VerifyPolicy) -> Result<TokenKeyring, TokenCliError> {
    let mut ring = TokenKeyring::with_policy(policy);
    for k in keys {
        let Some((id, secret)) = k.split_once(':') else {
            return Err(TokenCliError::Secret(
                "a verification key is KEY_ID:SECRET".to_owned(),
            ));
        };
        ring.insert(TokenKey::new(id, secret.as_bytes())?)?;
    }
    if keys.is_empty() {
        return Err(TokenCliError::Secret(format!(
            "no verification key: give --key, --key-file or {KEYS_ENV}"
        )));
    }
    Ok(ring)
}

/// The verification keys: `--key` values, else the `--key-file` lines, else `env` (the value
/// of [`KEYS_ENV`]).
pub fn resolve_keys(args: &VerifyArgs, env: Option<String>) -> Result<Vec<String>, TokenCliError> {
    if !args.keys.is_empty() {
        return Ok(args.keys.clone());
    }
    if let Some(path) = &args.key_file {
        return Ok(read_text(path)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect());
    }
    Ok(env
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .into_iter()
        .collect())
}

/// Runs `atbus token verify` at Unix time `now_unix`, reading a `-` token from `input`. A
/// refused token is an error (after its JSON form is written, with `--json`).
pub fn run_verify(
    args: &VerifyArgs,
    now_unix: u64,
    input: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<(), TokenCliError> {
    let keys = resolve_keys(args, std::env::var(KEYS_ENV).ok())?;
    let ring = keyring(
        &keys,
        VerifyPolicy {
            clock_skew_secs: args.skew,
            ..VerifyPolicy::default()
        },
    )?;
    let text = if args.token == "-" {
        let mut s = String::new();
        // Read at most a little more than the cap, so a huge input is refused as oversized.
        input
            .take(atbus_auth::token::MAX_TEXT_LEN as u64 + 2)
            .read_to_string(&mut s)?;
        s
    } else {
        args.token.clone()
    };
    let result = ring
        .verify_text(&text, &args.namespace, now_unix)
        .map_err(TokenCliError::from)
        .and_then(|t| check_bindings(&t, args).map(|()| t));
    match (&result, args.json) {
        (Ok(t), true) => {
            let mut v = claims_json(&t.key_id, &t.claims);
            v["valid"] = true.into();
            writeln!(out, "{v}")?;
        }
        (Ok(t), false) => {
            let c = &t.claims;
            writeln!(
                out,
                "valid: key id {:?}, name {:?}, namespace {:?}, streams {}, issued at {}, \
                 expires at {} (in {} s)",
                t.key_id,
                c.name,
                c.namespace,
                c.streams,
                c.issued_at,
                c.expires_at,
                c.expires_at.saturating_sub(now_unix)
            )?;
        }
        (Err(e), true) => {
            let v = serde_json::json!({ "valid": false, "error": e.to_string() });
            writeln!(out, "{v}")?;
        }
        (Err(_), false) => {}
    }
    result.map(|_| ())
}

fn check_bindings(t: &VerifiedToken, args: &VerifyArgs) -> Result<(), TokenCliError> {
    if let Some(name) = &args.name {
        t.check_name(name)?;
    }
    for &id in &args.streams {
        t.check_stream(id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const SECRET: &str = "cli-secret-0123456789abcdef-0123";

    fn issue_args() -> IssueArgs {
        IssueArgs {
            key_id: "k1".into(),
            secret: SecretArgs {
                secret: Some(SECRET.into()),
                secret_file: None,
            },
            name: "client-7".into(),
            streams: "1-4,9".into(),
            namespace: "game".into(),
            ttl: Some("2h".into()),
            expires: None,
            json: false,
        }
    }

    fn verify_args(token: &str) -> VerifyArgs {
        VerifyArgs {
            token: token.into(),
            keys: vec![format!("k1:{SECRET}")],
            key_file: None,
            namespace: "game".into(),
            skew: 0,
            name: None,
            streams: Vec::new(),
            json: false,
        }
    }

    fn issue(args: &IssueArgs) -> String {
        let mut out = Vec::new();
        run(args, NOW, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn verify(args: &VerifyArgs, now: u64) -> (Result<(), TokenCliError>, String) {
        let mut out = Vec::new();
        let r = run_verify(args, now, &mut std::io::empty(), &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn issued_token_verifies_with_the_library_and_the_command() {
        let text = issue(&issue_args());
        assert!(text.starts_with("atbus1.") && text.ends_with('\n'));
        let mut ring = TokenKeyring::new();
        ring.insert(TokenKey::new("k1", SECRET.as_bytes()).unwrap())
            .unwrap();
        let t = ring.verify_text(&text, "game", NOW).unwrap();
        assert_eq!(t.claims.name, "client-7");
        assert_eq!(t.claims.expires_at, NOW + 7200);
        assert!(t.check_stream(9).is_ok() && t.check_stream(5).is_err());
        let (r, out) = verify(&verify_args(text.trim()), NOW + 10);
        assert!(r.is_ok(), "{r:?}");
        assert!(
            out.contains("\"client-7\"") && out.contains("streams 1-4,9"),
            "{out}"
        );
    }

    #[test]
    fn each_run_draws_a_fresh_nonce() {
        assert_ne!(issue(&issue_args()), issue(&issue_args()));
    }

    #[test]
    fn json_output_has_claims_and_holder_secret() {
        let mut args = issue_args();
        args.json = true;
        args.ttl = None;
        args.expires = Some(NOW + 60);
        let mut out = Vec::new();
        run_with(&args, SECRET.as_bytes(), NOW, [0xab; 16], &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["name"], "client-7");
        assert_eq!(v["namespace"], "game");
        assert_eq!(v["streams"], "1-4,9");
        assert_eq!(v["issued_at"], NOW);
        assert_eq!(v["expires_at"], NOW + 60);
        assert_eq!(v["nonce"], "ab".repeat(16));
        let token = v["token"].as_str().unwrap();
        let mut ring = TokenKeyring::new();
        ring.insert(TokenKey::new("k1", SECRET.as_bytes()).unwrap())
            .unwrap();
        let t = ring.verify_text(token, "game", NOW).unwrap();
        assert_eq!(
            v["holder_secret"],
            URL_SAFE_NO_PAD.encode(t.holder_secret.0)
        );
        // Same inputs, same token: the output depends only on them.
        let mut again = Vec::new();
        run_with(&args, SECRET.as_bytes(), NOW, [0xab; 16], &mut again).unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn verify_reports_each_refusal() {
        let text = issue(&issue_args());
        let (r, _) = verify(&verify_args(&text), NOW + 7200);
        assert!(matches!(
            r,
            Err(TokenCliError::Refused(TokenError::Expired { .. }))
        ));
        let mut a = verify_args(&text);
        a.namespace = "other".into();
        assert!(matches!(
            verify(&a, NOW).0,
            Err(TokenCliError::Refused(TokenError::WrongAudience { .. }))
        ));
        let mut a = verify_args(&text);
        a.keys = vec![format!("k2:{SECRET}")];
        assert!(matches!(
            verify(&a, NOW).0,
            Err(TokenCliError::Refused(TokenError::UnknownKeyId(_)))
        ));
        let mut a = verify_args(&text);
        a.keys = vec!["k1:another-secret-0123456789".into()];
        assert!(matches!(
            verify(&a, NOW).0,
            Err(TokenCliError::Refused(TokenError::Tampered))
        ));
        let mut a = verify_args(&text);
        a.name = Some("client-8".into());
        assert!(matches!(
            verify(&a, NOW).0,
            Err(TokenCliError::Violation(Violation::NameMismatch { .. }))
        ));
        let mut a = verify_args(&text);
        a.streams = vec![1, 5];
        assert!(matches!(
            verify(&a, NOW).0,
            Err(TokenCliError::Violation(Violation::StreamNotAllowed(5)))
        ));
        let mut a = verify_args(&text);
        a.json = true;
        a.skew = 0;
        let (r, out) = verify(&a, NOW - 1);
        assert!(r.is_err());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["valid"], false);
        assert!(v["error"].as_str().unwrap().contains("not valid before"));
    }

    #[test]
    fn verify_reads_the_token_from_stdin_and_keys_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, format!("# rotation\nold:{SECRET}x\n\nk1:{SECRET}\n")).unwrap();
        let text = issue(&issue_args());
        let mut a = verify_args("-");
        a.keys.clear();
        a.key_file = Some(keys);
        a.json = true;
        let mut out = Vec::new();
        run_verify(&a, NOW, &mut text.as_bytes(), &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["valid"].clone(), v["key_id"].clone()),
            (true.into(), "k1".into())
        );
        // Oversized input on stdin is refused, not read without bound.
        let huge = format!("atbus1.{}", "A".repeat(100_000));
        let mut out = Vec::new();
        let r = run_verify(&a, NOW, &mut huge.as_bytes(), &mut out);
        assert!(matches!(
            r,
            Err(TokenCliError::Refused(TokenError::Oversized { .. }))
        ));
    }

    #[test]
    fn secret_sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, format!("  {SECRET}\n")).unwrap();
        let from_file = SecretArgs {
            secret: None,
            secret_file: Some(file),
        };
        assert_eq!(resolve_secret(&from_file, None).unwrap(), SECRET.as_bytes());
        let none = SecretArgs::default();
        assert_eq!(
            resolve_secret(&none, Some(format!("{SECRET}\n"))).unwrap(),
            SECRET.as_bytes()
        );
        assert!(matches!(
            resolve_secret(&none, None),
            Err(TokenCliError::Secret(_))
        ));
        let missing = SecretArgs {
            secret: None,
            secret_file: Some(dir.path().join("absent")),
        };
        assert!(matches!(
            resolve_secret(&missing, None),
            Err(TokenCliError::Secret(_))
        ));
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut out = Vec::new();
        let mut a = issue_args();
        a.secret.secret = Some("short".into());
        assert!(matches!(
            run(&a, NOW, &mut out),
            Err(TokenCliError::Key(KeyError::SecretTooShort { .. }))
        ));
        let mut a = issue_args();
        a.streams = "4-1".into();
        assert!(matches!(
            run(&a, NOW, &mut out),
            Err(TokenCliError::Streams(_))
        ));
        let mut a = issue_args();
        a.name = "Bad_Name".into();
        assert!(matches!(
            run(&a, NOW, &mut out),
            Err(TokenCliError::Issue(_))
        ));
        let mut a = issue_args();
        a.ttl = None;
        a.expires = Some(NOW);
        assert!(matches!(
            run(&a, NOW, &mut out),
            Err(TokenCliError::Lifetime(_))
        ));
        assert!(out.is_empty(), "nothing is printed on error");
        let mut v = verify_args("x");
        v.keys = vec!["no-colon".into()];
        assert!(matches!(verify(&v, NOW).0, Err(TokenCliError::Secret(_))));
    }

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("90s").unwrap(), 90);
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("12h").unwrap(), 43_200);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        for bad in ["", "0", "1w", "h", "-5", "99999999999999999999d", "3661d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clap_parses_the_documented_flags() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: TokenCommand,
        }
        let cli = Cli::try_parse_from([
            "token",
            "issue",
            "--key-id",
            "k1",
            "--secret-file",
            "/s",
            "--name",
            "n",
            "--streams",
            "*",
            "--namespace",
            "ns",
            "--ttl",
            "1d",
            "--json",
        ])
        .unwrap();
        let TokenCommand::Issue(a) = cli.cmd else {
            panic!("not issue");
        };
        assert_eq!(a.secret.secret_file.as_deref(), Some(Path::new("/s")));
        assert!(a.json && a.ttl.as_deref() == Some("1d"));
        assert!(
            Cli::try_parse_from([
                "token",
                "issue",
                "--key-id",
                "k",
                "--name",
                "n",
                "--streams",
                "*",
                "--ttl",
                "1h",
                "--expires",
                "5",
            ])
            .is_err(),
            "--ttl and --expires conflict"
        );
        let cli = Cli::try_parse_from([
            "token", "verify", "-", "--key", "a:b", "--key", "c:d", "--stream", "3",
        ])
        .unwrap();
        let TokenCommand::Verify(v) = cli.cmd else {
            panic!("not verify");
        };
        assert_eq!((v.keys.len(), v.streams.as_slice()), (2, &[3i64][..]));
    }
}
