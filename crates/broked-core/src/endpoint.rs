//! `host` as a URL: the one parser every write path uses (API, CLI, import, `BROKED_CONN_*`,
//! the UI through the API), called by validation ([`crate::ConnectionInput::validate`]).
//!
//! The seed's field table says `host` is a "Hostname or URL". A user pastes the endpoint they
//! have — `http://127.0.0.1:9000` for an S3-compatible store, `https://api.example.com:8443/v1`
//! for an API, `postgres://db.internal:5433/analytics` for a database — and [`split`] turns it
//! into the stored host (with the `http://`/`https://` prefix where the type keeps it: http's
//! `https://`, s3's both), the port and the schema it names. Validation then fills `port` and
//! `schema` from it when they are empty, accepts them when they are equal, and refuses a
//! disagreement naming both fields. The accepted forms per type are in `docs/uri.md`.
//!
//! What is refused, and why (messages never repeat the input):
//! - a login or password in the URL (`user:pw@`, or any `@`): they belong in login and password,
//!   and a password must not land in a plain field;
//! - a `?query` or `#fragment`: options go in extra, which is sealed;
//! - a scheme that does not fit the type (`mysql://` for postgres, `https://` for sftp);
//! - a second `://`, an IPv6 address without brackets, a port outside 1..=65535, a host name with
//!   anything but letters, digits, `.`, `-`, `_` (after percent-decoding).
//!
//! Without `://` the host is a host name, an IP address (IPv6 with or without brackets), a socket
//! path (postgres, mysql) or a file path (sqlite), as before; `host:port` without a scheme stays
//! refused ("put the port in port").

use percent_encoding::percent_decode_str;

use crate::ConnType;
use crate::host::{canonical_host, network_host};

/// What a `host` field holds once read: the host as stored, and the port and schema a URL in it
/// named (`None` when it named none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostParts {
    /// The canonical host: `https://api.example.com` (http), `http://127.0.0.1` (s3),
    /// `db.internal` (postgres), `::1`, a socket path, a file path.
    pub host: String,
    pub port: Option<u16>,
    /// The URL's path without its first `/`, percent-decoded: the database, bucket or base path.
    pub schema: Option<String>,
}

/// The URL schemes a type's `host` accepts, and the prefix each leaves in the stored host.
fn schemes(t: ConnType) -> &'static [(&'static str, &'static str)] {
    match t {
        ConnType::Postgres => &[("postgres", ""), ("postgresql", "")],
        ConnType::Mysql => &[("mysql", ""), ("mariadb", "")],
        ConnType::Sqlite => &[],
        ConnType::Http => &[("http", ""), ("https", "https://")],
        ConnType::Sftp => &[("sftp", ""), ("ssh", "")],
        ConnType::S3 => &[
            ("http", "http://"),
            ("https", "https://"),
            ("s3+http", "http://"),
            ("s3+https", "https://"),
        ],
        ConnType::Generic => &[("generic", ""), ("tcp", "")],
    }
}

/// The URL schemes a type's `host` accepts (lowercase; read case-insensitively). None for
/// sqlite, whose host is a file path.
pub fn url_schemes(t: ConnType) -> Vec<&'static str> {
    schemes(t).iter().map(|(s, _)| *s).collect()
}

/// The schemes a type accepts, as a message lists them: `postgres:// or postgresql://`.
pub fn accepted_schemes(t: ConnType) -> String {
    schemes(t)
        .iter()
        .map(|(s, _)| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Reads a `host` field of a connection of type `t` (already trimmed): a host name, an IP
/// address, a path, or a URL naming host, port and schema. The error says what to fix and
/// never contains any part of the input.
pub fn split(t: ConnType, host: &str) -> Result<HostParts, String> {
    if host.chars().any(char::is_control) {
        return Err("host must not contain control characters".into());
    }
    // A sqlite host is a file path: any text, "://" included (no URL form).
    let url = url_scheme(host).filter(|_| t != ConnType::Sqlite);
    let Some((scheme, rest)) = url else {
        // A host name, an IP, a socket or file path: the rules of before.
        return canonical_host(t, host).map(|host| HostParts {
            host,
            port: None,
            schema: None,
        });
    };
    if scheme.is_empty() {
        return Err(format!(
            "host starts with \"://\": write the scheme ({}) or only the host name",
            accepted_schemes(t)
        ));
    }
    let scheme = scheme.to_ascii_lowercase();
    if t == ConnType::S3 && scheme == "s3" {
        return Err(
            "s3://BUCKET names a bucket, not an endpoint: put the bucket in schema, and \
                    in host the endpoint of an S3-compatible store (http://HOST:PORT or \
                    https://HOST), or nothing for AWS"
                .into(),
        );
    }
    let Some(&(_, prefix)) = schemes(t).iter().find(|(s, _)| *s == scheme) else {
        return Err(format!(
            "the URL in host has a scheme that does not fit a {t} connection: use {}, or \
             give only the host name (or choose the type that fits the URL)",
            accepted_schemes(t)
        ));
    };
    // Any @ is a login (and maybe a password) in the URL, or a password whose / ended the
    // authority early: either way a secret would land in a plain field. Checked first.
    if rest.contains('@') {
        return Err(
            "host must not contain a login or password (user:password@...): put \
                    them in login and password"
                .into(),
        );
    }
    if rest.contains("://") {
        return Err("host holds a second scheme (like http://https://...): give one URL".into());
    }
    if rest.contains(['?', '#']) {
        return Err(
            "the URL in host cannot carry a ?query or #fragment: put options in extra".into(),
        );
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (name, port) = split_authority(authority)?;
    if name.matches(':').count() > 1 && !name.starts_with('[') && !path.is_empty() {
        return Err(unbracketed());
    }
    // The name as written: no percent-decoding (a host name never needs it), so what the
    // OpenAPI document's pattern states is what is read.
    let bare = network_host(name).ok_or_else(|| {
        "the URL in host must name a host name or IP address (letters, digits, '.', '-', \
         '_'; IPv6 in brackets); a socket path goes in host without a scheme"
            .to_owned()
    })?;
    let host = match prefix {
        "" => bare,
        p if bare.contains(':') => format!("{p}[{bare}]"),
        p => format!("{p}{bare}"),
    };
    let schema = match path {
        "" | "/" => None,
        p => Some(decode(&p[1..], "path")?),
    };
    if t == ConnType::S3 {
        if let Some(bucket) = &schema {
            if bucket.trim_end_matches('/').contains('/') || bucket.starts_with('/') {
                return Err(
                    "the path of an S3 endpoint URL in host is the bucket: give one \
                            path segment (http://HOST:PORT/BUCKET), or the bucket in schema"
                        .into(),
                );
            }
        }
    }
    let schema = match (t, schema) {
        (ConnType::S3, Some(b)) => Some(b.trim_end_matches('/').to_owned()),
        (_, s) => s,
    };
    Ok(HostParts { host, port, schema })
}

/// `scheme` and the rest when `host` is written `scheme://rest` with a scheme of URL
/// characters (or none: `://x`); `None` for a plain host or path.
fn url_scheme(host: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = host.split_once("://")?;
    scheme
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        .then_some((scheme, rest))
}

/// The host and port of a URL's authority. IPv6 must be in brackets.
fn split_authority(authority: &str) -> Result<(&str, Option<u16>), String> {
    if authority.is_empty() {
        return Err("the URL in host names no host: write SCHEME://HOST[:PORT]".into());
    }
    let (name, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or_else(unbracketed)?;
        let after = &authority[close + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(unbracketed)?),
        };
        (&authority[..=close], port)
    } else if authority.matches(':').count() > 1 {
        // An IPv6 address without brackets, as accepted before URLs were: the whole authority
        // is the address, never an address and a port (`http://::1:9000` is the address
        // ::1:9000; write `http://[::1]:9000` for a port).
        if authority.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(unbracketed());
        }
        (authority, None)
    } else {
        match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    if name.is_empty() || name == "[]" {
        return Err("the URL in host names no host: write SCHEME://HOST[:PORT]".into());
    }
    let port = match port {
        None => None,
        // Digits only: u16's parser also takes a leading '+'.
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(p) if p != 0 => Some(p),
            _ => return Err(PORT_IN_HOST.into()),
        },
        Some(_) => return Err(PORT_IN_HOST.into()),
    };
    Ok((name, port))
}

const PORT_IN_HOST: &str = "the port in the URL in host must be an integer from 1 to 65535";

fn unbracketed() -> String {
    "an IPv6 address in a URL in host must be written in brackets, like http://[::1]:9000".into()
}

fn decode(s: &str, part: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            format!("the {part} of the URL in host is not valid UTF-8 after percent-decoding")
        })
}

#[cfg(test)]
mod tests;
