//! Routes of a long-lived `atbus node` to destinations it has no session with: messages to
//! such a name wait in an [`atbus_node::RoutePlanner`] while the name is looked up through
//! discovery and planned with the same connection planner `atbus send` uses
//! ([`crate::routing::plan_hops`]); the hops are then linked one at a time, and the messages
//! go direct or through the relay of the hop that linked.
//!
//! The planner decides (which hop next, when to give up, what is held); this module does the
//! I/O around it: one `list` request to the discovery backend serves every destination
//! waiting at that moment, dials go through the [`NodeDriver`], and what happened is written
//! to the node's output (`route to NAME: direct|via RELAY`, `undeliverable to NAME: …`).

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Instant;

use atbus_discovery::{DiscoveryEvent, NodeRecord, PlanPolicy, RequestId, Selector};
use atbus_node::{NodeError, NodeEvent, OutgoingMessage, PlanAction, PlannedHop, RoutePlanner};
use atbus_transport_mio::{NodeDriver, Url};
use bytes::Bytes;

use crate::discovery::Backend;

/// Routes planned per destination for a running node.
#[derive(Debug)]
pub struct NodeRoutes {
    planner: RoutePlanner,
    /// This node's record (what the connection planner compares gateways with).
    local: NodeRecord,
    policy: PlanPolicy,
    /// Destinations waiting for the lookup in flight (or the next one).
    waiting: BTreeSet<String>,
    /// The `list` request in flight and when it was sent.
    lookup: Option<(RequestId, Instant)>,
}

/// Why [`NodeRoutes::send`] did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum RouteSendError {
    /// The node refused it (backpressure, invalid name, ...).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The planner holds too much already.
    #[error(transparent)]
    Plan(#[from] atbus_node::PlanError),
    /// No session with the peer and no discovery to find it.
    #[error("no session with {0:?} and no --discovery to look it up")]
    NoDiscovery(String),
}

impl NodeRoutes {
    /// Routes for a node whose record is `local`, planning under `policy`.
    pub fn new(local: NodeRecord, policy: PlanPolicy) -> Self {
        Self {
            planner: RoutePlanner::default(),
            local,
            policy,
            waiting: BTreeSet::new(),
            lookup: None,
        }
    }

    /// Sends `data` to `peer` on `stream_id`: at once when the node has a session with it,
    /// else (with discovery) once the way there is planned and linked.
    pub fn send(
        &mut self,
        now: Instant,
        driver: &mut NodeDriver,
        has_discovery: bool,
        peer: &str,
        stream_id: i64,
        data: Bytes,
    ) -> Result<(), RouteSendError> {
        if !self.planner.is_pending(peer) {
            match driver.send(peer, stream_id, data.clone()) {
                Ok(_) => return Ok(()),
                Err(NodeError::UnknownPeer(_)) if has_discovery => {}
                Err(NodeError::UnknownPeer(p)) => return Err(RouteSendError::NoDiscovery(p)),
                Err(err) => return Err(err.into()),
            }
        }
        if peer == driver.node().name() {
            return Err(NodeError::InvalidName(format!("{peer:?} is this node's own name")).into());
        }
        atbus_discovery::validate::check_dns1123_subdomain(peer)
            .map_err(|e| NodeError::InvalidName(format!("{peer:?}: {e}")))?;
        self.planner
            .queue(now, peer, stream_id, OutgoingMessage::data(data))?;
        Ok(())
    }

    /// Feeds a node event: a link that came up may open the way to waiting destinations.
    pub fn handle_event(&mut self, event: &NodeEvent) {
        if let NodeEvent::PeerUp { peer, .. } | NodeEvent::LinkAccepted { peer, .. } = event {
            self.planner.handle_peer_linked(peer);
        }
    }

    /// An outbound link to `url` failed (`why`).
    pub fn handle_link_failure(&mut self, now: Instant, url: &Url, why: &str) {
        self.planner.handle_dial_failed(now, &url.to_string(), why);
    }

    /// Takes the answers of this module's lookups out of the backend's events; logs the rest.
    pub fn poll_discovery(&mut self, backend: &mut Backend) {
        while let Some(event) = backend.as_dyn().poll_event() {
            match event {
                DiscoveryEvent::List { request, records }
                    if self.lookup.is_some_and(|(r, _)| r == request) =>
                {
                    self.lookup = None;
                    self.answer(Instant::now(), &records);
                }
                DiscoveryEvent::Refused { request, reason }
                    if self.lookup.is_some_and(|(r, _)| r == request) =>
                {
                    self.lookup = None;
                    self.fail_lookup(&format!("discovery refused the lookup: {reason}"));
                }
                DiscoveryEvent::Error {
                    request: Some(request),
                    error,
                } if self.lookup.is_some_and(|(r, _)| r == request) => {
                    self.lookup = None;
                    self.fail_lookup(&format!("the lookup failed: {error}"));
                }
                other => tracing::debug!(?other, "discovery event"),
            }
        }
    }

    /// Runs due timers and does what the planner asks: lookups, dials, sends, reports.
    pub fn step(
        &mut self,
        now: Instant,
        driver: &mut NodeDriver,
        backend: Option<&mut Backend>,
        out: &mut impl Write,
    ) -> std::io::Result<()> {
        self.planner.handle_timeout(now);
        while let Some(action) = self.planner.poll_action() {
            match action {
                PlanAction::Resolve { destination } => {
                    self.waiting.insert(destination);
                }
                PlanAction::Dial { destination, hop } => self.dial(now, driver, &destination, &hop),
                PlanAction::Ready {
                    destination,
                    relay,
                    messages,
                } => {
                    let route = match &relay {
                        Some(relay) => format!("via {relay}"),
                        None => "direct".to_owned(),
                    };
                    if let Some(relay) = &relay {
                        if let Err(err) =
                            driver.node_mut().route_via_relay(now, &destination, relay)
                        {
                            writeln!(out, "undeliverable to {destination}: {err}")?;
                            continue;
                        }
                    }
                    writeln!(out, "route to {destination}: {route}")?;
                    tracing::info!(%destination, %route, "route planned");
                    for (stream, message) in messages {
                        if let Err(err) = driver.send_message(&destination, stream, message) {
                            writeln!(out, "undeliverable to {destination}: {err}")?;
                        }
                    }
                }
                PlanAction::Unreachable {
                    destination,
                    messages,
                    reason,
                } => {
                    tracing::warn!(%destination, %reason, "destination unreachable");
                    writeln!(
                        out,
                        "undeliverable to {destination}: {} messages: {reason}",
                        messages.len()
                    )?;
                }
            }
        }
        out.flush()?;
        // Re-ask when an answer got lost (another blocking request took it).
        let stale = |backend: &Backend| {
            self.lookup
                .is_some_and(|(_, at)| now.duration_since(at) > backend.answer_timeout())
        };
        match backend {
            Some(b) if !self.waiting.is_empty() && (self.lookup.is_none() || stale(b)) => {
                let request = b.as_dyn().list(&Selector::everything());
                self.lookup = Some((request, now));
            }
            None if !self.waiting.is_empty() => {
                for destination in std::mem::take(&mut self.waiting) {
                    self.planner
                        .handle_not_found(&destination, "this node has no --discovery");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// When [`step`](Self::step) has a timer due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.planner.poll_timeout()
    }

    /// The records arrived: every waiting destination is planned.
    fn answer(&mut self, now: Instant, records: &[NodeRecord]) {
        for destination in std::mem::take(&mut self.waiting) {
            let Some(target) = records.iter().find(|r| r.name == destination) else {
                self.planner
                    .handle_not_found(&destination, &format!("no record named {destination:?}"));
                continue;
            };
            let (hops, skipped) =
                crate::routing::plan_hops(&self.local, target, records, &self.policy);
            for s in &skipped {
                tracing::info!(%destination, skipped = %s, "planned candidate not usable");
            }
            let hops = hops
                .into_iter()
                .map(|h| {
                    tracing::info!(%destination, url = %h.url, why = %h.why, "planned hop");
                    PlannedHop {
                        address: h.url.to_string(),
                        relay: h.relay,
                    }
                })
                .collect();
            self.planner.handle_plan(now, &destination, hops);
        }
    }

    fn fail_lookup(&mut self, why: &str) {
        for destination in std::mem::take(&mut self.waiting) {
            self.planner.handle_not_found(&destination, why);
        }
    }

    /// Links `hop` for `destination`, or reports it linked when a link to its peer is up.
    fn dial(&mut self, now: Instant, driver: &mut NodeDriver, destination: &str, hop: &PlannedHop) {
        let peer = hop.peer(destination);
        let linked = driver.links().iter().any(|l| {
            l.node_link
                .and_then(|id| driver.node().link_info(id))
                .is_some_and(|info| {
                    info.peer == peer
                        && (hop.relay.is_none() || info.role == atbus_node::LinkRole::ToRelay)
                })
        });
        if linked {
            self.planner.handle_peer_linked(peer);
            return;
        }
        if let Some(relay) = &hop.relay {
            if let Err(err) = driver.node_mut().trust_relay(relay) {
                self.planner
                    .handle_dial_failed(now, &hop.address, &err.to_string());
                return;
            }
        }
        let dialled = hop
            .address
            .parse::<Url>()
            .map_err(|e| e.to_string())
            .and_then(|url| driver.connect(&url).map_err(|e| e.to_string()));
        match dialled {
            Ok(_) => tracing::info!(%destination, address = %hop.address, %peer, "dialling"),
            Err(why) => self.planner.handle_dial_failed(now, &hop.address, &why),
        }
    }
}
