//! Connection planning: where to connect to reach a target node, best first.
//!
//! Rules, in order (every address comes from a gateway of the target that applies to the
//! caller, see [`Gateway::applies_to`](crate::Gateway::applies_to)):
//!
//! 1. same process ([`same_process`]): its `mem://` addresses;
//! 2. same machine ([`same_machine`]): its `unix://` addresses;
//! 3. its `tcp://`/`udp://` addresses: gateways internal to the caller's namespace first (when
//!    caller and target share it), then by priority, **higher number first**, then in publish
//!    order; addresses of one gateway keep their order;
//! 4. relays: the caller's upstream relay and the target's advertised relay, in the order
//!    [`RelayPreference`] says — after the direct addresses as fallbacks, or only when there is no
//!    direct address if [`PlanPolicy::relay_fallback`] is off.
//!
//! Planning to oneself (same name) gives no candidate. Addresses that do not parse and
//! duplicates are skipped.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::{GatewayAddress, Scheme};
use crate::record::{NodeRecord, RelayRef, same_machine, same_process};

/// Which relay to try first when a target is reached through a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayPreference {
    /// The caller's own upstream relay first (`"own"`, the default).
    #[default]
    Own,
    /// The target's advertised relay first (`"target"`).
    Target,
}

/// The caller's local policy for planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPolicy {
    /// The caller's upstream relay, if it has one.
    #[serde(default)]
    pub upstream_relay: Option<RelayRef>,
    /// Which relay goes first.
    #[serde(default)]
    pub relay_preference: RelayPreference,
    /// List relays after direct addresses as fallbacks (default `true`); when `false`, relays
    /// are listed only if there is no direct address.
    #[serde(default = "default_true")]
    pub relay_fallback: bool,
}

fn default_true() -> bool {
    true
}

impl Default for PlanPolicy {
    fn default() -> Self {
        Self {
            upstream_relay: None,
            relay_preference: RelayPreference::Own,
            relay_fallback: true,
        }
    }
}

/// Where a candidate goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Connect straight to this address.
    Direct(GatewayAddress),
    /// Go through the relay this reference names (resolve it with discovery).
    Relay(RelayRef),
}

/// Why a candidate is in the plan, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Same process: in-process channel.
    SameProcess {
        /// Index of the gateway in the target's record.
        gateway: usize,
    },
    /// Same machine: Unix socket.
    SameMachine {
        /// Index of the gateway in the target's record.
        gateway: usize,
    },
    /// A gateway restricted to the caller's namespace (internal address).
    InternalGateway {
        /// Index of the gateway in the target's record.
        gateway: usize,
        /// Its priority.
        priority: i32,
    },
    /// Another gateway that applies to the caller (e.g. an ingress address).
    Gateway {
        /// Index of the gateway in the target's record.
        gateway: usize,
        /// Its priority.
        priority: i32,
    },
    /// The caller's upstream relay (`PlanPolicy::upstream_relay`).
    OwnRelay,
    /// The target's `advertise_relay`.
    TargetRelay,
}

/// One way to reach the target and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Where to connect.
    pub route: Route,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Route::Direct(a) => write!(f, "{a}")?,
            Route::Relay(r) => match &r.name {
                Some(n) => write!(f, "relay {n}")?,
                None => f.write_str("relay by metadata")?,
            },
        }
        match self.reason {
            Reason::SameProcess { gateway } => write!(f, " (same process, gateway {gateway})"),
            Reason::SameMachine { gateway } => write!(f, " (same machine, gateway {gateway})"),
            Reason::InternalGateway { gateway, priority } => write!(
                f,
                " (internal address, gateway {gateway}, priority {priority})"
            ),
            Reason::Gateway { gateway, priority } => {
                write!(f, " (gateway {gateway}, priority {priority})")
            }
            Reason::OwnRelay => f.write_str(" (own upstream relay)"),
            Reason::TargetRelay => f.write_str(" (target's advertised relay)"),
        }
    }
}

/// Ordered candidates for `local` to reach `target` under `policy`, best first.
pub fn plan_connection(
    local: &NodeRecord,
    target: &NodeRecord,
    policy: &PlanPolicy,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    if local.name == target.name {
        return out;
    }
    let push_direct = |out: &mut Vec<Candidate>, addr: GatewayAddress, reason| {
        if !out.iter().any(|c| c.route == Route::Direct(addr.clone())) {
            out.push(Candidate {
                route: Route::Direct(addr),
                reason,
            });
        }
    };
    let applicable: Vec<(usize, &crate::Gateway)> = target.gateways_for(local).collect();
    let addresses = |scheme: Scheme| {
        applicable.iter().flat_map(move |&(i, g)| {
            g.address
                .iter()
                .filter_map(|a| GatewayAddress::parse(a).ok())
                .filter(move |a| a.scheme() == scheme)
                .map(move |a| (i, g, a))
        })
    };
    if same_process(local, target) {
        for (i, _, a) in addresses(Scheme::Mem) {
            push_direct(&mut out, a, Reason::SameProcess { gateway: i });
        }
    }
    if same_machine(local, target) {
        for (i, _, a) in addresses(Scheme::Unix) {
            push_direct(&mut out, a, Reason::SameMachine { gateway: i });
        }
    }
    let same_namespace = local.metadata.namespace_name == target.metadata.namespace_name;
    let mut network: Vec<(bool, usize, &crate::Gateway)> = applicable
        .iter()
        .map(|&(i, g)| {
            let internal = same_namespace && g.is_internal_to(&local.metadata.namespace_name);
            (internal, i, g)
        })
        .collect();
    // Internal first, then higher priority, then publish order (the sort is stable).
    network.sort_by(|a, b| b.0.cmp(&a.0).then(b.2.priority.cmp(&a.2.priority)));
    for (internal, i, g) in network {
        let reason = if internal {
            Reason::InternalGateway {
                gateway: i,
                priority: g.priority,
            }
        } else {
            Reason::Gateway {
                gateway: i,
                priority: g.priority,
            }
        };
        for a in g
            .address
            .iter()
            .filter_map(|a| GatewayAddress::parse(a).ok())
        {
            if matches!(a.scheme(), Scheme::Tcp | Scheme::Udp) {
                push_direct(&mut out, a, reason);
            }
        }
    }
    if !out.is_empty() && !policy.relay_fallback {
        return out;
    }
    let own = policy
        .upstream_relay
        .as_ref()
        .filter(|r| !is_self_or_target(r, local, target))
        .map(|r| (r, Reason::OwnRelay));
    let theirs = target
        .advertise_relay
        .as_ref()
        .filter(|r| !is_self_or_target(r, local, target))
        .map(|r| (r, Reason::TargetRelay));
    let relays = match policy.relay_preference {
        RelayPreference::Own => [own, theirs],
        RelayPreference::Target => [theirs, own],
    };
    for (r, reason) in relays.into_iter().flatten() {
        let route = Route::Relay(r.clone());
        if !out.iter().any(|c| c.route == route) {
            out.push(Candidate { route, reason });
        }
    }
    out
}

/// A relay reference that names the caller or the target itself is no relay for this trip.
fn is_self_or_target(r: &RelayRef, local: &NodeRecord, target: &NodeRecord) -> bool {
    r.name
        .as_deref()
        .is_some_and(|n| n == local.name || n == target.name)
}
