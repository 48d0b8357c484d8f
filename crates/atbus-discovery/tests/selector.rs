//! Selector semantics and the text parser.

use atbus_discovery::{
    NodeRecord, Operator, Requirement, Selector, SelectorError, matches_optional,
};

fn record(labels: &[(&str, &str)]) -> NodeRecord {
    let mut r = NodeRecord::new("game-1");
    r.metadata.namespace_name = "prod".into();
    r.metadata.kind = "gamesvr".into();
    for (k, v) in labels {
        r.metadata.labels.insert((*k).into(), (*v).into());
    }
    r
}

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn semantics_table() {
    let eu = record(&[("area.region", "eu"), ("tier", "a"), ("empty", "")]);
    let table: &[(&str, bool)] = &[
        ("", true),
        ("area.region=eu", true),
        ("area.region==eu", true),
        ("area.region=us", false),
        ("area.region!=us", true),
        ("area.region!=eu", false),
        ("missing!=x", true),
        ("missing notin (x)", true),
        ("missing in (x)", false),
        ("missing", false),
        ("!missing", true),
        ("tier", true),
        ("!tier", false),
        ("empty", true),
        ("empty=", true),
        ("empty in (a,)", true),
        ("tier notin (a,b)", false),
        ("tier notin (b,c)", true),
        ("area.region in (eu,us),tier", true),
        ("area.region in (eu,us),!tier", false),
        // Field keys reach the record, not labels.
        ("kind=gamesvr", true),
        ("kind=echo", false),
        ("namespace_name=prod", true),
        ("name=game-1", true),
        ("group", false),
        ("!group", true),
        ("api_version notin (v1)", true),
        ("kind=gamesvr,area.region=eu", true),
    ];
    for &(text, want) in table {
        assert_eq!(sel(text).matches(&eu), want, "{text:?}");
    }
}

#[test]
fn empty_selector_matches_all_but_absent_matches_none() {
    let r = record(&[]);
    let empty = Selector::everything();
    assert!(empty.is_empty());
    assert!(empty.matches(&r));
    assert!(matches_optional(Some(&empty), &r));
    assert!(!matches_optional(None, &r));
}

#[test]
fn parse_builds_expressions_in_order() {
    let s = sel("kind=echo,area.region in (eu,us),!debug,tier notin (a),env,x!=y");
    let want = vec![
        Requirement {
            key: "kind".into(),
            operator: Operator::In,
            values: vec!["echo".into()],
        },
        Requirement {
            key: "area.region".into(),
            operator: Operator::In,
            values: vec!["eu".into(), "us".into()],
        },
        Requirement {
            key: "debug".into(),
            operator: Operator::DoesNotExist,
            values: vec![],
        },
        Requirement {
            key: "tier".into(),
            operator: Operator::NotIn,
            values: vec!["a".into()],
        },
        Requirement {
            key: "env".into(),
            operator: Operator::Exists,
            values: vec![],
        },
        Requirement {
            key: "x".into(),
            operator: Operator::NotIn,
            values: vec!["y".into()],
        },
    ];
    assert_eq!(s.match_expressions, want);
    assert!(s.match_labels.is_empty());
    assert_eq!(
        s.to_string(),
        "kind=echo,area.region in (eu,us),!debug,tier!=a,env,x!=y"
    );
    assert_eq!(sel(&s.to_string()), s, "display parses back");
    // Whitespace is free between tokens.
    assert_eq!(
        sel("  kind = echo ,  area.region  in ( eu , us ) , ! debug,tier notin(a),env,x != y "),
        s
    );
}

#[test]
fn match_labels_display_and_semantics() {
    let mut s = Selector::everything();
    s.match_labels.insert("tier".into(), "a".into());
    s.match_expressions.push(Requirement {
        key: "debug".into(),
        operator: Operator::DoesNotExist,
        values: vec![],
    });
    assert_eq!(s.validate(), Ok(()));
    assert!(s.matches(&record(&[("tier", "a")])));
    assert!(!s.matches(&record(&[("tier", "b")])));
    assert!(!s.matches(&record(&[])));
    assert_eq!(s.to_string(), "tier=a,!debug");
}

#[test]
fn serde_form_uses_kubernetes_operator_names() {
    let s = sel("a in (x),!b");
    let json = serde_json::to_string(&s).expect("serialize");
    assert_eq!(
        json,
        r#"{"match_expressions":[{"key":"a","operator":"In","values":["x"]},{"key":"b","operator":"DoesNotExist"}]}"#
    );
    let back: Selector = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, s);
}

#[test]
fn parser_errors() {
    let syntax = |text: &str, at: usize| match Selector::parse(text) {
        Err(SelectorError::Syntax { pos, .. }) => assert_eq!(pos, at, "{text:?}"),
        other => panic!("{text:?}: expected syntax error, got {other:?}"),
    };
    syntax("a,", 2);
    syntax(",a", 0);
    syntax("a b", 2);
    syntax("a in b", 5);
    syntax("a in (b", 7);
    syntax("a in (b c)", 8);
    syntax("!", 1);
    syntax("!a=b", 2);
    syntax("a==b==c", 4);
    syntax("(a)", 0);
    syntax("a=b c", 4);

    let invalid = |text: &str, field: &str| match Selector::parse(text) {
        Err(SelectorError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text:?}"),
        other => panic!("{text:?}: expected invalid, got {other:?}"),
    };
    invalid("a in ()", "match_expressions[0].values");
    invalid("b,bad/key/x", "match_expressions[1].key");
    invalid("a=-x", "match_expressions[0].values[0]");
    invalid("a in (x,-y)", "match_expressions[0].values[1]");
    invalid("name=Bad", "match_expressions[0].values[0]");
    invalid(
        &format!("a={}", "v".repeat(64)),
        "match_expressions[0].values[0]",
    );

    assert!(matches!(
        Selector::parse(&"a,".repeat(3000)),
        Err(SelectorError::TooLong { .. })
    ));
    let many = (0..65)
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(matches!(
        Selector::parse(&many),
        Err(SelectorError::Invalid { .. })
    ));
}

#[test]
fn field_key_values_follow_the_field_rules() {
    // Node names can be longer than label values; api_version may hold a prefix.
    let long_name = format!("{}.{}", "a".repeat(60), "b".repeat(60));
    let mut r = record(&[]);
    r.name = long_name.clone();
    r.metadata.api_version = "example.com/v1".into();
    assert!(sel(&format!("name={long_name}")).matches(&r));
    assert!(sel("api_version=example.com/v1").matches(&r));
}

#[test]
fn structured_selector_validation() {
    let bad_exists = Selector {
        match_expressions: vec![Requirement {
            key: "a".into(),
            operator: Operator::Exists,
            values: vec!["x".into()],
        }],
        ..Selector::default()
    };
    assert!(matches!(
        bad_exists.validate(),
        Err(SelectorError::UnexpectedValues { .. })
    ));
}
