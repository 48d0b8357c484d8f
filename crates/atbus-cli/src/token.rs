//! Access tokens on the command line: `KEY_ID:SECRET`, from `--token`, `--token-file` or the
//! `ATBUS_TOKEN` environment variable.

use std::path::Path;

use atbus_node::AccessToken;

/// Key id of a token written without one (no colon).
pub const DEFAULT_KEY_ID: &str = "default";

/// Environment variable read when neither `--token` nor `--token-file` is given.
pub const TOKEN_ENV: &str = "ATBUS_TOKEN";

/// Parses `KEY_ID:SECRET` (split at the first colon); without a colon the whole text is the
/// secret and the key id is [`DEFAULT_KEY_ID`]. Lengths are checked when the node starts.
pub fn parse(text: &str) -> AccessToken {
    match text.split_once(':') {
        Some((key_id, secret)) => AccessToken::new(key_id, secret.as_bytes()),
        None => AccessToken::new(DEFAULT_KEY_ID, text.as_bytes()),
    }
}

/// Reads a token file: one token per line; blank lines and lines starting with `#` are skipped,
/// surrounding whitespace is trimmed.
pub fn read_file(path: &Path) -> std::io::Result<Vec<AccessToken>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse)
        .collect())
}

/// The tokens to use: `--token` values, else the `--token-file`, else `ATBUS_TOKEN` (one
/// token), else none (open links).
pub fn collect(
    tokens: &[String],
    token_file: Option<&Path>,
) -> Result<Vec<AccessToken>, std::io::Error> {
    if !tokens.is_empty() {
        return Ok(tokens.iter().map(|t| parse(t)).collect());
    }
    if let Some(path) = token_file {
        return read_file(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("token file {}: {e}", path.display()))
        });
    }
    match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => Ok(vec![parse(t.trim())]),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_defaults_without_colon() {
        assert_eq!(parse("s3cret").key_id(), "default");
        assert_eq!(parse("k1:a:b").key_id(), "k1");
        assert_eq!(parse("k1:a:b"), AccessToken::new("k1", &b"a:b"[..]));
    }
}
