use proptest::prelude::*;

use super::*;

const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 x 0x01
const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="; // 32 x 0x02

fn valid() -> String {
    format!(
        "# a comment\n\
         broked-keyring v1\n\
         active k2\n\
         key k1 2026-11-26T10:53:15Z {K1}\n\
         \n\
         key k2 2026-11-27T08:00:00+01:00 {K2}\n\
         end\n"
    )
}

fn path() -> &'static Path {
    Path::new("/data/broked.db.key")
}

fn err(text: &str) -> (usize, String) {
    match parse(path(), text.as_bytes()) {
        Err(CryptoError::Malformed {
            path: p,
            line,
            reason,
        }) => {
            assert_eq!(p, path());
            (line, reason)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

#[test]
fn parses_a_valid_file() {
    let contents = parse(path(), valid().as_bytes()).unwrap();
    assert_eq!(contents.active, KeyId::new(2));
    assert_eq!(contents.keys.len(), 2);
    let k1 = &contents.keys[&KeyId::new(1)];
    assert_eq!(k1.key.material(), &[1u8; 32]);
    assert_eq!(
        k1.created_at,
        time::macros::datetime!(2026-11-26 10:53:15 UTC)
    );
    // CRLF line ends and no final newline are tolerated.
    let crlf = valid().replace('\n', "\r\n");
    assert!(parse(path(), crlf.trim_end().as_bytes()).is_ok());
}

#[test]
fn serialize_then_parse_is_identity() {
    let contents = parse(path(), valid().as_bytes()).unwrap();
    let text = serialize(&contents, "broked.db");
    assert!(text.starts_with("# broked connections keyring for the database `broked.db`"));
    assert!(text.contains("BACK IT UP"));
    assert!(text.contains("\nbroked-keyring v1\nactive k2\nkey k1 2026-11-26T10:53:15Z "));
    assert!(text.ends_with("\nend\n"));
    let again = parse(path(), text.as_bytes()).unwrap();
    assert_eq!(again.active, contents.active);
    assert_eq!(
        again.keys.keys().collect::<Vec<_>>(),
        contents.keys.keys().collect::<Vec<_>>()
    );
    for (id, entry) in &contents.keys {
        assert_eq!(again.keys[id].key.material(), entry.key.material());
        assert_eq!(again.keys[id].created_at, entry.created_at);
    }
}

#[test]
fn malformed_files_name_the_line() {
    let v = valid();
    let table: Vec<(String, usize, &str)> = vec![
        (String::new(), 1, "empty or truncated"),
        ("# only a comment\n".into(), 2, "empty or truncated"),
        ("broked-keyring v2\n".into(), 1, "not supported"),
        ("active k1\n".into(), 1, "format line"),
        (
            v.replace("active k2", "active k3"),
            3,
            "active key k3 is not in the file",
        ),
        (v.replace("active k2", "active 2"), 3, "key id"),
        (v.replace("active k2\n", ""), 6, "no `active` line"),
        (v.replace("end\n", ""), 7, "no `end` line"),
        (v.replace("end\n", "end\nkey k3\n"), 8, "after `end`"),
        (v.replace("key k2", "key k1"), 6, "key k1 appears twice"),
        (v.replace("key k2", "key kk"), 6, "key id"),
        (
            v.replace("2026-11-26T10:53:15Z", "yesterday"),
            4,
            "RFC 3339",
        ),
        (v.replace(K1, &K1[..40]), 4, "32 bytes"),
        (v.replace(K1, "AQEB"), 4, "32 bytes"),
        (v.replace(K1, &format!("{K1}{K1}")), 4, "32 bytes"),
        (v.replace(K1, "!!!!"), 4, "32 bytes"),
        (v.replace(&format!(" {K1}"), ""), 4, "unrecognised line"),
        (
            v.replace("active k2", "active k2 k1"),
            3,
            "unrecognised line",
        ),
        (v.replace("active k2", "passive k2"), 3, "unrecognised line"),
        (
            "broked-keyring v1\nactive k1\nend\n".into(),
            3,
            "no `key` line",
        ),
    ];
    for (text, line, reason) in table {
        let (got_line, got_reason) = err(&text);
        assert_eq!(
            (got_line, got_reason.contains(reason)),
            (line, true),
            "{got_reason}\n{text}"
        );
    }
    let mut bytes = valid().into_bytes();
    bytes[2] = 0xff;
    assert_eq!(
        parse(path(), &bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        "key file /data/broked.db.key, line 1: not UTF-8 text; the file is damaged or not a broked keyring: restore it from backup"
    );
}

#[test]
fn errors_never_echo_key_material() {
    for text in [
        valid().replace(&format!(" {K1}"), ""),
        valid().replace("key k1", &format!("key k1 {K1}")),
        valid().replace(K1, &K1[..43]),
    ] {
        let (_, reason) = err(&text);
        assert!(!reason.contains(&K1[..20]), "{reason}");
    }
}

#[test]
fn every_truncation_is_an_error() {
    let v = valid();
    for cut in 0..v.len() - 1 {
        let prefix = &v.as_bytes()[..cut];
        assert!(parse(path(), prefix).is_err(), "cut at {cut} accepted");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(path(), &bytes);
    }

    #[test]
    fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
        prop_oneof![
            Just("broked-keyring v1".to_string()),
            Just("end".to_string()),
            "active k[0-9]{1,3}",
            "key k[0-9]{1,2} [0-9T:Z-]{0,22} [A-Za-z0-9+/=]{0,48}",
            ".{0,20}",
        ],
        0..8,
    )) {
        let _ = parse(path(), lines.join("\n").as_bytes());
    }
}
