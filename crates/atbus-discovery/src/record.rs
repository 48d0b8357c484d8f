//! The node record a node publishes, its validation and JSON form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::address::GatewayAddress;
use crate::validate::{
    Collector, Problem, ValidationErrors, check_annotations, check_count, check_dns1123_label,
    check_dns1123_subdomain, check_hostname, check_label_value, check_labels, check_len,
    check_printable, check_qualified_name,
};

/// Semantic label/annotation key: region (区域), e.g. `eu`.
pub const KEY_AREA_REGION: &str = "area.region";
/// Semantic label/annotation key: district (地区) inside a region.
pub const KEY_AREA_DISTRICT: &str = "area.district";
/// Semantic label/annotation key: zone id (大区ID), e.g. a game server zone.
pub const KEY_AREA_ZONE_ID: &str = "area.zone_id";

/// Keys that selectors resolve to record fields; labels may not use them.
pub const FIELD_KEYS: [&str; 5] = ["name", "namespace_name", "api_version", "kind", "group"];

/// Largest JSON document [`NodeRecord::from_json`] accepts (1 MiB; etcd's default value limit
/// is 1.5 MiB).
pub const RECORD_JSON_MAX_LEN: usize = 1024 * 1024;

/// Limits on a record that Kubernetes does not fix; each has a default and can be changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLimits {
    /// Most labels in `metadata.labels` or a match's labels (default 64).
    pub max_labels: usize,
    /// Most gateways (default 32).
    pub max_gateways: usize,
    /// Most addresses per gateway (default 16).
    pub max_addresses_per_gateway: usize,
    /// Most key ids in `tokens` (default 32).
    pub max_tokens: usize,
    /// Longest key id (default 128 bytes).
    pub max_key_id_len: usize,
    /// Longest `custom_data` (default 64 KiB).
    pub max_custom_data_len: usize,
    /// Longest `version` (default 64 bytes).
    pub max_version_len: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_labels: 64,
            max_gateways: 32,
            max_addresses_per_gateway: 16,
            max_tokens: 32,
            max_key_id_len: 128,
            max_custom_data_len: 64 * 1024,
            max_version_len: 64,
        }
    }
}

/// What a node publishes about itself; one per globally unique `name`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Globally unique node name (DNS-1123 subdomain).
    pub name: String,
    /// atbus version the node runs.
    #[serde(default)]
    pub version: String,
    /// Opaque application data.
    #[serde(default)]
    pub custom_data: String,
    /// Ids of the keys the node accepts for authentication. Only ids: records are readable by
    /// everyone who can list the registry, so a secret or a verifier of one (a hash of a shared
    /// secret can be brute-forced offline) must never be published here.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Where the node runs.
    #[serde(default)]
    pub host: Host,
    /// Microservice metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// Addresses others may connect to, with who may use them.
    #[serde(default)]
    pub gateways: Vec<Gateway>,
    /// The relay the node recommends for reaching it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_relay: Option<RelayRef>,
}

/// Host information: decides what is same machine and same process.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Host {
    /// Host name or IP; empty means unknown (then nothing counts as the same machine).
    pub hostname: String,
    /// Process id.
    pub pid: u32,
}

/// Microservice metadata, Kubernetes style.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// Namespace (DNS-1123 label, or empty).
    pub namespace_name: String,
    /// Application API version (`[prefix/]name`, or empty).
    pub api_version: String,
    /// Application kind, e.g. `gamesvr` (label-value syntax).
    pub kind: String,
    /// Application group (label-value syntax).
    pub group: String,
    /// Identifying key/value labels.
    pub labels: BTreeMap<String, String>,
    /// Non-identifying key/value annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A set of addresses with a priority and a rule saying which callers may use them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Gateway {
    /// Higher goes first among gateways that apply to a caller.
    pub priority: i32,
    /// `scheme://host:port` strings (see [`GatewayAddress`]).
    pub address: Vec<String>,
    /// Which callers the gateway applies to; empty means everyone.
    #[serde(rename = "match", skip_serializing_if = "GatewayMatch::is_empty")]
    pub match_rule: GatewayMatch,
}

/// Which callers a gateway applies to: every part that is set must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayMatch {
    /// Host fields the caller must have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostMatch>,
    /// Metadata the caller's metadata must contain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataMatch>,
}

/// Host fields to compare; unset fields do not restrict.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostMatch {
    /// Required host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Required process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// A subset of metadata: set scalar fields must be equal, maps must be contained.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataMatch {
    /// Required namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_name: Option<String>,
    /// Required API version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Required kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Required group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Labels the metadata must have with these values (matchLabels).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations the metadata must have with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Names a relay: by node name, by metadata its record must contain, or both.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayRef {
    /// The relay's node name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Metadata the relay's record must contain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataMatch>,
}

/// Why a JSON document is not a valid record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The document is larger than [`RECORD_JSON_MAX_LEN`].
    #[error("record JSON is {len} bytes long, the limit is {RECORD_JSON_MAX_LEN}")]
    TooLarge {
        /// Actual length.
        len: usize,
    },
    /// Not JSON of the record's shape.
    #[error("record JSON does not parse: {0}")]
    Json(#[from] serde_json::Error),
    /// Parsed, but breaks the rules.
    #[error("invalid record: {0}")]
    Invalid(#[from] ValidationErrors),
}

impl NodeRecord {
    /// A record with only a name; everything else empty.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Parses and validates a JSON record (the form stored in etcd).
    pub fn from_json(json: &[u8]) -> Result<Self, RecordError> {
        if json.len() > RECORD_JSON_MAX_LEN {
            return Err(RecordError::TooLarge { len: json.len() });
        }
        let record: Self = serde_json::from_slice(json)?;
        record.validate()?;
        Ok(record)
    }

    /// The JSON form, with field names in snake_case and maps in key order.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Checks every rule with the default [`RecordLimits`].
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.validate_with(&RecordLimits::default())
    }

    /// Checks every rule; reports every problem, each naming its field.
    pub fn validate_with(&self, limits: &RecordLimits) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        c.check(|| "name".into(), check_dns1123_subdomain(&self.name));
        c.check(
            || "version".into(),
            check_printable(&self.version, limits.max_version_len),
        );
        c.check(
            || "custom_data".into(),
            check_len(&self.custom_data, limits.max_custom_data_len),
        );
        self.validate_tokens(&mut c, limits);
        c.check(
            || "host.hostname".into(),
            check_hostname(&self.host.hostname),
        );
        validate_metadata(&mut c, "metadata", &self.metadata, limits);
        c.check(
            || "gateways".into(),
            check_count(self.gateways.len(), limits.max_gateways),
        );
        for (i, gw) in self.gateways.iter().enumerate() {
            validate_gateway(&mut c, &format!("gateways[{i}]"), gw, limits);
        }
        if let Some(relay) = &self.advertise_relay {
            validate_relay_ref(&mut c, "advertise_relay", relay, limits);
        }
        c.finish()
    }

    fn validate_tokens(&self, c: &mut Collector, limits: &RecordLimits) {
        c.check(
            || "tokens".into(),
            check_count(self.tokens.len(), limits.max_tokens),
        );
        for (i, id) in self.tokens.iter().enumerate() {
            let r = if id.is_empty() {
                Err(Problem::Empty)
            } else if id.len() > limits.max_key_id_len {
                check_len(id, limits.max_key_id_len)
            } else if !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
            {
                Err(Problem::NotKeyId)
            } else if self.tokens[..i].contains(id) {
                Err(Problem::Duplicate { value: id.clone() })
            } else {
                Ok(())
            };
            c.check(|| format!("tokens[{i}]"), r);
        }
    }

    /// Gateways that apply to `caller`, with their index in `self.gateways`.
    pub fn gateways_for<'a>(
        &'a self,
        caller: &'a NodeRecord,
    ) -> impl Iterator<Item = (usize, &'a Gateway)> + 'a {
        self.gateways
            .iter()
            .enumerate()
            .filter(move |(_, g)| g.applies_to(caller))
    }
}

fn validate_metadata(c: &mut Collector, path: &str, m: &Metadata, limits: &RecordLimits) {
    if !m.namespace_name.is_empty() {
        c.check(
            || format!("{path}.namespace_name"),
            check_dns1123_label(&m.namespace_name),
        );
    }
    if !m.api_version.is_empty() {
        c.check(
            || format!("{path}.api_version"),
            check_qualified_name(&m.api_version),
        );
    }
    c.check(|| format!("{path}.kind"), check_label_value(&m.kind));
    c.check(|| format!("{path}.group"), check_label_value(&m.group));
    validate_maps(c, path, &m.labels, &m.annotations, limits);
}

/// The labels and annotations of metadata or of a metadata match.
fn validate_maps(
    c: &mut Collector,
    path: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    limits: &RecordLimits,
) {
    check_labels(
        c,
        &format!("{path}.labels"),
        labels,
        limits.max_labels,
        &FIELD_KEYS,
    );
    check_annotations(c, &format!("{path}.annotations"), annotations);
}

fn validate_metadata_match(
    c: &mut Collector,
    path: &str,
    m: &MetadataMatch,
    limits: &RecordLimits,
) {
    if let Some(ns) = &m.namespace_name {
        c.check(|| format!("{path}.namespace_name"), check_dns1123_label(ns));
    }
    if let Some(v) = &m.api_version {
        c.check(|| format!("{path}.api_version"), check_qualified_name(v));
    }
    if let Some(v) = &m.kind {
        c.check(|| format!("{path}.kind"), check_label_value(v));
    }
    if let Some(v) = &m.group {
        c.check(|| format!("{path}.group"), check_label_value(v));
    }
    validate_maps(c, path, &m.labels, &m.annotations, limits);
}

fn validate_gateway(c: &mut Collector, path: &str, gw: &Gateway, limits: &RecordLimits) {
    if gw.address.is_empty() {
        c.check(|| format!("{path}.address"), Err(Problem::Empty));
    }
    c.check(
        || format!("{path}.address"),
        check_count(gw.address.len(), limits.max_addresses_per_gateway),
    );
    for (j, a) in gw.address.iter().enumerate() {
        let r = GatewayAddress::parse(a)
            .map(|_| ())
            .map_err(Problem::from)
            .and_then(|()| {
                if gw.address[..j].contains(a) {
                    Err(Problem::Duplicate { value: a.clone() })
                } else {
                    Ok(())
                }
            });
        c.check(|| format!("{path}.address[{j}]"), r);
    }
    if let Some(h) = &gw.match_rule.host {
        if let Some(name) = &h.hostname {
            let r = if name.is_empty() {
                Err(Problem::Empty)
            } else {
                check_hostname(name)
            };
            c.check(|| format!("{path}.match.host.hostname"), r);
        }
    }
    if let Some(m) = &gw.match_rule.metadata {
        validate_metadata_match(c, &format!("{path}.match.metadata"), m, limits);
    }
}

fn validate_relay_ref(c: &mut Collector, path: &str, r: &RelayRef, limits: &RecordLimits) {
    if r.name.is_none() && r.metadata.is_none() {
        c.check(|| path.to_owned(), Err(Problem::EmptyReference));
    }
    if let Some(name) = &r.name {
        c.check(|| format!("{path}.name"), check_dns1123_subdomain(name));
    }
    if let Some(m) = &r.metadata {
        validate_metadata_match(c, &format!("{path}.metadata"), m, limits);
    }
}

/// Same machine: same `metadata.namespace_name` and same non-empty `host.hostname`.
pub fn same_machine(a: &NodeRecord, b: &NodeRecord) -> bool {
    !a.host.hostname.is_empty()
        && a.host.hostname == b.host.hostname
        && a.metadata.namespace_name == b.metadata.namespace_name
}

/// Same process: [`same_machine`] and the same `host.pid`.
pub fn same_process(a: &NodeRecord, b: &NodeRecord) -> bool {
    same_machine(a, b) && a.host.pid == b.host.pid
}

fn map_contains(whole: &BTreeMap<String, String>, part: &BTreeMap<String, String>) -> bool {
    part.iter().all(|(k, v)| whole.get(k) == Some(v))
}

fn field_eq(want: &Option<String>, have: &str) -> bool {
    want.as_deref().is_none_or(|w| w == have)
}

impl HostMatch {
    /// Whether every set field equals the host's.
    pub fn matches(&self, host: &Host) -> bool {
        field_eq(&self.hostname, &host.hostname) && self.pid.is_none_or(|p| p == host.pid)
    }
}

impl MetadataMatch {
    /// Whether `metadata` contains this subset: set scalars equal, labels and annotations
    /// present with equal values.
    pub fn matches(&self, metadata: &Metadata) -> bool {
        field_eq(&self.namespace_name, &metadata.namespace_name)
            && field_eq(&self.api_version, &metadata.api_version)
            && field_eq(&self.kind, &metadata.kind)
            && field_eq(&self.group, &metadata.group)
            && map_contains(&metadata.labels, &self.labels)
            && map_contains(&metadata.annotations, &self.annotations)
    }
}

impl GatewayMatch {
    /// Whether nothing is set, so the gateway applies to everyone.
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.metadata.is_none()
    }

    /// Whether the caller satisfies every part that is set.
    pub fn matches(&self, caller: &NodeRecord) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(&caller.host))
            && self
                .metadata
                .as_ref()
                .is_none_or(|m| m.matches(&caller.metadata))
    }
}

impl Gateway {
    /// Whether `caller` may use this gateway.
    pub fn applies_to(&self, caller: &NodeRecord) -> bool {
        self.match_rule.matches(caller)
    }

    /// Whether the gateway is restricted to callers of `namespace` (an internal address).
    pub fn is_internal_to(&self, namespace: &str) -> bool {
        self.match_rule
            .metadata
            .as_ref()
            .and_then(|m| m.namespace_name.as_deref())
            == Some(namespace)
    }
}

impl RelayRef {
    /// Whether `record` is the relay this reference names (an empty reference names nothing).
    pub fn matches(&self, record: &NodeRecord) -> bool {
        if self.name.is_none() && self.metadata.is_none() {
            return false;
        }
        self.name.as_deref().is_none_or(|n| n == record.name)
            && self
                .metadata
                .as_ref()
                .is_none_or(|m| m.matches(&record.metadata))
    }
}
