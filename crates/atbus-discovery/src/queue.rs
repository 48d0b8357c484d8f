//! The bounded event queue of one backend handle, and the watch events a change produces.
//!
//! Every backend follows the same rules, so they live here once: a handle keeps at most
//! `capacity` events; the first event past that limit means the handle has missed a change, so
//! its watches can no longer be trusted and are all cancelled; later events are only counted,
//! and once the queued events are drained one [`DiscoveryEvent::Overflow`] reports the count
//! and the cancelled watches.

use std::collections::{BTreeMap, VecDeque};

use crate::discovery::{DiscoveryEvent, RequestId};
use crate::record::NodeRecord;
use crate::selector::Selector;

/// A handle's bounded queue of events, with the overflow rule above.
#[derive(Debug, Clone)]
pub struct EventQueue {
    capacity: usize,
    queue: VecDeque<DiscoveryEvent>,
    dropped: u64,
    cancelled: Vec<RequestId>,
}

impl EventQueue {
    /// An empty queue keeping at most `capacity` events (0 keeps none: everything overflows).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            queue: VecDeque::new(),
            dropped: 0,
            cancelled: Vec::new(),
        }
    }

    /// The most events kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `event`, or counts it when the queue is full or has overflowed since the last
    /// `Overflow` was taken. On the first event dropped, every watch of the handle is removed
    /// from `watches` and remembered for the `Overflow`. Returns whether the event was kept.
    pub fn push(
        &mut self,
        event: DiscoveryEvent,
        watches: &mut BTreeMap<RequestId, Selector>,
    ) -> bool {
        if self.dropped > 0 || self.queue.len() >= self.capacity {
            if self.dropped == 0 {
                self.cancelled = std::mem::take(watches).into_keys().collect();
            }
            self.dropped += 1;
            return false;
        }
        self.queue.push_back(event);
        true
    }

    /// The oldest event; once the queued ones are gone, one `Overflow` if events were dropped.
    pub fn pop(&mut self) -> Option<DiscoveryEvent> {
        if let Some(e) = self.queue.pop_front() {
            return Some(e);
        }
        if self.dropped > 0 {
            return Some(DiscoveryEvent::Overflow {
                dropped: std::mem::take(&mut self.dropped),
                cancelled_watches: std::mem::take(&mut self.cancelled),
            });
        }
        None
    }

    /// Events queued (not counting a pending `Overflow`).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing, not even an `Overflow`, is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.dropped == 0
    }

    /// Events dropped since the last `Overflow` was taken.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The events that a change of record `name` from `old` to `new` (`None`: absent) gives the
/// `watches`, in watch order: `Put` to each watch the new record matches, `Delete` to each
/// that matched the old record only.
pub fn watch_events(
    watches: &BTreeMap<RequestId, Selector>,
    name: &str,
    old: Option<&NodeRecord>,
    new: Option<&NodeRecord>,
) -> Vec<DiscoveryEvent> {
    watches
        .iter()
        .filter_map(|(&watch, sel)| {
            let was = old.is_some_and(|r| sel.matches(r));
            match new.filter(|r| sel.matches(r)) {
                Some(r) => Some(DiscoveryEvent::Put {
                    watch,
                    record: Box::new(r.clone()),
                }),
                None if was => Some(DiscoveryEvent::Delete {
                    watch,
                    name: name.to_owned(),
                }),
                None => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> DiscoveryEvent {
        DiscoveryEvent::Deregistered {
            request: RequestId(n),
            name: format!("n{n}"),
        }
    }

    fn watches(ids: &[u64]) -> BTreeMap<RequestId, Selector> {
        ids.iter()
            .map(|&i| (RequestId(i), Selector::default()))
            .collect()
    }

    #[test]
    fn overflow_cancels_watches_and_follows_the_queued_events() {
        let mut q = EventQueue::new(2);
        let mut w = watches(&[7, 9]);
        assert!(q.push(ev(1), &mut w));
        assert!(q.push(ev(2), &mut w));
        assert!(!q.push(ev(3), &mut w));
        assert!(w.is_empty(), "watches cancelled on the first drop");
        // Room again after a pop, but the queue stays overflowed until Overflow is taken.
        assert_eq!(q.pop(), Some(ev(1)));
        let mut later = watches(&[11]);
        assert!(!q.push(ev(4), &mut later));
        assert_eq!(later.len(), 1, "only the first drop cancels");
        assert_eq!((q.len(), q.dropped()), (1, 2));
        assert_eq!(q.pop(), Some(ev(2)));
        assert_eq!(
            q.pop(),
            Some(DiscoveryEvent::Overflow {
                dropped: 2,
                cancelled_watches: vec![RequestId(7), RequestId(9)],
            })
        );
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        assert!(q.push(ev(5), &mut later));
        assert_eq!(q.pop(), Some(ev(5)));
    }

    #[test]
    fn zero_capacity_overflows_at_once() {
        let mut q = EventQueue::new(0);
        let mut w = watches(&[1]);
        assert!(!q.push(ev(1), &mut w));
        assert!(!q.is_empty());
        assert!(matches!(
            q.pop(),
            Some(DiscoveryEvent::Overflow { dropped: 1, .. })
        ));
    }

    #[test]
    fn watch_events_put_and_delete() {
        let mut eu = NodeRecord::new("a");
        eu.metadata.labels.insert("region".into(), "eu".into());
        let mut us = eu.clone();
        us.metadata.labels.insert("region".into(), "us".into());
        let w: BTreeMap<RequestId, Selector> = [
            (
                RequestId(1),
                Selector::parse("region=eu").expect("selector"),
            ),
            (RequestId(2), Selector::default()),
        ]
        .into();
        // eu → us: watch 1 loses it, watch 2 sees the change.
        let events = watch_events(&w, "a", Some(&eu), Some(&us));
        assert_eq!(
            events,
            vec![
                DiscoveryEvent::Delete {
                    watch: RequestId(1),
                    name: "a".into()
                },
                DiscoveryEvent::Put {
                    watch: RequestId(2),
                    record: Box::new(us.clone())
                },
            ]
        );
        // Absent → us: only watch 2.
        assert_eq!(watch_events(&w, "a", None, Some(&us)).len(), 1);
        // us → absent: watch 1 never matched, so only watch 2 sees the delete.
        assert_eq!(
            watch_events(&w, "a", Some(&us), None),
            vec![DiscoveryEvent::Delete {
                watch: RequestId(2),
                name: "a".into()
            }]
        );
    }
}
