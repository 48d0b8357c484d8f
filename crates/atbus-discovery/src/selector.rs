//! Label selectors with Kubernetes semantics, over labels and a few record fields.
//!
//! A selector is `matchLabels` plus `matchExpressions` (`In`, `NotIn`, `Exists`,
//! `DoesNotExist`); every part must hold. The text form is Kubernetes' label-selector string:
//! `kind=echo,area.region in (eu,us),!debug,tier notin (a),env`.
//!
//! Keys reach labels, except the [`FIELD_KEYS`](crate::record::FIELD_KEYS) (`name`, `namespace_name`, `api_version`,
//! `kind`, `group`), which always reach the record field of that name; labels may not use those
//! keys, so there is never a doubt which one a key means. An empty field counts as missing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::record::NodeRecord;
use crate::validate::{Problem, check_dns1123_subdomain, check_label_value, check_qualified_name};

/// Longest selector text accepted by [`Selector::parse`].
pub const SELECTOR_MAX_LEN: usize = 4096;
/// Most requirements (labels plus expressions) in one selector.
pub const SELECTOR_MAX_REQUIREMENTS: usize = 64;
/// Most values in one `In`/`NotIn` expression.
pub const SELECTOR_MAX_VALUES: usize = 64;

/// How an expression compares a key's value with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// The key is present and its value is one of the values.
    In,
    /// The key is missing, or its value is none of the values.
    NotIn,
    /// The key is present (any value, even empty).
    Exists,
    /// The key is missing.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// Label key or field key.
    pub key: String,
    /// Comparison.
    pub operator: Operator,
    /// Values for `In`/`NotIn` (at least one); empty for `Exists`/`DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A label selector. The empty selector matches every record; an absent one (`None`, see
/// [`matches_optional`]) matches none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Selector {
    /// Keys that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Expressions that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// Why a selector is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The text is longer than [`SELECTOR_MAX_LEN`].
    #[error("selector is {len} bytes long, the limit is {SELECTOR_MAX_LEN}")]
    TooLong {
        /// Actual length.
        len: usize,
    },
    /// The text does not follow the grammar.
    #[error("selector syntax error at byte {pos}: expected {expected}, found {found}")]
    Syntax {
        /// Byte offset in the text.
        pos: usize,
        /// What the parser wanted.
        expected: &'static str,
        /// What it found (`end of input` at the end).
        found: String,
    },
    /// A key or value breaks the naming rules, or a values list has the wrong size.
    #[error("{field}: {problem}")]
    Invalid {
        /// Path of the offending part, e.g. `match_expressions[1].values[0]`.
        field: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// `Exists`/`DoesNotExist` with values.
    #[error("{field}: must be empty for Exists and DoesNotExist")]
    UnexpectedValues {
        /// Path of the values list.
        field: String,
    },
}

/// The value a selector key resolves to in `record`: a field for [`FIELD_KEYS`](crate::record::FIELD_KEYS) (missing when
/// empty), otherwise the label.
pub fn record_value<'a>(record: &'a NodeRecord, key: &str) -> Option<&'a str> {
    let field = match key {
        "name" => &record.name,
        "namespace_name" => &record.metadata.namespace_name,
        "api_version" => &record.metadata.api_version,
        "kind" => &record.metadata.kind,
        "group" => &record.metadata.group,
        _ => return record.metadata.labels.get(key).map(String::as_str),
    };
    (!field.is_empty()).then_some(field.as_str())
}

/// Kubernetes semantics for an optional selector: `None` matches nothing.
pub fn matches_optional(selector: Option<&Selector>, record: &NodeRecord) -> bool {
    selector.is_some_and(|s| s.matches(record))
}

impl Requirement {
    /// Whether the requirement holds for a key whose value is `value` (`None` = missing).
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn => value.is_none_or(|v| self.values.iter().all(|x| x != v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl Selector {
    /// The empty selector: matches every record.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether the selector has no requirement (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether every requirement holds for `record`.
    pub fn matches(&self, record: &NodeRecord) -> bool {
        self.matches_with(|k| record_value(record, k))
    }

    /// Whether every requirement holds, looking keys up with `lookup`.
    pub fn matches_with<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| lookup(k) == Some(v.as_str()))
            && self
                .match_expressions
                .iter()
                .all(|r| r.matches_value(lookup(&r.key)))
    }

    /// Checks keys, values and sizes.
    pub fn validate(&self) -> Result<(), SelectorError> {
        let count = self.match_labels.len() + self.match_expressions.len();
        if count > SELECTOR_MAX_REQUIREMENTS {
            return Err(SelectorError::Invalid {
                field: "match_expressions".into(),
                problem: Problem::TooMany {
                    count,
                    max: SELECTOR_MAX_REQUIREMENTS,
                },
            });
        }
        let invalid = |field: String, problem| SelectorError::Invalid { field, problem };
        for (k, v) in &self.match_labels {
            check_qualified_name(k).map_err(|p| invalid(format!("match_labels[{k:?}]"), p))?;
            check_value(k, v).map_err(|p| invalid(format!("match_labels[{k:?}]"), p))?;
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let path = format!("match_expressions[{i}]");
            check_qualified_name(&r.key).map_err(|p| invalid(format!("{path}.key"), p))?;
            match r.operator {
                Operator::In | Operator::NotIn => {
                    if r.values.is_empty() {
                        return Err(invalid(format!("{path}.values"), Problem::Empty));
                    }
                    if r.values.len() > SELECTOR_MAX_VALUES {
                        return Err(invalid(
                            format!("{path}.values"),
                            Problem::TooMany {
                                count: r.values.len(),
                                max: SELECTOR_MAX_VALUES,
                            },
                        ));
                    }
                    for (j, v) in r.values.iter().enumerate() {
                        check_value(&r.key, v)
                            .map_err(|p| invalid(format!("{path}.values[{j}]"), p))?;
                    }
                }
                Operator::Exists | Operator::DoesNotExist => {
                    if !r.values.is_empty() {
                        return Err(SelectorError::UnexpectedValues {
                            field: format!("{path}.values"),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Parses the Kubernetes label-selector text syntax and validates the result.
    ///
    /// `k=v` and `k==v` become `In [v]`, `k!=v` becomes `NotIn [v]`, `k` is `Exists`, `!k` is
    /// `DoesNotExist`; all go to `match_expressions` in text order. Empty text is the empty
    /// selector.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.len() > SELECTOR_MAX_LEN {
            return Err(SelectorError::TooLong { len: text.len() });
        }
        let mut p = Parser {
            tokens: lex(text),
            at: 0,
            end: text.len(),
        };
        let mut sel = Selector::default();
        if p.peek().is_none() {
            return Ok(sel);
        }
        loop {
            sel.match_expressions.push(p.requirement()?);
            if sel.match_expressions.len() > SELECTOR_MAX_REQUIREMENTS {
                break;
            }
            match p.next() {
                None => break,
                Some((_, Tok::Comma)) => {}
                Some((pos, t)) => return Err(syntax(pos, "',' or end of input", &t)),
            }
        }
        sel.validate()?;
        Ok(sel)
    }
}

fn check_value(key: &str, value: &str) -> Result<(), Problem> {
    match key {
        "name" => check_dns1123_subdomain(value),
        "api_version" => check_qualified_name(value),
        _ => check_label_value(value),
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        match (self.operator, self.values.as_slice()) {
            (Operator::Exists, _) => write!(f, "{k}"),
            (Operator::DoesNotExist, _) => write!(f, "!{k}"),
            (Operator::In, [v]) => write!(f, "{k}={v}"),
            (Operator::NotIn, [v]) => write!(f, "{k}!={v}"),
            (op, values) => {
                let op = if op == Operator::In { "in" } else { "notin" };
                write!(f, "{k} {op} ({})", values.join(","))
            }
        }
    }
}

impl fmt::Display for Selector {
    /// The text form; [`Selector::parse`] of it selects the same records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.match_labels {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        for r in &self.match_expressions {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s:?}"),
            Tok::Comma => f.write_str("','"),
            Tok::Open => f.write_str("'('"),
            Tok::Close => f.write_str("')'"),
            Tok::Eq => f.write_str("'='"),
            Tok::DoubleEq => f.write_str("'=='"),
            Tok::NotEq => f.write_str("'!='"),
            Tok::Bang => f.write_str("'!'"),
        }
    }
}

fn is_special(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b',' | b'(' | b')' | b'=' | b'!')
}

fn lex(text: &str) -> Vec<(usize, Tok<'_>)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let (tok, len) = match c {
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b',' => (Tok::Comma, 1),
            b'(' => (Tok::Open, 1),
            b')' => (Tok::Close, 1),
            b'=' if next == Some(b'=') => (Tok::DoubleEq, 2),
            b'=' => (Tok::Eq, 1),
            b'!' if next == Some(b'=') => (Tok::NotEq, 2),
            b'!' => (Tok::Bang, 1),
            _ => {
                let len = b[i..].iter().take_while(|&&c| !is_special(c)).count();
                // `is_special` only matches ASCII bytes, so `i..i+len` ends on a char boundary.
                (Tok::Ident(&text[i..i + len]), len)
            }
        };
        out.push((i, tok));
        i += len;
    }
    out
}

struct Parser<'a> {
    tokens: Vec<(usize, Tok<'a>)>,
    at: usize,
    end: usize,
}

fn syntax(pos: usize, expected: &'static str, found: &Tok<'_>) -> SelectorError {
    SelectorError::Syntax {
        pos,
        expected,
        found: found.to_string(),
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok<'a>> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn next(&mut self) -> Option<(usize, Tok<'a>)> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn eof(&self, expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            pos: self.end,
            expected,
            found: "end of input".into(),
        }
    }

    fn ident(&mut self, expected: &'static str) -> Result<&'a str, SelectorError> {
        match self.next() {
            Some((_, Tok::Ident(s))) => Ok(s),
            Some((pos, t)) => Err(syntax(pos, expected, &t)),
            None => Err(self.eof(expected)),
        }
    }

    /// A value after `=`, `==` or `!=`: an identifier, or empty before `,` or the end.
    fn value(&mut self) -> Result<&'a str, SelectorError> {
        match self.peek() {
            None | Some(Tok::Comma) => Ok(""),
            _ => self.ident("a value"),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let req = |key: &str, operator, values| Requirement {
            key: key.to_owned(),
            operator,
            values,
        };
        if self.peek() == Some(&Tok::Bang) {
            self.at += 1;
            let key = self.ident("a key after '!'")?;
            return Ok(req(key, Operator::DoesNotExist, Vec::new()));
        }
        let key = self.ident("a key or '!'")?;
        let op = match self.peek() {
            None | Some(Tok::Comma) => return Ok(req(key, Operator::Exists, Vec::new())),
            Some(Tok::Eq | Tok::DoubleEq) => Operator::In,
            Some(Tok::NotEq) => Operator::NotIn,
            Some(Tok::Ident("in")) => {
                self.at += 1;
                return Ok(req(key, Operator::In, self.value_set()?));
            }
            Some(Tok::Ident("notin")) => {
                self.at += 1;
                return Ok(req(key, Operator::NotIn, self.value_set()?));
            }
            Some(_) => {
                let (pos, t) = self.tokens[self.at].clone();
                return Err(syntax(
                    pos,
                    "'=', '==', '!=', 'in', 'notin', ',' or end",
                    &t,
                ));
            }
        };
        self.at += 1;
        let v = self.value()?;
        Ok(req(key, op, vec![v.to_owned()]))
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Some((_, Tok::Open)) => {}
            Some((pos, t)) => return Err(syntax(pos, "'('", &t)),
            None => return Err(self.eof("'('")),
        }
        let mut values = Vec::new();
        if self.peek() == Some(&Tok::Close) {
            self.at += 1;
            return Ok(values);
        }
        loop {
            let v = match self.peek() {
                Some(Tok::Comma | Tok::Close) => "",
                _ => self.ident("a value")?,
            };
            values.push(v.to_owned());
            match self.next() {
                Some((_, Tok::Comma)) => {}
                Some((_, Tok::Close)) => return Ok(values),
                Some((pos, t)) => return Err(syntax(pos, "',' or ')'", &t)),
                None => return Err(self.eof("',' or ')'")),
            }
        }
    }
}
