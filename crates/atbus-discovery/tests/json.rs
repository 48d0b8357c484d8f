//! The JSON form: exact field names, parse-with-validation, and a round-trip property.

use std::collections::BTreeMap;

use atbus_discovery::{
    Gateway, GatewayMatch, Host, HostMatch, Metadata, MetadataMatch, NodeRecord, RecordError,
    RelayRef,
};
use proptest::prelude::*;

const EXAMPLE: &str = r#"{"name":"echo-1","version":"0.1.0","custom_data":"{\"shard\":3}","tokens":["key-2024-01"],"host":{"hostname":"host-a","pid":4242},"metadata":{"namespace_name":"prod","api_version":"example.com/v1","kind":"echo","group":"demo","labels":{"area.region":"eu","area.zone_id":"7"},"annotations":{"example.com/owner":"team-a"}},"gateways":[{"priority":100,"address":["mem://echo-1","unix:///run/atbus/echo-1.sock","tcp://10.0.0.1:7000"],"match":{"metadata":{"namespace_name":"prod"}}},{"priority":10,"address":["tcp://echo.example.com:443"]},{"priority":5,"address":["udp://10.0.0.1:7001"],"match":{"host":{"hostname":"host-a"}}}],"advertise_relay":{"name":"relay-eu-1"}}"#;

#[test]
fn example_parses_and_serializes_back_byte_for_byte() {
    let r = NodeRecord::from_json(EXAMPLE.as_bytes()).expect("valid example");
    assert_eq!(r.host.pid, 4242);
    assert_eq!(r.gateways[1].match_rule, GatewayMatch::default());
    assert_eq!(r.to_json().expect("serialize"), EXAMPLE);
}

#[test]
fn missing_fields_default_and_unknown_fields_are_ignored() {
    let r = NodeRecord::from_json(br#"{"name":"a","future_field":1}"#).expect("minimal");
    assert_eq!(r, NodeRecord::new("a"));
}

#[test]
fn from_json_reports_the_kind_of_failure() {
    assert!(matches!(
        NodeRecord::from_json(b"{"),
        Err(RecordError::Json(_))
    ));
    assert!(matches!(
        NodeRecord::from_json(br#"{"version":"1"}"#),
        Err(RecordError::Json(_))
    ));
    match NodeRecord::from_json(br#"{"name":"a","metadata":{"labels":{"bad key":"x"}}}"#) {
        Err(RecordError::Invalid(e)) => {
            assert!(e.has_field(r#"metadata.labels["bad key"]"#), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let huge = vec![b' '; atbus_discovery::record::RECORD_JSON_MAX_LEN + 1];
    assert!(matches!(
        NodeRecord::from_json(&huge),
        Err(RecordError::TooLarge { .. })
    ));
}

fn dns_name() -> impl Strategy<Value = String> {
    "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?){0,3}"
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?"
}

fn label_key() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}"),
        "[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?",
    )
        .prop_map(|(p, n)| match p {
            Some(p) => format!("{p}/{n}"),
            None => format!("x{n}"),
        })
}

fn label_value() -> impl Strategy<Value = String> {
    "([A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?)?"
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(label_key(), label_value(), 0..6)
}

fn metadata_match() -> impl Strategy<Value = MetadataMatch> {
    (
        proptest::option::of(dns_label()),
        proptest::option::of(label_value()),
        labels(),
    )
        .prop_map(|(namespace_name, kind, labels)| MetadataMatch {
            namespace_name,
            kind,
            labels,
            ..MetadataMatch::default()
        })
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        (dns_name(), 1u16..).prop_map(|(h, p)| format!("tcp://h{h}:{p}")),
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, p)| {
            let ip = std::net::Ipv4Addr::from(ip);
            if ip.is_unspecified() {
                format!("udp://10.0.0.1:{p}")
            } else {
                format!("udp://{ip}:{p}")
            }
        }),
        "/[a-z]{1,10}(/[a-z0-9.]{1,10}){0,3}".prop_map(|p| format!("unix://{p}")),
        dns_name().prop_map(|n| format!("mem://{n}")),
    ]
}

fn gateway() -> impl Strategy<Value = Gateway> {
    (
        any::<i32>(),
        proptest::collection::btree_set(address(), 1..4),
        proptest::option::of((
            proptest::option::of(dns_name()),
            proptest::option::of(any::<u32>()),
        )),
        proptest::option::of(metadata_match()),
    )
        .prop_map(|(priority, address, host, metadata)| Gateway {
            priority,
            address: address.into_iter().collect(),
            match_rule: GatewayMatch {
                host: host.map(|(hostname, pid)| HostMatch { hostname, pid }),
                metadata,
            },
        })
}

fn record() -> impl Strategy<Value = NodeRecord> {
    (
        (
            dns_name(),
            "[ -~&&[^ ]]{0,16}",
            ".{0,32}",
            proptest::collection::btree_set("[A-Za-z0-9._:-]{1,20}", 0..4),
        ),
        (proptest::option::of(dns_name()), any::<u32>()),
        (
            proptest::option::of(dns_label()),
            label_value(),
            label_value(),
            labels(),
            labels(),
        ),
        proptest::collection::vec(gateway(), 0..4),
        proptest::option::of((
            proptest::option::of(dns_name()),
            proptest::option::of(metadata_match()),
        )),
    )
        .prop_map(
            |(
                (name, version, custom_data, tokens),
                (hostname, pid),
                (ns, kind, group, labels, annotations),
                gateways,
                relay,
            )| {
                NodeRecord {
                    name,
                    version,
                    custom_data,
                    tokens: tokens.into_iter().collect(),
                    host: Host {
                        hostname: hostname.unwrap_or_default(),
                        pid,
                    },
                    metadata: Metadata {
                        namespace_name: ns.unwrap_or_default(),
                        api_version: String::new(),
                        kind,
                        group,
                        labels,
                        annotations,
                    },
                    gateways,
                    advertise_relay: relay.map(|(name, metadata)| {
                        if name.is_none() && metadata.is_none() {
                            RelayRef {
                                name: Some("relay".into()),
                                metadata: None,
                            }
                        } else {
                            RelayRef { name, metadata }
                        }
                    }),
                }
            },
        )
}

proptest! {
    #[test]
    fn generated_records_are_valid_and_round_trip(r in record()) {
        prop_assert_eq!(r.validate(), Ok(()));
        let json = r.to_json().expect("serialize");
        let back = NodeRecord::from_json(json.as_bytes()).expect("parse back");
        prop_assert_eq!(&back, &r);
        prop_assert_eq!(back.to_json().expect("serialize"), json);
    }

    #[test]
    fn arbitrary_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = NodeRecord::from_json(&bytes);
    }

    #[test]
    fn arbitrary_selector_text_never_panics(text in ".{0,64}") {
        if let Ok(s) = atbus_discovery::Selector::parse(&text) {
            let again = atbus_discovery::Selector::parse(&s.to_string());
            prop_assert!(again.is_ok(), "display of {:?} must parse", text);
        }
    }
}
