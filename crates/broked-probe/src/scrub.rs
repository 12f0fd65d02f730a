//! Removing secrets from text that drivers produced.

use broked_core::redact::{mask, mask_userinfo, percent_encoded};
use broked_core::{Connection, Secret};

/// `text` without the connection's password, without any string value of its extra object
/// (of 4 characters or more; shorter ones such as `"on"` would garble the message), and without
/// the user information of any URI in it; each replaced by `********`.
///
/// The password is also removed percent-encoded, as a connection string carries it; a
/// password shorter than 4 characters only where it stands as a word of its own
/// ([`broked_core::redact::mask`]).
pub fn scrub(text: &str, conn: &Connection) -> String {
    let mut secrets: Vec<String> = Vec::new();
    if let Some(p) = conn
        .password
        .as_ref()
        .map(Secret::expose)
        .filter(|p| !p.is_empty())
    {
        push_with_encoded(p, &mut secrets);
    }
    if let Some(extra) = &conn.extra
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(extra.expose())
    {
        collect_strings(&value, &mut secrets);
    }
    mask(&mask_userinfo(text), secrets, 4)
}

/// `s`, and its percent-encoded form where that differs.
fn push_with_encoded(s: &str, out: &mut Vec<String>) {
    out.push(s.to_owned());
    let encoded = percent_encoded(s);
    if encoded != s {
        out.push(encoded);
    }
}

fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) if s.chars().count() >= 4 => push_with_encoded(s, out),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broked_core::{ConnId, ConnType};

    fn conn(password: Option<&str>, extra: Option<&str>) -> Connection {
        Connection {
            conn_id: ConnId::new("c").unwrap(),
            conn_type: ConnType::Postgres,
            host: Some("db".into()),
            port: None,
            schema: None,
            login: Some("etl".into()),
            password: password.map(Secret::from),
            extra: extra.map(Secret::from),
            description: None,
        }
    }

    #[test]
    fn a_short_password_is_masked_only_as_a_word_of_its_own() {
        let c = conn(Some("p"), None);
        assert_eq!(
            scrub("check host, port and firewalls; password p was refused", &c),
            "check host, port and firewalls; password ******** was refused"
        );
    }

    #[test]
    fn table() {
        let c = conn(
            Some("p@ss w0rd!"),
            Some(
                r#"{"token":"tok-123456","nested":{"k":["deep-secret"]},"sslmode":"on","n":12345}"#,
            ),
        );
        let cases = [
            ("nothing here", "nothing here"),
            ("password p@ss w0rd! rejected", "password ******** rejected"),
            (
                "url postgres://etl:p%40ss%20w0rd%21@db:5432/x",
                "url postgres://********@db:5432/x",
            ),
            (
                "dsn mysql://u:other@h/db and http://h/x",
                "dsn mysql://********@h/db and http://h/x",
            ),
            ("encoded p%40ss%20w0rd%21 alone", "encoded ******** alone"),
            (
                "bearer tok-123456 and deep-secret",
                "bearer ******** and ********",
            ),
            ("sslmode on stays", "sslmode on stays"),
            ("numbers 12345 stay", "numbers 12345 stay"),
        ];
        for (input, want) in cases {
            assert_eq!(scrub(input, &c), want, "{input}");
        }
    }

    #[test]
    fn no_secrets_no_change() {
        let c = conn(None, None);
        assert_eq!(scrub("a://b@c", &c), "a://********@c");
        assert_eq!(scrub("plain", &c), "plain");
        let c = conn(Some(""), Some("not json"));
        assert_eq!(scrub("plain", &c), "plain");
    }

    #[test]
    fn secret_containing_another() {
        let c = conn(Some("abcd"), Some(r#"{"k":"xxabcdxx"}"#));
        assert_eq!(scrub("xxabcdxx abcd", &c), "******** ********");
    }
}
