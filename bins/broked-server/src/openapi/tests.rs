//! The document's patterns against the parser: each must accept exactly what the parser
//! accepts, on generated input (so neither can change alone).

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use broked_core::{ConnectionInput, ExtraKeyRole};
use proptest::prelude::*;
use regex::Regex;

use super::*;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

/// Each type's host pattern (blank allowed where the type does not require a host), the
/// bracketed-IPv6-only pattern, compiled once: they are large.
static HOSTS: LazyLock<Vec<(ConnType, Regex)>> = LazyLock::new(|| {
    ConnType::ALL
        .into_iter()
        .map(|t| {
            let blank_ok = t.field_use(Field::Host) != FieldUse::Required;
            (t, re(&host_pattern(t, blank_ok)))
        })
        .collect()
});
static IPV6: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{}$", ipv6())));
static NAMING: LazyLock<Vec<(ConnType, Option<Regex>)>> = LazyLock::new(|| {
    ConnType::ALL
        .into_iter()
        .map(|t| (t, naming_pattern(t).map(|p| re(&p))))
        .collect()
});
static TUNNEL: LazyLock<Regex> = LazyLock::new(|| re(&tunnel_key_pattern()));
static ROTATE_EVERY: LazyLock<Regex> = LazyLock::new(|| re(&rotate_every_pattern()));
static ROTATE_EVERY_KEY: LazyLock<Regex> = LazyLock::new(|| re(&rotate_every_key_pattern()));

/// Whether the parser finds nothing wrong with `host` for a `t` connection.
fn parser_takes_host(t: ConnType, host: &str) -> bool {
    let input = ConnectionInput {
        conn_id: Some("c".into()),
        conn_type: Some(t.as_str().into()),
        host: Some(host.into()),
        port: (t == ConnType::Generic).then_some(1),
        ..ConnectionInput::default()
    };
    match input.validate() {
        Ok(_) => true,
        Err(e) => !e.errors().iter().any(|e| e.field == "host"),
    }
}

#[test]
fn the_whitespace_and_control_classes_are_rusts() {
    let ws = re(&format!("^{WS}$"));
    let not_control = re(&format!("^{NOT_CONTROL}$"));
    let visible = re(&format!("^{VISIBLE}$"));
    let not_blank = re(&format!("^{NOT_BLANK}$"));
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        let s = c.to_string();
        assert_eq!(ws.is_match(&s), c.is_whitespace(), "{c:?}");
        assert_eq!(not_control.is_match(&s), !c.is_control(), "{c:?}");
        assert_eq!(
            visible.is_match(&s),
            !c.is_control() && !c.is_whitespace(),
            "{c:?}"
        );
        assert_eq!(not_blank.is_match(&s), !c.is_whitespace(), "{c:?}");
    }
}

/// Issue 18: hosts written as URLs, for every type — the patterns take what the parser takes.
#[test]
fn host_patterns_state_urls_as_the_parser_reads_them() {
    let hosts = [
        "http://127.0.0.1:9000",
        "HTTPS://api.example.com:8443/v1/items/",
        "postgres://db.internal:5433/analytics",
        "postgresql://[::1]:5432/x",
        "mariadb://db/shop",
        "sftp://files.example.com:2222//upload/in",
        "ssh://files",
        "s3+http://minio:9000/bucket/",
        "s3+https://minio/bucket/key",
        "s3://bucket",
        "tcp://cache:6379",
        "generic://cache:6379/0",
        "redis://cache:6379",
        "http://good@evil",
        "http://x?a=1",
        "http://x:0",
        "http://x:65535",
        "http://x:065535",
        "http://x:65536",
        "http://x:",
        "http://::1",
        "http://::1:9000",
        "http://::1/v1",
        "http://[::1]:9000/a:/:b",
        "http://x/a://b",
        "http://https://x",
        "http://%65vil.com",
        "http://x/a%20b",
        "://x",
        "sqlite:///var/lib/app.db",
        "/var/run/postgresql",
        "/a://b",
    ];
    for host in hosts {
        for (t, pattern) in HOSTS.iter() {
            // A generic connection's port field is 1 here: a URL naming another disagrees.
            if *t == ConnType::Generic && host.contains(":6379") {
                continue;
            }
            assert_eq!(
                pattern.is_match(host),
                parser_takes_host(*t, host),
                "{t} {host:?}"
            );
        }
    }
}

/// Strings made of the characters that decide a host: hex digits, separators, brackets,
/// scheme letters, whitespace, a control character, a non-ASCII letter.
fn host_like() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "0", "1", "2", "5", "9", "a", "f", "F", "g", "h", "t", "p", "s", "H", "T", "P", "S", ":",
        "::", ".", "-", "_", "/", "[", "]", " ", "\t", "\u{a0}", "\u{1}", "\u{85}", "é", "?",
        "http://", "https://", "HTTPS://", "255", "256", "01", "ffff", "12345", "1.2.3.4",
    ]);
    prop::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
}

fn ipv6_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u128>().prop_map(|n| Ipv6Addr::from(n).to_string()),
        (any::<u128>(), any::<u32>()).prop_map(|(n, v4)| {
            // The long form with an IPv4 tail, as Display never writes it.
            let a = Ipv6Addr::from(n).segments();
            let v4 = std::net::Ipv4Addr::from(v4);
            format!(
                "{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{v4}",
                a[0], a[1], a[2], a[3], a[4], a[5]
            )
        }),
        (
            any::<u128>(),
            0usize..40,
            prop::sample::select(vec!["", ":", "::", "0", "1.2.3.4", "g"])
        )
            .prop_map(|(n, cut, tail)| {
                let s = Ipv6Addr::from(n).to_string();
                format!("{}{tail}", &s[..cut.min(s.len())])
            }),
    ]
}

/// Strings made of what decides an interval: digits, the bounds, signs, units, white space.
fn interval_like() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "0",
        "1",
        "5",
        "9",
        "00",
        "+",
        "-",
        ".",
        "s",
        "m",
        "h",
        "d",
        "w",
        "y",
        "D",
        " ",
        "\t",
        "\u{3000}",
        "\u{1}",
        "é",
        "100000",
        "100001",
        "99999",
        "8640000000",
        "8640000001",
        "8639999999",
        "18446744073709551616",
    ]);
    prop::collection::vec(pieces, 0..6).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn host_patterns_accept_what_the_parser_accepts(host in host_like()) {
        for (t, pattern) in HOSTS.iter() {
            prop_assert_eq!(pattern.is_match(&host), parser_takes_host(*t, &host), "{} {:?}", t, host);
        }
    }

    #[test]
    fn the_ipv6_pattern_is_ipv6_addr_from_str(s in ipv6_like()) {
        prop_assert_eq!(IPV6.is_match(&s), s.parse::<Ipv6Addr>().is_ok(), "{:?}", s);
        let bracketed = format!("[{s}]");
        for (t, pattern) in HOSTS.iter() {
            prop_assert_eq!(pattern.is_match(&bracketed), parser_takes_host(*t, &bracketed), "{} {:?}", t, bracketed);
        }
    }

    /// `extra.rotate_every`'s value: the pattern takes what the parser takes (issue 20).
    #[test]
    fn the_rotate_every_pattern_is_the_parser(text in interval_like()) {
        prop_assert_eq!(
            ROTATE_EVERY.is_match(&text),
            broked_core::parse_rotate_every(&text).is_ok(),
            "{:?}", text
        );
    }

    /// `rotate_every` in every spelling the rotation keys are read in (and random keys).
    #[test]
    fn the_rotate_every_key_pattern_is_the_rotation_keys(
        flips in prop::collection::vec(any::<bool>(), 12),
        pad in prop::sample::select(vec!["", " ", "\t", "\u{3000}", "x", "\u{1}"]),
        random in "[a-zA-Z_ -]{0,12}",
    ) {
        let spelled: String = broked_core::ROTATE_EVERY_KEY
            .chars()
            .zip(flips.iter().cycle())
            .map(|(c, flip)| match (c, flip) {
                ('_', true) => '-',
                (c, true) => c.to_ascii_uppercase(),
                (c, false) => c,
            })
            .collect();
        for key in [format!("{pad}{spelled}{pad}"), random.clone()] {
            let map: serde_json::Map<String, serde_json::Value> =
                [(key.clone(), serde_json::Value::Null)].into_iter().collect();
            let read = broked_core::rotation_key(&map, broked_core::ROTATE_EVERY_KEY)
                .is_ok_and(|v| v.is_some());
            prop_assert_eq!(ROTATE_EVERY_KEY.is_match(&key), read, "{:?}", key);
        }
    }

    /// Every spelling of a key the target table reads (case, `-`/`_`, surrounding
    /// whitespace), and random keys: the pattern refuses exactly the naming ones.
    #[test]
    fn naming_patterns_are_the_target_table(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec(any::<bool>(), 32),
        pad in prop::sample::select(vec!["", " ", "\t", "\u{3000}", "x", "\u{1}"]),
        random in "[a-zA-Z_ -]{0,12}",
    ) {
        for (t, pattern) in NAMING.iter() {
            let t = *t;
            let keys = t.target_keys();
            let mut candidates = vec![random.clone()];
            if !keys.is_empty() {
                let (key, _) = keys[pick.index(keys.len())];
                let spelled: String = key
                    .chars()
                    .zip(flips.iter().cycle())
                    .map(|(c, flip)| match (c, flip) {
                        ('_', true) => '-',
                        (c, true) => c.to_ascii_uppercase(),
                        (c, false) => c,
                    })
                    .collect();
                candidates.push(format!("{pad}{spelled}{pad}"));
            }
            for key in candidates {
                let names = matches!(t.extra_key_role(&key), Some(ExtraKeyRole::Names { .. }));
                let matched = pattern.as_ref().is_some_and(|p| p.is_match(&key));
                prop_assert_eq!(matched, names, "{} {:?}", t, key);
                let tunnel = TUNNEL.is_match(&key);
                prop_assert_eq!(tunnel, broked_core::is_tunnel_key(&key), "{:?}", key);
            }
        }
    }
}

/// Each type's schemas require exactly the fields the type table requires, refuse the ones it
/// does not use, and list exactly the keys the reader accepts.
#[test]
fn each_type_schema_is_the_type_table() {
    let all = schemas();
    let get = |name: &str| {
        &all.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}"))
            .1
    };
    for body in Body::ALL {
        for t in ConnType::ALL {
            let schema = get(&body.branch_name(t));
            let mut keys: Vec<&str> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut accepted = broked_connections::JsonSource::Api.keys();
            keys.sort_unstable();
            accepted.sort_unstable();
            assert_eq!(keys, accepted);
            assert_eq!(schema["additionalProperties"], false);
            let required: Vec<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let mut expected = Vec::new();
            if body == Body::Create {
                expected.push("conn_id");
            }
            expected.push("type");
            if body != Body::Patch {
                for f in Field::ALL {
                    if t.field_use(f) == FieldUse::Required {
                        expected.push(f.name());
                    }
                }
            }
            assert_eq!(required, expected, "{body:?} {t}");
            for f in Field::ALL {
                let p = &schema["properties"][f.name()];
                if t.field_use(f) == FieldUse::Unused {
                    assert!(
                        p["enum"].is_array() || p["type"] == "null",
                        "{body:?} {t} {}: {p}",
                        f.name()
                    );
                }
            }
            assert_eq!(schema["properties"]["type"]["const"], t.as_str());
        }
        let top = get(body.name());
        assert_eq!(
            top["oneOf"].as_array().unwrap().len(),
            ConnType::ALL.len() + usize::from(body == Body::Patch)
        );
    }
    assert_eq!(
        get("ConnectionCreate_postgres")["properties"]["conn_id"]["pattern"],
        ConnId::RULE
    );
}
