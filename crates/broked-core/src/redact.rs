//! Secrets out of text: the one home of the rules that `broked-store` (a database address in
//! an error) and `broked-probe` (a driver's message) use to show text without a password.
//!
//! Pure string functions; the percent codec is the `percent-encoding` crate's.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::Secret;

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`): the way a
/// connection string carries a password.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded as a connection string carries it (upper-case hex, every byte but the
/// unreserved characters).
pub fn percent_encoded(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// `s` percent-decoded; a `%` not followed by two hex digits stays, bytes that are not UTF-8
/// become U+FFFD.
pub fn percent_decoded(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `url` without its user information, query and fragment: `postgres://host:port/db`.
pub fn url_without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(an address that is not a URL)".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = path.split(['?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}{path}")
}

/// Every password `url` carries — the user information's and each `password=` parameter —
/// as written and percent-decoded; empty ones left out.
pub fn url_passwords(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some((userinfo, _)) = rest[..end].rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
        {
            secrets.push(pw.to_string());
        }
        if let Some((_, query)) = rest.split_once('?') {
            for pair in query.split('&') {
                if let Some(pw) = pair.strip_prefix("password=") {
                    secrets.push(pw.to_string());
                }
            }
        }
    }
    let decoded: Vec<String> = secrets.iter().map(|s| percent_decoded(s)).collect();
    secrets.extend(decoded);
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// `text` with every one of `secrets` replaced by `********`, longest first (a secret that
/// contains another is replaced whole). A secret of fewer than `words_below` characters is
/// replaced only where it is not part of a longer alphanumeric word: a short password inside
/// a word ("p" in "port") is not an echo of it, and masking it there would show where its
/// letters occur.
pub fn mask(text: &str, mut secrets: Vec<String>, words_below: usize) -> String {
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in &secrets {
        if !out.contains(s.as_str()) {
            continue;
        }
        out = if s.chars().count() < words_below {
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

/// `scheme://user:pass@host/…` becomes `scheme://********@host/…`, wherever it appears.
pub fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '>') || c.is_whitespace())
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

    #[test]
    fn percent_forms() {
        assert_eq!(
            percent_encoded("p@ss w0rd!-._~é"),
            "p%40ss%20w0rd%21-._~%C3%A9"
        );
        assert_eq!(percent_decoded("p%40ss%20w0rd%21"), "p@ss w0rd!");
        assert_eq!(percent_decoded("100% %zz %4"), "100% %zz %4");
        assert_eq!(percent_decoded("%FF"), "\u{FFFD}");
    }

    #[test]
    fn passwords_of_a_url() {
        assert_eq!(
            url_passwords("postgres://u:p%40w@db/x?password=q&sslmode=require&password="),
            ["p%40w", "q", "p@w", "q"]
        );
        assert!(url_passwords("postgres://u@db/x").is_empty());
        assert!(url_passwords("not a url").is_empty());
    }

    #[test]
    fn short_secrets_are_masked_as_words_only_below_the_limit() {
        let text = "port p, pw";
        assert_eq!(mask(text, vec!["p".into()], 4), "port ********, pw");
        assert_eq!(
            mask(text, vec!["p".into()], 0),
            "********ort ********, ********w"
        );
        assert_eq!(mask(text, vec![String::new()], 0), text);
    }

    #[test]
    fn userinfo_anywhere() {
        assert_eq!(
            mask_userinfo("a postgres://u:p@h/x and 'http://v@w' end"),
            "a postgres://********@h/x and 'http://********@w' end"
        );
    }
}
