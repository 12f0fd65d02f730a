//! Removing secrets from text that drivers produced.

use broked_core::{Connection, Secret};

/// `text` without the connection's password, without any string value of its extra object
/// (of 4 characters or more; shorter ones such as `"on"` would garble the message), and without
/// the user information of any URI in it; each replaced by `********`.
///
/// The password is also removed percent-encoded, as a connection string carries it.
pub fn scrub(text: &str, conn: &Connection) -> String {
    let mut secrets: Vec<String> = Vec::new();
    if let Some(p) = conn
        .password
        .as_ref()
        .map(Secret::expose)
        .filter(|p| !p.is_empty())
    {
        secrets.push(p.to_owned());
        let encoded = percent_encode(p);
        if encoded != p {
            secrets.push(encoded);
        }
    }
    if let Some(extra) = &conn.extra
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(extra.expose())
    {
        collect_strings(&value, &mut secrets);
    }
    // Longest first, so a secret that contains another is removed whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = scrub_userinfo(text);
    for s in &secrets {
        if !out.contains(s.as_str()) {
            continue;
        }
        out = if s.chars().count() < 4 {
            // A short password inside a word ("p" in "port") is not an echo of it; masking
            // it there would show where the password's letters occur.
            replace_whole_words(&out, s)
        } else {
            out.replace(s.as_str(), Secret::MASK)
        };
    }
    out
}

/// `text` with `needle` replaced where it is not part of a longer alphanumeric word.
fn replace_whole_words(text: &str, needle: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(needle) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + needle.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        out.push_str(&rest[..at]);
        if word(before) || word(after) {
            out.push_str(needle);
        } else {
            out.push_str(Secret::MASK);
        }
        rest = &rest[at + needle.len()..];
    }
    out.push_str(rest);
    out
}

fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) if s.chars().count() >= 4 => {
            out.push(s.clone());
            let encoded = percent_encode(s);
            if encoded != *s {
                out.push(encoded);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://user:pass@host/…` becomes `scheme://********@host/…`, wherever it appears.
fn scrub_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let end = tail
            .find(|c: char| {
                c == '/'
                    || c == '?'
                    || c == '#'
                    || c.is_whitespace()
                    || c == '"'
                    || c == '\''
                    || c == '>'
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(Secret::MASK);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
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
