//! Validation tables: Kubernetes names, label keys and values, annotations, record fields.

use atbus_discovery::validate::{
    TOTAL_ANNOTATION_SIZE_LIMIT, check_dns1123_label, check_dns1123_subdomain, check_label_value,
    check_qualified_name,
};
use atbus_discovery::{Gateway, NodeRecord, Problem, RelayRef};

fn label(n: usize) -> String {
    "a".repeat(n)
}

/// A subdomain of exactly `n` bytes made of 63-byte parts.
fn subdomain(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        if !s.is_empty() {
            s.push('.');
        }
        let take = (n - s.len()).min(63);
        s.push_str(&"b".repeat(take));
    }
    if s.ends_with('.') {
        s.pop();
        s.push('c');
    }
    assert_eq!(s.len(), n);
    s
}

#[test]
fn dns1123_subdomain_table() {
    let ok = [
        "a".to_owned(),
        "echo-1".into(),
        "echo.prod.example".into(),
        "0abc".into(),
        subdomain(253),
        format!("{}.x", label(63)),
    ];
    for s in &ok {
        assert_eq!(check_dns1123_subdomain(s), Ok(()), "{s}");
    }
    let bad: Vec<(String, Problem)> = vec![
        (String::new(), Problem::Empty),
        (subdomain(254), Problem::TooLong { len: 254, max: 253 }),
        (format!("{}.x", label(64)), Problem::NotDnsSubdomain),
        ("Echo".into(), Problem::NotDnsSubdomain),
        ("echo-".into(), Problem::NotDnsSubdomain),
        ("-echo".into(), Problem::NotDnsSubdomain),
        ("echo..a".into(), Problem::NotDnsSubdomain),
        (".echo".into(), Problem::NotDnsSubdomain),
        ("echo_1".into(), Problem::NotDnsSubdomain),
        ("echo/1".into(), Problem::NotDnsSubdomain),
        ("ech o".into(), Problem::NotDnsSubdomain),
        ("échο".into(), Problem::NotDnsSubdomain),
    ];
    for (s, want) in bad {
        assert_eq!(check_dns1123_subdomain(&s), Err(want), "{s}");
    }
}

#[test]
fn dns1123_label_table() {
    assert_eq!(check_dns1123_label(&label(63)), Ok(()));
    assert_eq!(
        check_dns1123_label(&label(64)),
        Err(Problem::TooLong { len: 64, max: 63 })
    );
    for bad in ["a.b", "A", "a-", "-a", "a_b"] {
        assert_eq!(check_dns1123_label(bad), Err(Problem::NotDnsLabel), "{bad}");
    }
    assert_eq!(check_dns1123_label(""), Err(Problem::Empty));
}

#[test]
fn label_key_table() {
    let ok = [
        "app".to_owned(),
        "MyName".into(),
        "my.name".into(),
        "123-abc".into(),
        "a_b".into(),
        "area.region".into(),
        "example.com/MyName".into(),
        "app.kubernetes.io/name".into(),
        label(63),
        format!("{}/{}", subdomain(253), label(63)),
    ];
    for s in &ok {
        assert_eq!(check_qualified_name(s), Ok(()), "{s}");
    }
    let bad: Vec<(String, Problem)> = vec![
        (String::new(), Problem::Empty),
        (label(64), Problem::NameTooLong { len: 64 }),
        (
            format!("{}/a", subdomain(254)),
            Problem::PrefixTooLong { len: 254 },
        ),
        ("a/b/c".into(), Problem::TooManySlashes),
        ("/name".into(), Problem::EmptyPrefix),
        ("example.com/".into(), Problem::EmptyName),
        ("Example.com/a".into(), Problem::PrefixNotDnsSubdomain),
        ("ex_ample.com/a".into(), Problem::PrefixNotDnsSubdomain),
        ("bad key".into(), Problem::NotQualifiedName),
        ("key-".into(), Problem::NotQualifiedName),
        ("_key".into(), Problem::NotQualifiedName),
        ("key.".into(), Problem::NotQualifiedName),
        ("k=y".into(), Problem::NotQualifiedName),
    ];
    for (s, want) in bad {
        assert_eq!(check_qualified_name(&s), Err(want), "{s}");
    }
}

#[test]
fn label_value_table() {
    for ok in ["", "eu", "v1.2_3-x", "A", &label(63)] {
        assert_eq!(check_label_value(ok), Ok(()), "{ok}");
    }
    assert_eq!(
        check_label_value(&label(64)),
        Err(Problem::TooLong { len: 64, max: 63 })
    );
    for bad in ["-a", "a-", "a b", "a/b", "_", "é"] {
        assert_eq!(check_label_value(bad), Err(Problem::NotLabelValue), "{bad}");
    }
}

fn good_record() -> NodeRecord {
    let mut r = NodeRecord::new("echo-1");
    r.version = "0.1.0".into();
    r.tokens = vec!["key-2024".into()];
    r.host.hostname = "host-a".into();
    r.host.pid = 42;
    r.metadata.namespace_name = "prod".into();
    r.metadata.kind = "echo".into();
    r.metadata.labels.insert("area.region".into(), "eu".into());
    r.gateways.push(Gateway {
        priority: 1,
        address: vec!["tcp://10.0.0.1:7000".into()],
        ..Gateway::default()
    });
    r
}

fn fields(r: &NodeRecord) -> Vec<String> {
    match r.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e.errors().iter().map(|e| e.field.clone()).collect(),
    }
}

#[test]
fn record_errors_name_the_field() {
    assert_eq!(fields(&good_record()), Vec::<String>::new());

    type Mutate = Box<dyn Fn(&mut NodeRecord)>;
    let cases: Vec<(&str, Mutate)> = vec![
        ("name", Box::new(|r| r.name = "Echo".into())),
        ("version", Box::new(|r| r.version = "1 0".into())),
        ("tokens[1]", Box::new(|r| r.tokens.push("key-2024".into()))),
        (
            "tokens[1]",
            Box::new(|r| r.tokens.push("secret value".into())),
        ),
        (
            "host.hostname",
            Box::new(|r| r.host.hostname = "a b".into()),
        ),
        (
            "metadata.namespace_name",
            Box::new(|r| r.metadata.namespace_name = "Prod".into()),
        ),
        (
            "metadata.kind",
            Box::new(|r| r.metadata.kind = "echo!".into()),
        ),
        (
            "metadata.api_version",
            Box::new(|r| r.metadata.api_version = "a/b/c".into()),
        ),
        (
            r#"metadata.labels["bad key"]"#,
            Box::new(|r| {
                r.metadata.labels.insert("bad key".into(), "x".into());
            }),
        ),
        (
            r#"metadata.labels["area.zone_id"]"#,
            Box::new(|r| {
                r.metadata.labels.insert("area.zone_id".into(), "-1".into());
            }),
        ),
        (
            r#"metadata.labels["kind"]"#,
            Box::new(|r| {
                r.metadata.labels.insert("kind".into(), "x".into());
            }),
        ),
        (
            r#"metadata.labels["atbus.io/x"]"#,
            Box::new(|r| {
                r.metadata.labels.insert("atbus.io/x".into(), "x".into());
            }),
        ),
        (
            r#"metadata.annotations["sub.atbus.io/x"]"#,
            Box::new(|r| {
                r.metadata
                    .annotations
                    .insert("sub.atbus.io/x".into(), "x".into());
            }),
        ),
        (
            "metadata.annotations",
            Box::new(|r| {
                r.metadata
                    .annotations
                    .insert("big".into(), "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT));
            }),
        ),
        (
            "gateways[0].address[0]",
            Box::new(|r| r.gateways[0].address[0] = "tcp://h".into()),
        ),
        (
            "gateways[0].address",
            Box::new(|r| r.gateways[0].address.clear()),
        ),
        (
            "gateways[0].address[1]",
            Box::new(|r| r.gateways[0].address.push("tcp://10.0.0.1:7000".into())),
        ),
        (
            r#"gateways[0].match.metadata.labels["a b"]"#,
            Box::new(|r| {
                let m = r.gateways[0].match_rule.metadata.get_or_insert_default();
                m.labels.insert("a b".into(), "x".into());
            }),
        ),
        (
            "advertise_relay",
            Box::new(|r| r.advertise_relay = Some(RelayRef::default())),
        ),
        (
            "advertise_relay.name",
            Box::new(|r| {
                r.advertise_relay = Some(RelayRef {
                    name: Some("Relay".into()),
                    metadata: None,
                })
            }),
        ),
    ];
    for (field, mutate) in cases {
        let mut r = good_record();
        mutate(&mut r);
        assert_eq!(fields(&r), vec![field.to_owned()], "case {field}");
    }
}

#[test]
fn annotations_exactly_at_the_limit_pass() {
    let mut r = good_record();
    r.metadata
        .annotations
        .insert("big".into(), "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 3));
    assert_eq!(r.validate(), Ok(()));
}

#[test]
fn app_kubernetes_io_labels_are_allowed() {
    let mut r = good_record();
    r.metadata
        .labels
        .insert("app.kubernetes.io/name".into(), "echo".into());
    assert_eq!(r.validate(), Ok(()));
}

#[test]
fn errors_display_with_field_and_reason() {
    let mut r = good_record();
    r.metadata.labels.insert("bad key".into(), "x".into());
    let msg = r.validate().expect_err("invalid").to_string();
    assert!(
        msg.starts_with(r#"metadata.labels["bad key"]: name part must"#),
        "{msg}"
    );
}

#[test]
fn too_many_labels_is_reported_on_the_map() {
    let mut r = good_record();
    for i in 0..65 {
        r.metadata.labels.insert(format!("k{i}"), "v".into());
    }
    let e = r.validate().expect_err("too many labels");
    assert!(e.has_field("metadata.labels"), "{e}");
}
