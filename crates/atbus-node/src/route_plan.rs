//! Planning the way to destinations a node has no route for: the sans-IO part of "send to a
//! name" for a long-lived node.
//!
//! A node sends to a peer it has a session with. When the application sends to a name it has
//! no session for, [`RoutePlanner`] holds the messages (bounded), asks its owner to look the
//! name up ([`PlanAction::Resolve`]), takes the ways there the connection planner gave
//! ([`RoutePlanner::handle_plan`], best first), asks for one link at a time
//! ([`PlanAction::Dial`]) and, once the first hop's link is up
//! ([`RoutePlanner::handle_peer_linked`]), hands the messages back in order
//! ([`PlanAction::Ready`]) for the owner to route (directly, or with
//! [`Node::route_via_relay`](crate::Node::route_via_relay)) and send. A hop that fails or does
//! not link within [`PlanLimits::hop_timeout`] gives way to the next; when none is left, or
//! [`PlanLimits::resolve_timeout`] passes, the messages are reported
//! [`PlanAction::Unreachable`].
//!
//! It reads no clock and no registry: time comes in as `now`, records are looked up by the
//! owner (the discovery backend runs in the driver), and the decisions (which hop next, when to
//! give up) are made here, so they are tested without sockets.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use atbus_stream::OutgoingMessage;

/// Bounds of a [`RoutePlanner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLimits {
    /// Destinations being resolved or linked at once (default 64).
    pub max_pending: usize,
    /// Bytes of messages held for all of them together (default 1 MiB).
    pub max_queued_bytes: usize,
    /// Messages held per destination (default 1024).
    pub max_queued_messages: usize,
    /// How long one hop may take to link before the next is tried (default 3 s).
    pub hop_timeout: Duration,
    /// How long a destination may stay unresolved or unlinked before its messages are
    /// reported unreachable (default 10 s).
    pub resolve_timeout: Duration,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self {
            max_pending: 64,
            max_queued_bytes: 1 << 20,
            max_queued_messages: 1024,
            hop_timeout: Duration::from_secs(3),
            resolve_timeout: Duration::from_secs(10),
        }
    }
}

/// One way to a destination, from the connection plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedHop {
    /// The address to dial (a URL the driver understands).
    pub address: String,
    /// The relay behind `address`; `None` when `address` is the destination itself.
    pub relay: Option<String>,
}

impl PlannedHop {
    /// The name the link at `address` must authenticate as to reach `destination`.
    pub fn peer<'a>(&'a self, destination: &'a str) -> &'a str {
        self.relay.as_deref().unwrap_or(destination)
    }
}

/// Why messages to a destination were given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unreachable {
    /// Discovery has no record of the destination (or the lookup failed).
    #[error("not found: {0}")]
    NotFound(String),
    /// The plan had no usable hop.
    #[error("the connection plan is empty")]
    NoRoute,
    /// Every hop of the plan failed.
    #[error("every planned hop failed: {0}")]
    HopsFailed(String),
    /// The destination was not reached within the resolve timeout.
    #[error("not reached within {0:?}")]
    Timeout(Duration),
}

/// Why [`RoutePlanner::queue`] refused a message (nothing was held).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Too many destinations are being resolved at once.
    #[error("{0} destinations are already being resolved")]
    TooManyPending(usize),
    /// The bytes or messages held would exceed their bound.
    #[error("{held} bytes already wait for destinations being resolved (the limit is {limit})")]
    QueueFull {
        /// Bytes held.
        held: usize,
        /// The limit.
        limit: usize,
    },
    /// The message is empty.
    #[error("empty message")]
    Empty,
}

/// What the owner of a [`RoutePlanner`] does next; pulled with
/// [`RoutePlanner::poll_action`].
#[derive(Debug, Clone, PartialEq)]
pub enum PlanAction {
    /// Look `destination` up in discovery and answer with [`RoutePlanner::handle_plan`] or
    /// [`RoutePlanner::handle_not_found`].
    Resolve {
        /// The destination.
        destination: String,
    },
    /// Link to `hop` (when a link to `hop.peer(destination)` is already up, answer
    /// [`RoutePlanner::handle_peer_linked`] at once instead); a relay hop's relay must be
    /// trusted as one before the link's handshake.
    Dial {
        /// The destination.
        destination: String,
        /// The hop.
        hop: PlannedHop,
    },
    /// The way is open: route `destination` through `relay` (if any) and send `messages`, in
    /// order.
    Ready {
        /// The destination.
        destination: String,
        /// The relay the first hop goes through; `None`: a direct link.
        relay: Option<String>,
        /// Messages held for it, oldest first: (stream, message).
        messages: Vec<(i64, OutgoingMessage)>,
    },
    /// Messages to `destination` are given up.
    Unreachable {
        /// The destination.
        destination: String,
        /// The messages, oldest first: (stream, message).
        messages: Vec<(i64, OutgoingMessage)>,
        /// Why.
        reason: Unreachable,
    },
}

#[derive(Debug)]
enum Stage {
    /// Waiting for the lookup.
    Resolving,
    /// Linking `hops[next - 1]`, since `hop_deadline`.
    Linking {
        hops: Vec<PlannedHop>,
        next: usize,
        hop_deadline: Instant,
        failures: Vec<String>,
    },
}

#[derive(Debug)]
struct Pending {
    stage: Stage,
    deadline: Instant,
    messages: Vec<(i64, OutgoingMessage)>,
    bytes: usize,
}

/// Destinations being resolved and linked, with the messages that wait for them.
#[derive(Debug)]
pub struct RoutePlanner {
    limits: PlanLimits,
    pending: BTreeMap<String, Pending>,
    queued_bytes: usize,
    actions: VecDeque<PlanAction>,
}

impl RoutePlanner {
    /// An empty planner with `limits`.
    pub fn new(limits: PlanLimits) -> Self {
        Self {
            limits,
            pending: BTreeMap::new(),
            queued_bytes: 0,
            actions: VecDeque::new(),
        }
    }

    /// Whether `destination` is being resolved or linked.
    pub fn is_pending(&self, destination: &str) -> bool {
        self.pending.contains_key(destination)
    }

    /// Destinations being resolved or linked.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of messages held.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Holds a message to `destination` (a name with no route yet); the first one asks for a
    /// lookup.
    pub fn queue(
        &mut self,
        now: Instant,
        destination: &str,
        stream_id: i64,
        message: OutgoingMessage,
    ) -> Result<(), PlanError> {
        let len = message.data.len();
        if len == 0 {
            return Err(PlanError::Empty);
        }
        if self.queued_bytes + len > self.limits.max_queued_bytes {
            return Err(PlanError::QueueFull {
                held: self.queued_bytes,
                limit: self.limits.max_queued_bytes,
            });
        }
        match self.pending.get_mut(destination) {
            Some(p) => {
                if p.messages.len() >= self.limits.max_queued_messages {
                    return Err(PlanError::QueueFull {
                        held: self.queued_bytes,
                        limit: self.limits.max_queued_bytes,
                    });
                }
                p.messages.push((stream_id, message));
                p.bytes += len;
            }
            None => {
                if self.pending.len() >= self.limits.max_pending {
                    return Err(PlanError::TooManyPending(self.pending.len()));
                }
                self.pending.insert(
                    destination.to_owned(),
                    Pending {
                        stage: Stage::Resolving,
                        deadline: now + self.limits.resolve_timeout,
                        messages: vec![(stream_id, message)],
                        bytes: len,
                    },
                );
                self.actions.push_back(PlanAction::Resolve {
                    destination: destination.to_owned(),
                });
            }
        }
        self.queued_bytes += len;
        Ok(())
    }

    /// The ways to `destination`, best first (the connection planner's candidates with relays
    /// resolved to addresses). An answer for a destination not pending is ignored.
    pub fn handle_plan(&mut self, now: Instant, destination: &str, hops: Vec<PlannedHop>) {
        let Some(p) = self.pending.get_mut(destination) else {
            return;
        };
        if !matches!(p.stage, Stage::Resolving) {
            return;
        }
        if hops.is_empty() {
            self.give_up(destination, Unreachable::NoRoute);
            return;
        }
        p.stage = Stage::Linking {
            hops,
            next: 0,
            hop_deadline: now,
            failures: Vec::new(),
        };
        self.next_hop(now, destination);
    }

    /// Discovery has no record of `destination` (or the lookup failed: `why`).
    pub fn handle_not_found(&mut self, destination: &str, why: &str) {
        if self.pending.contains_key(destination) {
            self.give_up(destination, Unreachable::NotFound(why.to_owned()));
        }
    }

    /// A link to `peer` is up (authenticated): every destination whose current hop is `peer`
    /// (the destination itself, or its relay), or that is `peer`, is ready.
    pub fn handle_peer_linked(&mut self, peer: &str) {
        let ready: Vec<(String, Option<String>)> = self
            .pending
            .iter()
            .filter_map(|(dest, p)| match &p.stage {
                Stage::Linking { hops, next, .. } => {
                    let hop = &hops[next - 1];
                    (hop.peer(dest) == peer).then(|| (dest.clone(), hop.relay.clone()))
                }
                Stage::Resolving => None,
            })
            .chain(
                self.pending
                    .contains_key(peer)
                    .then(|| (peer.to_owned(), None)),
            )
            .collect();
        for (dest, relay) in ready {
            if let Some(p) = self.pending.remove(&dest) {
                self.queued_bytes -= p.bytes;
                self.actions.push_back(PlanAction::Ready {
                    destination: dest,
                    relay,
                    messages: p.messages,
                });
            }
        }
    }

    /// Dialling `address` failed (`why`): destinations linking through it try their next hop.
    pub fn handle_dial_failed(&mut self, now: Instant, address: &str, why: &str) {
        let failed: Vec<String> = self
            .pending
            .iter_mut()
            .filter_map(|(dest, p)| match &mut p.stage {
                Stage::Linking {
                    hops,
                    next,
                    failures,
                    ..
                } if hops[*next - 1].address == address => {
                    failures.push(format!("{address}: {why}"));
                    Some(dest.clone())
                }
                _ => None,
            })
            .collect();
        for dest in failed {
            self.next_hop(now, &dest);
        }
    }

    /// Moves time to `now`: hops that did not link in time give way to the next; destinations
    /// past their deadline are given up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(d, _)| d.clone())
            .collect();
        for dest in expired {
            self.give_up(&dest, Unreachable::Timeout(self.limits.resolve_timeout));
        }
        let slow: Vec<String> = self
            .pending
            .iter_mut()
            .filter_map(|(dest, p)| match &mut p.stage {
                Stage::Linking {
                    hops,
                    next,
                    hop_deadline,
                    failures,
                } if now >= *hop_deadline => {
                    failures.push(format!(
                        "{}: no link within {:?}",
                        hops[*next - 1].address,
                        self.limits.hop_timeout
                    ));
                    Some(dest.clone())
                }
                _ => None,
            })
            .collect();
        for dest in slow {
            self.next_hop(now, &dest);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| match &p.stage {
                Stage::Linking { hop_deadline, .. } => p.deadline.min(*hop_deadline),
                Stage::Resolving => p.deadline,
            })
            .min()
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<PlanAction> {
        self.actions.pop_front()
    }

    /// Asks for the next hop of `destination`, or gives it up when none is left.
    fn next_hop(&mut self, now: Instant, destination: &str) {
        let hop_timeout = self.limits.hop_timeout;
        let Some(p) = self.pending.get_mut(destination) else {
            return;
        };
        let Stage::Linking {
            hops,
            next,
            hop_deadline,
            failures,
        } = &mut p.stage
        else {
            return;
        };
        match hops.get(*next) {
            Some(hop) => {
                *next += 1;
                *hop_deadline = now + hop_timeout;
                self.actions.push_back(PlanAction::Dial {
                    destination: destination.to_owned(),
                    hop: hop.clone(),
                });
            }
            None => {
                let why = failures.join("; ");
                self.give_up(destination, Unreachable::HopsFailed(why));
            }
        }
    }

    fn give_up(&mut self, destination: &str, reason: Unreachable) {
        if let Some(p) = self.pending.remove(destination) {
            self.queued_bytes -= p.bytes;
            self.actions.push_back(PlanAction::Unreachable {
                destination: destination.to_owned(),
                messages: p.messages,
                reason,
            });
        }
    }
}

impl Default for RoutePlanner {
    fn default() -> Self {
        Self::new(PlanLimits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> OutgoingMessage {
        OutgoingMessage::data(s.as_bytes().to_vec())
    }

    fn hop(address: &str, relay: Option<&str>) -> PlannedHop {
        PlannedHop {
            address: address.into(),
            relay: relay.map(str::to_owned),
        }
    }

    fn actions(p: &mut RoutePlanner) -> Vec<PlanAction> {
        std::iter::from_fn(|| p.poll_action()).collect()
    }

    fn texts(messages: &[(i64, OutgoingMessage)]) -> Vec<(i64, String)> {
        messages
            .iter()
            .map(|(s, m)| (*s, String::from_utf8_lossy(&m.data).into_owned()))
            .collect()
    }

    #[test]
    fn one_lookup_per_destination_and_messages_come_back_in_order_through_the_relay() {
        let now = Instant::now();
        let mut p = RoutePlanner::default();
        p.queue(now, "b", 1, msg("one")).unwrap();
        p.queue(now, "b", 2, msg("two")).unwrap();
        assert_eq!(
            actions(&mut p),
            [PlanAction::Resolve {
                destination: "b".into()
            }]
        );
        assert_eq!(p.queued_bytes(), 6);
        p.handle_plan(now, "b", vec![hop("tcp://r1:1", Some("relay1"))]);
        assert_eq!(
            actions(&mut p),
            [PlanAction::Dial {
                destination: "b".into(),
                hop: hop("tcp://r1:1", Some("relay1"))
            }]
        );
        // Another peer linking changes nothing; the destination's own name does not either
        // while a relay hop is awaited... unless it is the destination itself.
        p.handle_peer_linked("relay2");
        assert!(actions(&mut p).is_empty());
        p.handle_peer_linked("relay1");
        let [
            PlanAction::Ready {
                destination,
                relay,
                messages,
            },
        ] = &actions(&mut p)[..]
        else {
            panic!("not ready");
        };
        assert_eq!(destination, "b");
        assert_eq!(relay.as_deref(), Some("relay1"));
        assert_eq!(texts(messages), [(1, "one".into()), (2, "two".into())]);
        assert_eq!(p.queued_bytes(), 0);
        assert!(!p.is_pending("b"));
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn a_failed_or_silent_hop_gives_way_to_the_next_then_the_messages_are_unreachable() {
        let now = Instant::now();
        let limits = PlanLimits::default();
        let mut p = RoutePlanner::new(limits.clone());
        p.queue(now, "b", 0, msg("x")).unwrap();
        actions(&mut p);
        p.handle_plan(
            now,
            "b",
            vec![
                hop("tcp://b:1", None),
                hop("tcp://r1:1", Some("relay1")),
                hop("tcp://r2:1", Some("relay2")),
            ],
        );
        assert!(
            matches!(&actions(&mut p)[..], [PlanAction::Dial { hop, .. }] if hop.address == "tcp://b:1")
        );
        p.handle_dial_failed(now, "tcp://b:1", "refused");
        assert!(
            matches!(&actions(&mut p)[..], [PlanAction::Dial { hop, .. }] if hop.address == "tcp://r1:1")
        );
        // A failure of an address that is no current hop is ignored.
        p.handle_dial_failed(now, "tcp://b:1", "refused again");
        assert!(actions(&mut p).is_empty());
        // relay1 stays silent for the hop timeout.
        let t = now + limits.hop_timeout;
        assert_eq!(p.poll_timeout(), Some(t));
        p.handle_timeout(t - Duration::from_millis(1));
        assert!(actions(&mut p).is_empty());
        p.handle_timeout(t);
        assert!(
            matches!(&actions(&mut p)[..], [PlanAction::Dial { hop, .. }] if hop.address == "tcp://r2:1")
        );
        p.handle_dial_failed(t, "tcp://r2:1", "reset");
        let [
            PlanAction::Unreachable {
                destination,
                messages,
                reason: Unreachable::HopsFailed(why),
            },
        ] = &actions(&mut p)[..]
        else {
            panic!("not given up");
        };
        assert_eq!(destination, "b");
        assert_eq!(texts(messages), [(0, "x".into())]);
        assert!(why.contains("tcp://b:1: refused"), "{why}");
        assert!(why.contains("tcp://r1:1: no link within"), "{why}");
        assert!(why.contains("tcp://r2:1: reset"), "{why}");
        assert_eq!(p.queued_bytes(), 0);
    }

    #[test]
    fn unresolved_and_unplanned_destinations_are_reported_and_the_deadline_holds() {
        let now = Instant::now();
        let limits = PlanLimits {
            hop_timeout: Duration::from_secs(60),
            ..PlanLimits::default()
        };
        let mut p = RoutePlanner::new(limits.clone());
        for d in ["a", "b", "c"] {
            p.queue(now, d, 0, msg(d)).unwrap();
        }
        actions(&mut p);
        p.handle_not_found("a", "no record named \"a\"");
        p.handle_plan(now, "b", Vec::new());
        let got = actions(&mut p);
        assert!(
            matches!(&got[0], PlanAction::Unreachable { destination, reason: Unreachable::NotFound(_), .. } if destination == "a")
        );
        assert!(
            matches!(&got[1], PlanAction::Unreachable { destination, reason: Unreachable::NoRoute, .. } if destination == "b")
        );
        // c is linking a hop that never answers, with a hop timeout longer than the deadline.
        p.handle_plan(now, "c", vec![hop("tcp://c:1", None)]);
        actions(&mut p);
        let deadline = now + limits.resolve_timeout;
        assert_eq!(p.poll_timeout(), Some(deadline));
        p.handle_timeout(deadline);
        assert!(matches!(
            &actions(&mut p)[..],
            [PlanAction::Unreachable {
                reason: Unreachable::Timeout(_),
                ..
            }]
        ));
        assert_eq!(p.pending(), 0);
        // Late answers for destinations no longer pending are ignored.
        p.handle_plan(now, "a", vec![hop("tcp://a:1", None)]);
        p.handle_peer_linked("c");
        assert!(actions(&mut p).is_empty());
    }

    #[test]
    fn the_destination_linking_by_itself_makes_it_ready_direct() {
        let now = Instant::now();
        let mut p = RoutePlanner::default();
        p.queue(now, "b", 3, msg("hi")).unwrap();
        // Still resolving when b connects to this node.
        p.handle_peer_linked("b");
        let got = actions(&mut p);
        assert!(matches!(
            &got[..],
            [
                PlanAction::Resolve { .. },
                PlanAction::Ready { relay: None, .. }
            ]
        ));
        // The late plan is ignored.
        p.handle_plan(now, "b", vec![hop("tcp://b:1", None)]);
        assert!(actions(&mut p).is_empty());
    }

    #[test]
    fn pending_destinations_and_held_bytes_are_bounded() {
        let now = Instant::now();
        let mut p = RoutePlanner::new(PlanLimits {
            max_pending: 2,
            max_queued_bytes: 10,
            max_queued_messages: 3,
            ..PlanLimits::default()
        });
        p.queue(now, "a", 0, msg("12345")).unwrap();
        p.queue(now, "b", 0, msg("1")).unwrap();
        assert_eq!(
            p.queue(now, "c", 0, msg("1")),
            Err(PlanError::TooManyPending(2))
        );
        assert_eq!(
            p.queue(now, "a", 0, msg("123456")),
            Err(PlanError::QueueFull { held: 6, limit: 10 })
        );
        p.queue(now, "b", 0, msg("1")).unwrap();
        p.queue(now, "b", 0, msg("1")).unwrap();
        assert!(matches!(
            p.queue(now, "b", 0, msg("1")),
            Err(PlanError::QueueFull { .. })
        ));
        assert_eq!(p.queue(now, "b", 0, msg("")), Err(PlanError::Empty));
        assert_eq!(p.queued_bytes(), 8);
        assert_eq!(p.pending(), 2);
    }
}
