//! Kubernetes name, label and annotation rules, and the error that names the offending field.
//!
//! The checks follow `k8s.io/apimachinery/pkg/util/validation`: `IsDNS1123Subdomain`,
//! `IsDNS1123Label`, `IsQualifiedName` (label and annotation keys), `IsValidLabelValue` and the
//! annotation size limit. One deliberate difference: a DNS-1123 subdomain here also limits each
//! dot-separated label to 63 bytes, as RFC 1123 does (Kubernetes only checks the total length).

use std::collections::BTreeMap;
use std::fmt;

use crate::address::AddressError;

/// Longest DNS-1123 subdomain (node names, key prefixes): 253 bytes.
pub const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
/// Longest DNS-1123 label (namespace names, each part of a subdomain): 63 bytes.
pub const DNS1123_LABEL_MAX_LEN: usize = 63;
/// Longest name part of a qualified name (label or annotation key, after the `/`): 63 bytes.
pub const QUALIFIED_NAME_MAX_LEN: usize = 63;
/// Longest label value: 63 bytes (the empty value is allowed).
pub const LABEL_VALUE_MAX_LEN: usize = 63;
/// Largest total size of all annotation keys and values of one record (Kubernetes
/// `TotalAnnotationSizeLimitB`): 256 KiB.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 262_144;
/// Key prefix reserved for keys the library itself defines; records may not use it (nor any
/// subdomain of it) in labels or annotations.
pub const RESERVED_KEY_PREFIX: &str = "atbus.io";

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The field must not be empty.
    #[error("must not be empty")]
    Empty,
    /// The field is longer than its limit.
    #[error("is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Actual length in bytes.
        len: usize,
        /// Limit in bytes.
        max: usize,
    },
    /// Not a DNS-1123 subdomain.
    #[error(
        "must be a DNS-1123 subdomain: lowercase alphanumeric characters, '-' or '.', each \
         dot-separated part starting and ending with an alphanumeric character"
    )]
    NotDnsSubdomain,
    /// Not a DNS-1123 label.
    #[error(
        "must be a DNS-1123 label: lowercase alphanumeric characters or '-', starting and \
         ending with an alphanumeric character"
    )]
    NotDnsLabel,
    /// A qualified name holds more than one `/`.
    #[error("must contain at most one '/' (an optional DNS subdomain prefix and a name)")]
    TooManySlashes,
    /// A qualified name has a `/` with nothing before it.
    #[error("prefix before '/' must not be empty")]
    EmptyPrefix,
    /// The prefix of a qualified name is longer than 253 bytes.
    #[error("prefix is {len} bytes long, the limit is 253")]
    PrefixTooLong {
        /// Actual prefix length in bytes.
        len: usize,
    },
    /// The prefix of a qualified name is not a DNS-1123 subdomain.
    #[error("prefix must be a DNS-1123 subdomain (lowercase alphanumeric, '-', '.')")]
    PrefixNotDnsSubdomain,
    /// A qualified name has an empty name part.
    #[error("name part must not be empty")]
    EmptyName,
    /// The name part of a qualified name is longer than 63 bytes.
    #[error("name part is {len} bytes long, the limit is 63")]
    NameTooLong {
        /// Actual name-part length in bytes.
        len: usize,
    },
    /// The name part of a qualified name has a bad character or a bad first/last character.
    #[error(
        "name part must consist of alphanumeric characters, '-', '_' or '.', and start and end \
         with an alphanumeric character"
    )]
    NotQualifiedName,
    /// Not a valid label value.
    #[error(
        "label value must be empty or consist of alphanumeric characters, '-', '_' or '.', and \
         start and end with an alphanumeric character"
    )]
    NotLabelValue,
    /// The key uses the prefix reserved for the library.
    #[error("prefix {prefix:?} is reserved for keys defined by atbus")]
    ReservedPrefix {
        /// The reserved prefix that was used.
        prefix: String,
    },
    /// The label key names a record field that selectors reach directly.
    #[error("key {key:?} is reserved: selectors use it for the record field of that name")]
    ReservedKey {
        /// The reserved key.
        key: String,
    },
    /// Too many entries in a list or map.
    #[error("has {count} entries, the limit is {max}")]
    TooMany {
        /// Actual number of entries.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// The same entry appears twice.
    #[error("duplicate entry {value:?}")]
    Duplicate {
        /// The repeated value.
        value: String,
    },
    /// Annotations are larger than [`TOTAL_ANNOTATION_SIZE_LIMIT`] in total.
    #[error("total size of keys and values is {size} bytes, the limit is {max}")]
    AnnotationsTooLarge {
        /// Total size in bytes.
        size: usize,
        /// Limit in bytes.
        max: usize,
    },
    /// A host name or IP literal with characters a host name cannot have.
    #[error(
        "must be a host name or an IP address (alphanumeric, '-', '.', ':', '_', '[', ']', '%')"
    )]
    NotHostname,
    /// A key id with characters outside `[A-Za-z0-9._:-]`.
    #[error("key id must consist of alphanumeric characters, '.', '_', ':' or '-'")]
    NotKeyId,
    /// Text with control characters or spaces where only printable ASCII is allowed.
    #[error("must consist of printable ASCII characters without spaces")]
    NotPrintable,
    /// A reference (relay, match) that names nothing.
    #[error("must set at least one of `name` or `metadata`")]
    EmptyReference,
    /// A gateway address that does not parse.
    #[error("{0}")]
    Address(#[from] AddressError),
}

/// A problem together with the path of the field that has it, e.g. `metadata.labels["bad key"]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// Path of the offending field, in JSON field names.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// Every problem found in one record, in field order; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(Vec<ValidationError>);

impl ValidationErrors {
    /// All problems, in the order of the record's fields.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }

    /// The first problem.
    pub fn first(&self) -> Option<&ValidationError> {
        self.0.first()
    }

    /// Whether any problem is reported for exactly this field path.
    pub fn has_field(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects problems while a record is walked; turns into `Result` at the end.
#[derive(Debug, Default)]
pub(crate) struct Collector(Vec<ValidationError>);

impl Collector {
    pub(crate) fn check(&mut self, field: impl FnOnce() -> String, r: Result<(), Problem>) {
        if let Err(problem) = r {
            self.0.push(ValidationError {
                field: field(),
                problem,
            });
        }
    }

    pub(crate) fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

pub(crate) fn check_len(s: &str, max: usize) -> Result<(), Problem> {
    if s.len() > max {
        Err(Problem::TooLong { len: s.len(), max })
    } else {
        Ok(())
    }
}

/// At most `max` items.
pub(crate) fn check_count(count: usize, max: usize) -> Result<(), Problem> {
    if count > max {
        Err(Problem::TooMany { count, max })
    } else {
        Ok(())
    }
}

/// One DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes.
pub fn check_dns1123_label(s: &str) -> Result<(), Problem> {
    if s.is_empty() {
        return Err(Problem::Empty);
    }
    check_len(s, DNS1123_LABEL_MAX_LEN)?;
    if dns_label_chars_ok(s) {
        Ok(())
    } else {
        Err(Problem::NotDnsLabel)
    }
}

fn dns_label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            is_lower_alnum(f)
                && is_lower_alnum(l)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 bytes in total.
pub fn check_dns1123_subdomain(s: &str) -> Result<(), Problem> {
    if s.is_empty() {
        return Err(Problem::Empty);
    }
    check_len(s, DNS1123_SUBDOMAIN_MAX_LEN)?;
    if s.split('.')
        .all(|part| part.len() <= DNS1123_LABEL_MAX_LEN && dns_label_chars_ok(part))
    {
        Ok(())
    } else {
        Err(Problem::NotDnsSubdomain)
    }
}

fn qualified_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A qualified name (label or annotation key): `[prefix/]name`, where the optional prefix is a
/// DNS-1123 subdomain and the name is at most 63 bytes of `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn check_qualified_name(s: &str) -> Result<(), Problem> {
    if s.is_empty() {
        return Err(Problem::Empty);
    }
    let mut parts = s.split('/');
    let (prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, _) => (None, name),
        (Some(prefix), Some(name), None) => (Some(prefix), name),
        _ => return Err(Problem::TooManySlashes),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(Problem::EmptyPrefix);
        }
        if prefix.len() > DNS1123_SUBDOMAIN_MAX_LEN {
            return Err(Problem::PrefixTooLong { len: prefix.len() });
        }
        if check_dns1123_subdomain(prefix).is_err() {
            return Err(Problem::PrefixNotDnsSubdomain);
        }
    }
    if name.is_empty() {
        return Err(Problem::EmptyName);
    }
    if name.len() > QUALIFIED_NAME_MAX_LEN {
        return Err(Problem::NameTooLong { len: name.len() });
    }
    if !qualified_chars_ok(name) {
        return Err(Problem::NotQualifiedName);
    }
    Ok(())
}

/// A label value: empty, or at most 63 bytes of `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn check_label_value(s: &str) -> Result<(), Problem> {
    check_len(s, LABEL_VALUE_MAX_LEN)?;
    if s.is_empty() || qualified_chars_ok(s) {
        Ok(())
    } else {
        Err(Problem::NotLabelValue)
    }
}

/// The prefix of a qualified key, if it has one.
pub fn key_prefix(key: &str) -> Option<&str> {
    key.split_once('/').map(|(p, _)| p)
}

/// Rejects keys under [`RESERVED_KEY_PREFIX`] or a subdomain of it.
pub fn check_not_reserved_prefix(key: &str) -> Result<(), Problem> {
    if let Some(prefix) = key_prefix(key) {
        let reserved = prefix == RESERVED_KEY_PREFIX
            || prefix
                .strip_suffix(RESERVED_KEY_PREFIX)
                .is_some_and(|head| head.ends_with('.'));
        if reserved {
            return Err(Problem::ReservedPrefix {
                prefix: prefix.to_owned(),
            });
        }
    }
    Ok(())
}

/// A host name or IP literal as published in `host.hostname` (not necessarily resolvable).
pub fn check_hostname(s: &str) -> Result<(), Problem> {
    check_len(s, DNS1123_SUBDOMAIN_MAX_LEN)?;
    if s.bytes().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b':' | b'_' | b'[' | b']' | b'%')
    }) {
        Ok(())
    } else {
        Err(Problem::NotHostname)
    }
}

/// Printable ASCII without spaces, at most `max` bytes.
pub(crate) fn check_printable(s: &str, max: usize) -> Result<(), Problem> {
    check_len(s, max)?;
    if s.bytes().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Problem::NotPrintable)
    }
}

/// Checks a label map: count, keys (qualified, not reserved), values.
pub(crate) fn check_labels(
    c: &mut Collector,
    path: &str,
    labels: &BTreeMap<String, String>,
    max: usize,
    reserved_keys: &[&str],
) {
    c.check(|| path.to_owned(), check_count(labels.len(), max));
    for (k, v) in labels {
        let field = || format!("{path}[{k:?}]");
        let key_check = check_qualified_name(k)
            .and_then(|()| check_not_reserved_prefix(k))
            .and_then(|()| {
                if reserved_keys.contains(&k.as_str()) {
                    Err(Problem::ReservedKey { key: k.clone() })
                } else {
                    Ok(())
                }
            });
        let failed = key_check.is_err();
        c.check(field, key_check);
        if !failed {
            c.check(field, check_label_value(v));
        }
    }
}

/// Checks an annotation map: keys as label keys, total size.
pub(crate) fn check_annotations(
    c: &mut Collector,
    path: &str,
    annotations: &BTreeMap<String, String>,
) {
    let mut size = 0usize;
    for (k, v) in annotations {
        size = size.saturating_add(k.len()).saturating_add(v.len());
        c.check(
            || format!("{path}[{k:?}]"),
            check_qualified_name(k).and_then(|()| check_not_reserved_prefix(k)),
        );
    }
    if size > TOTAL_ANNOTATION_SIZE_LIMIT {
        c.check(
            || path.to_owned(),
            Err(Problem::AnnotationsTooLarge {
                size,
                max: TOTAL_ANNOTATION_SIZE_LIMIT,
            }),
        );
    }
}
