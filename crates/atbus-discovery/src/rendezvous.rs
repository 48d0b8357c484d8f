//! Choosing one node of a selector's matches by rendezvous (highest random weight) hashing.
//!
//! Every candidate node gets the weight `xxh3_64(len(key) as u64 LE ‖ key ‖ name)`; the node with
//! the highest weight wins (equal weights: the smaller name). The key is typically the sender's
//! name, so every message of a sender goes to the same node while the set of nodes stays the
//! same, and:
//!
//! - a node that joins takes over a key only when it wins that key outright (about `1/n` of the
//!   keys); every other key keeps its node;
//! - a node that leaves moves only its own keys; keys on other nodes stay where they are;
//! - keys spread evenly over the nodes (the weights are independent uniform 64-bit values).
//!
//! The length prefix keeps `("ab", "c")` and `("a", "bc")` apart.
//!
//! ```
//! use atbus_discovery::{NodeRecord, rendezvous::choose};
//!
//! let nodes: Vec<NodeRecord> = ["echo-1", "echo-2", "echo-3"].map(NodeRecord::new).into();
//! let chosen = choose(&nodes, "client-7").expect("three candidates");
//! // The same key always lands on the same node.
//! assert_eq!(choose(&nodes, "client-7").map(|r| &r.name), Some(&chosen.name));
//! ```

use xxhash_rust::xxh3::Xxh3;

use crate::record::NodeRecord;

/// The weight of node `name` for `key` (higher wins).
pub fn weight(key: &str, name: &str) -> u64 {
    let mut h = Xxh3::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(name.as_bytes());
    h.digest()
}

/// The name among `names` that `key` goes to: the highest [`weight`], ties to the smaller
/// name. `None` when `names` is empty.
pub fn choose_name<'a>(names: impl IntoIterator<Item = &'a str>, key: &str) -> Option<&'a str> {
    names
        .into_iter()
        .map(|n| (weight(key, n), n))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, n)| n)
}

/// The record among `records` that `key` goes to (see [`choose_name`]).
pub fn choose<'a>(
    records: impl IntoIterator<Item = &'a NodeRecord>,
    key: &str,
) -> Option<&'a NodeRecord> {
    records
        .into_iter()
        .map(|r| (weight(key, &r.name), r))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.name.cmp(&a.1.name)))
        .map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("echo-{i}")).collect()
    }

    fn pick<'a>(nodes: &'a [String], key: &str) -> &'a str {
        choose_name(nodes.iter().map(String::as_str), key).expect("candidates")
    }

    #[test]
    fn the_same_key_gives_the_same_node_in_any_order() {
        let nodes = names(7);
        let mut reversed = nodes.clone();
        reversed.reverse();
        for k in 0..200 {
            let key = format!("client-{k}");
            assert_eq!(pick(&nodes, &key), pick(&reversed, &key));
        }
        assert_eq!(choose_name(std::iter::empty(), "k"), None);
    }

    #[test]
    fn joining_moves_only_the_keys_the_new_node_wins() {
        let before = names(8);
        let mut after = before.clone();
        after.push("echo-new".into());
        let mut moved = 0;
        for k in 0..2000 {
            let key = format!("client-{k}");
            let (a, b) = (pick(&before, &key), pick(&after, &key));
            if a != b {
                assert_eq!(b, "echo-new", "key {key} moved from {a} to {b}");
                moved += 1;
            }
        }
        // Expected 2000/9 ≈ 222; the bounds leave room for chance only.
        assert!((120..=340).contains(&moved), "{moved} keys moved");
    }

    #[test]
    fn leaving_moves_only_the_leavers_keys() {
        let before = names(8);
        let gone = "echo-3";
        let after: Vec<String> = before.iter().filter(|n| *n != gone).cloned().collect();
        let mut moved = 0;
        for k in 0..2000 {
            let key = format!("client-{k}");
            let (a, b) = (pick(&before, &key), pick(&after, &key));
            if a == gone {
                moved += 1;
            } else {
                assert_eq!(a, b, "key {key} moved although {a} stayed");
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn keys_spread_over_the_nodes() {
        let nodes = names(10);
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for k in 0..10_000 {
            *per_node
                .entry(pick(&nodes, &format!("key-{k}")))
                .or_default() += 1;
        }
        assert_eq!(per_node.len(), 10);
        for (node, n) in per_node {
            // Mean 1000, standard deviation ≈ 30.
            assert!((850..=1150).contains(&n), "{node} got {n} keys");
        }
    }

    #[test]
    fn the_length_prefix_separates_key_and_name() {
        assert_ne!(weight("ab", "c"), weight("a", "bc"));
    }

    #[test]
    fn records_and_names_agree() {
        let nodes = names(5);
        let records: Vec<NodeRecord> = nodes.iter().map(NodeRecord::new).collect();
        for k in 0..100 {
            let key = format!("k{k}");
            assert_eq!(
                choose(&records, &key).map(|r| r.name.as_str()),
                Some(pick(&nodes, &key))
            );
        }
    }
}
