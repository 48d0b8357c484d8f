//! Routing by discovery for the command line: a record cache fed by a watch, the addresses a
//! caller uses to reach a relay, relay references resolved to records, and selector targets
//! resolved to one node by rendezvous hashing.

use std::collections::BTreeMap;

use atbus_discovery::{
    DiscoveryEvent, NodeRecord, PlanPolicy, RelayRef, RequestId, Route, Selector, plan_connection,
    rendezvous,
};
use atbus_transport_mio::Url;

/// The `metadata.kind` of a relay's record.
pub const RELAY_KIND: &str = "relay";

/// Every record a watch reports, by name.
#[derive(Debug, Default)]
pub struct RecordCache {
    /// The watch feeding the cache, once opened.
    pub watch: Option<RequestId>,
    records: BTreeMap<String, NodeRecord>,
}

/// What an event did to a [`RecordCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheChange {
    /// The event was not for the cache's watch.
    None,
    /// The cache changed.
    Changed,
    /// The watch is gone (queue overflow, cancelled): open a new one.
    Rewatch,
}

impl RecordCache {
    /// An empty cache with no watch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one discovery event.
    pub fn apply(&mut self, event: &DiscoveryEvent) -> CacheChange {
        let ours = |id: &RequestId| self.watch == Some(*id);
        match event {
            DiscoveryEvent::List { request, records } if ours(request) => {
                self.records = records
                    .iter()
                    .map(|r| (r.name.clone(), r.clone()))
                    .collect();
                CacheChange::Changed
            }
            DiscoveryEvent::Put { watch, record } if ours(watch) => {
                self.records.insert(record.name.clone(), (**record).clone());
                CacheChange::Changed
            }
            DiscoveryEvent::Delete { watch, name } if ours(watch) => {
                self.records.remove(name);
                CacheChange::Changed
            }
            DiscoveryEvent::Overflow {
                cancelled_watches, ..
            } if self.watch.is_some_and(|w| cancelled_watches.contains(&w)) => {
                self.watch = None;
                CacheChange::Rewatch
            }
            DiscoveryEvent::Error {
                error: atbus_discovery::DiscoveryError::WatchCancelled { watch, .. },
                ..
            } if ours(watch) => {
                self.watch = None;
                CacheChange::Rewatch
            }
            DiscoveryEvent::Refused { request, .. } if ours(request) => {
                self.watch = None;
                CacheChange::Rewatch
            }
            _ => CacheChange::None,
        }
    }

    /// The record called `name`.
    pub fn get(&self, name: &str) -> Option<&NodeRecord> {
        self.records.get(name)
    }

    /// Every record, ordered by name.
    pub fn records(&self) -> impl Iterator<Item = &NodeRecord> {
        self.records.values()
    }
}

/// The record a relay reference names: by name (its kind is not checked), or the first relay
/// record (kind `relay`, ordered by name) whose metadata contains the reference's.
pub fn resolve_relay<'a>(
    records: impl IntoIterator<Item = &'a NodeRecord>,
    relay: &RelayRef,
) -> Option<&'a NodeRecord> {
    records.into_iter().find(|r| {
        relay.name.as_ref().is_none_or(|n| *n == r.name)
            && (relay.name.is_some() || r.metadata.kind == RELAY_KIND)
            && relay
                .metadata
                .as_ref()
                .is_none_or(|m| m.matches(&r.metadata))
    })
}

/// The addresses `local` may dial to reach `target` directly, best first (the connection
/// planner's direct candidates; relays left out).
pub fn direct_urls(local: &NodeRecord, target: &NodeRecord) -> Vec<Url> {
    let policy = PlanPolicy {
        upstream_relay: None,
        relay_fallback: false,
        ..PlanPolicy::default()
    };
    plan_connection(local, target, &policy)
        .into_iter()
        .filter_map(|c| match c.route {
            Route::Direct(a) => a.to_string().parse().ok(),
            Route::Relay(_) => None,
        })
        .collect()
}

/// The ways for `local` to reach `target`, best first: the connection planner's candidates
/// under `policy`, each relay candidate resolved among `records` to the addresses its record
/// gives `local`. The second list says which planned candidates could not be used and why.
pub fn plan_hops(
    local: &NodeRecord,
    target: &NodeRecord,
    records: &[NodeRecord],
    policy: &PlanPolicy,
) -> (Vec<crate::send::Hop>, Vec<String>) {
    let (mut hops, mut skipped) = (Vec::new(), Vec::new());
    for candidate in plan_connection(local, target, policy) {
        match &candidate.route {
            Route::Direct(address) => match address.to_string().parse::<Url>() {
                Ok(url) => hops.push(crate::send::Hop {
                    url,
                    relay: None,
                    why: candidate.to_string(),
                }),
                Err(err) => skipped.push(format!("{candidate}: {err}")),
            },
            Route::Relay(reference) => {
                let Some(relay) = resolve_relay(records, reference) else {
                    skipped.push(format!("{candidate}: no such relay record"));
                    continue;
                };
                let urls = direct_urls(local, relay);
                if urls.is_empty() {
                    skipped.push(format!("{candidate}: no address of {} for us", relay.name));
                }
                for url in urls {
                    hops.push(crate::send::Hop {
                        url,
                        relay: Some(relay.name.clone()),
                        why: candidate.to_string(),
                    });
                }
            }
        }
    }
    (hops, skipped)
}

/// The record among those `selector` matches (the caller's own excluded) that `key` goes to by
/// rendezvous hashing ([`atbus_discovery::rendezvous`]).
pub fn choose_target<'a>(
    records: &'a [NodeRecord],
    selector: &Selector,
    key: &str,
    own_name: &str,
) -> Option<&'a NodeRecord> {
    rendezvous::choose(
        records
            .iter()
            .filter(|r| r.name != own_name && selector.matches(r)),
        key,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use atbus_discovery::{Gateway, GatewayMatch, MetadataMatch};

    fn relay(name: &str, ns: &str, internal: &str, public: &str) -> NodeRecord {
        let mut r = NodeRecord::new(name);
        r.metadata.namespace_name = ns.into();
        r.metadata.kind = RELAY_KIND.into();
        r.gateways.push(Gateway {
            priority: 0,
            address: vec![internal.into()],
            match_rule: GatewayMatch {
                host: None,
                metadata: Some(MetadataMatch {
                    namespace_name: Some(ns.into()),
                    ..MetadataMatch::default()
                }),
            },
        });
        r.gateways.push(Gateway {
            priority: 0,
            address: vec![public.into()],
            match_rule: GatewayMatch::default(),
        });
        r
    }

    #[test]
    fn a_caller_in_another_namespace_gets_the_public_gateway() {
        let r2 = relay("relay2", "ns2", "tcp://10.0.0.2:1", "tcp://192.0.2.2:2");
        let mut a = NodeRecord::new("a");
        a.metadata.namespace_name = "ns1".into();
        let urls: Vec<String> = direct_urls(&a, &r2).iter().map(Url::to_string).collect();
        assert_eq!(urls, ["tcp://192.0.2.2:2"]);
        a.metadata.namespace_name = "ns2".into();
        let urls: Vec<String> = direct_urls(&a, &r2).iter().map(Url::to_string).collect();
        assert_eq!(urls, ["tcp://10.0.0.2:1", "tcp://192.0.2.2:2"]);
    }

    #[test]
    fn relay_references_resolve_by_name_or_metadata() {
        let records = [
            NodeRecord::new("echo"),
            relay("relay1", "ns1", "tcp://10.0.0.1:1", "tcp://192.0.2.1:1"),
            relay("relay2", "ns2", "tcp://10.0.0.2:1", "tcp://192.0.2.2:2"),
        ];
        let by_name = RelayRef {
            name: Some("relay2".into()),
            metadata: None,
        };
        assert_eq!(
            resolve_relay(&records, &by_name).map(|r| r.name.as_str()),
            Some("relay2")
        );
        let by_metadata = RelayRef {
            name: None,
            metadata: Some(MetadataMatch {
                namespace_name: Some("ns2".into()),
                ..MetadataMatch::default()
            }),
        };
        assert_eq!(
            resolve_relay(&records, &by_metadata).map(|r| r.name.as_str()),
            Some("relay2")
        );
        let unknown = RelayRef {
            name: Some("relay9".into()),
            metadata: None,
        };
        assert!(resolve_relay(&records, &unknown).is_none());
    }

    #[test]
    fn a_selector_target_excludes_the_caller_and_is_stable() {
        let mut records: Vec<NodeRecord> = (0..5)
            .map(|i| {
                let mut r = NodeRecord::new(format!("echo-{i}"));
                r.metadata.kind = "echo".into();
                r
            })
            .collect();
        records.push(NodeRecord::new("other"));
        let sel = Selector::parse("kind=echo").expect("selector");
        let first = choose_target(&records, &sel, "client", "client")
            .expect("a target")
            .name
            .clone();
        assert!(first.starts_with("echo-"));
        // An unrelated record joining changes nothing.
        records.push(NodeRecord::new("unrelated"));
        let again = choose_target(&records, &sel, "client", "client").expect("a target");
        assert_eq!(again.name, first);
        // The caller never picks itself.
        let me = choose_target(&records, &sel, "client", &first).expect("a target");
        assert_ne!(me.name, first);
        assert!(
            choose_target(&records, &Selector::parse("kind=none").unwrap(), "k", "x").is_none()
        );
    }
}
