//! `atbus demo` as a user runs it: nodes over every transport on real sockets, every exchange
//! verified, figures and links reported; the figures are parsed back and checked.

mod common;

use common::atbus;

const TRANSPORTS: [&str; 5] = ["mem", "unix", "tcp", "udp", "tcp+unix"];
const EXCHANGES: [&str; 3] = ["small", "large", "ping-pong"];

/// One row of the results table: transport, exchange, verified, count, msgs/s, MB/s, rtt.
struct Row {
    transport: String,
    exchange: String,
    verified: u64,
    count: u64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    rtt_us: Option<(u64, u64)>,
}

fn parse_row(line: &str) -> Option<Row> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 5 || !TRANSPORTS.contains(&fields[0]) || !EXCHANGES.contains(&fields[1]) {
        return None;
    }
    let (verified, count) = fields[2].split_once('/')?;
    let rtt_us = match fields.get(5..9) {
        Some([p50, "us", p99, "us"]) => Some((p50.parse().ok()?, p99.parse().ok()?)),
        _ => None,
    };
    Some(Row {
        transport: fields[0].to_owned(),
        exchange: fields[1].to_owned(),
        verified: verified.parse().ok()?,
        count: count.parse().ok()?,
        msgs_per_sec: fields[3].parse().ok()?,
        mb_per_sec: fields[4].parse().ok()?,
        rtt_us,
    })
}

/// A number in `line` right after `word`.
fn number_after(line: &str, word: &str) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let i = fields.iter().position(|f| *f == word)?;
    fields.get(i + 1)?.parse().ok()
}

/// The relay part: two namespaces, a relay each; every echo verified, the paths traced from
/// the relays' counters go through both relays, and both relays forwarded frames.
fn check_relay_part(stdout: &str) {
    let start = stdout
        .find("Part 1b: two namespaces, a relay each")
        .unwrap_or_else(|| panic!("no relay part: {stdout}"));
    let part = &stdout[start..];
    let part = &part[..part.find("Part 2:").unwrap_or(part.len())];
    let mut total = 0;
    for (label, count) in [("stream", 3000u64), ("ping-pong", 300)] {
        let row = part
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() >= 5 && f[0] == "a->b->a" && f[1] == label)
            .unwrap_or_else(|| panic!("no relay row {label}: {part}"));
        assert_eq!(row[2], format!("{count}/{count}"), "{label}: {part}");
        assert!(
            row[3].parse::<f64>().is_ok_and(|r| r > 0.0),
            "{label}: {part}"
        );
        total += count;
    }
    for path in [
        "flow a -> b: a -> relay-1 -> relay-2 -> b",
        "flow b -> a: b -> relay-2 -> relay-1 -> a",
    ] {
        assert!(part.lines().any(|l| l.trim() == path), "{path}: {part}");
    }
    for (relay, ns, links) in [
        ("relay-1", "ns1", ["a", "relay-2"]),
        ("relay-2", "ns2", ["relay-1", "b"]),
    ] {
        let line = part
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{relay} ({ns}) forwarded "))
            })
            .unwrap_or_else(|| panic!("no counters of {relay}: {part}"));
        let forwarded = number_after(line, "forwarded").expect("frames forwarded");
        assert!(forwarded > 0, "{line}");
        // Frames for a after it left (b's acknowledgements, pings) may be dropped.
        assert!(number_after(line, "dropped").is_some(), "{line}");
        for peer in links {
            // "relay-1 link 3 -> relay-2  123 frames out  45 frames in"
            let link = part
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|f| f.len() >= 8 && f[0] == relay && f[1] == "link" && f[4] == peer)
                .unwrap_or_else(|| panic!("no link {relay} -> {peer}: {part}"));
            let out: u64 = link[5].parse().expect("frames out");
            assert!(out > 0, "{relay} -> {peer} carried nothing: {part}");
        }
    }
    let verdict = part
        .lines()
        .find(|l| l.contains("messages verified through two relays"))
        .unwrap_or_else(|| panic!("no relay verdict: {part}"));
    assert!(
        verdict
            .trim_start()
            .starts_with(&format!("{total}/{total} messages")),
        "{verdict}"
    );
    assert!(verdict.ends_with(": yes"), "{verdict}");
}

#[test]
fn demo_runs_nodes_over_every_transport_and_verifies_every_message() {
    let out = atbus(&["demo"], b"");
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let stdout = &out.stdout;
    assert!(stdout.contains("talking over real sockets"), "{stdout}");

    // Where the echo node listens: one bound URL per transport, real ports.
    for prefix in ["mem://", "unix:///", "tcp://127.0.0.1:", "udp://127.0.0.1:"] {
        let line = stdout
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} listener: {stdout}"));
        assert!(!line.ends_with(":0"), "{line}");
    }

    let rows: Vec<Row> = stdout.lines().filter_map(parse_row).collect();
    assert_eq!(rows.len(), TRANSPORTS.len() * EXCHANGES.len(), "{stdout}");
    let mut total = 0;
    for transport in TRANSPORTS {
        for exchange in EXCHANGES {
            let row = rows
                .iter()
                .find(|r| r.transport == transport && r.exchange == exchange)
                .unwrap_or_else(|| panic!("no row {transport} {exchange}: {stdout}"));
            assert!(row.count > 0);
            assert_eq!(row.verified, row.count, "{transport} {exchange}: {stdout}");
            assert!(row.msgs_per_sec > 0.0, "{transport} {exchange}");
            assert!(row.mb_per_sec > 0.0, "{transport} {exchange}");
            match (exchange, row.rtt_us) {
                ("ping-pong", Some((p50, p99))) => {
                    assert!(p50 > 0 && p50 <= p99, "{transport}: p50 {p50} p99 {p99}");
                }
                ("ping-pong", None) => panic!("{transport}: no round trip figures"),
                (_, rtt) => assert!(rtt.is_none(), "{transport} {exchange}"),
            }
            total += row.count;
        }
    }

    // Links: one per client, two (TCP and Unix) for the mixed one; traffic on every client.
    let links: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 9 && f[0].starts_with("client-") && f[1] == "->")
        .collect();
    for (client, kinds) in [
        ("client-mem", &["mem"][..]),
        ("client-unix", &["unix"]),
        ("client-tcp", &["tcp"]),
        ("client-udp", &["udp"]),
        ("client-mixed", &["tcp", "unix"]),
    ] {
        let mine: Vec<&Vec<&str>> = links.iter().filter(|f| f[0] == client).collect();
        let mut seen: Vec<&str> = mine.iter().map(|f| f[3]).collect();
        seen.sort_unstable();
        assert_eq!(seen, kinds, "{client}: {stdout}");
        assert!(mine.iter().all(|f| f[2] == "echo"), "{client}");
        let out_mb: f64 = mine
            .iter()
            .map(|f| f[4].parse::<f64>().unwrap_or(0.0))
            .sum();
        let in_mb: f64 = mine
            .iter()
            .map(|f| f[7].parse::<f64>().unwrap_or(0.0))
            .sum();
        assert!(
            out_mb > 1.0 && in_mb > 1.0,
            "{client}: {out_mb} MB out, {in_mb} MB in"
        );
    }

    // The closing line adds up to the table, and says yes.
    let line = stdout
        .lines()
        .find(|l| l.contains("messages verified"))
        .unwrap_or_else(|| panic!("no summary line: {stdout}"));
    assert!(
        line.trim_start()
            .starts_with(&format!("{total}/{total} messages verified")),
        "{line}"
    );
    assert!(line.contains(&format!("echoed {total})")), "{line}");
    assert!(line.ends_with(": yes"), "{line}");

    check_relay_part(stdout);

    // The simulated session follows; the dissection waits for --tour.
    assert!(stdout.contains("Part 2: one session, three paths at once"));
    assert!(!stdout.lines().any(|l| l.starts_with('{')), "{stdout}");
    assert!(stdout.contains("atbus demo --tour"));
}
