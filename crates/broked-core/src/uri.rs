//! The URI builder and parser. The forms are documented, with examples, in `docs/uri.md`.
//!
//! Login, password, host, path and query parts are percent-encoded with one strict set (all
//! but RFC 3986's unreserved characters; the path keeps `/`), so any Unicode text survives a
//! round trip. The extra object becomes query parameters in key order: a string value is
//! written as is unless it would read back as another JSON value (`123`, `true`, `"x"`, ...),
//! in which case it is written as a JSON string; every other value is written as JSON.

use std::net::Ipv6Addr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::secret::MASK;
use crate::{ConnId, ConnType, Connection, Secret, ValidationErrors};

/// Everything but RFC 3986's unreserved characters `A-Z a-z 0-9 - . _ ~`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same, but a path keeps its slashes.
const PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// Why a URI could not be read. No variant carries any part of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("not a connection URI: expected a scheme such as postgres:// (see docs/uri.md)")]
    NoScheme,
    #[error(
        "unknown URI scheme; expected one of postgres, postgresql, mysql, mariadb, sqlite, http, \
         https, sftp, s3, s3+http, s3+https, generic"
    )]
    UnknownScheme,
    #[error("URI fragments are not allowed; write # as %23")]
    Fragment,
    #[error("the {0} in the URI is not valid UTF-8 after percent-decoding")]
    Encoding(&'static str),
    #[error("the port in the URI must be an integer from 1 to 65535")]
    Port,
    #[error("an IPv6 address in a URI must be written in brackets, like [::1]:5432")]
    Ipv6,
    #[error("a parameter appears twice in the URI query")]
    DuplicateParameter,
    #[error(
        "a URI has one scheme: a second one (like postgres://https://...) is not allowed; \
         percent-encode : and / in the login and password (%3A, %2F)"
    )]
    NestedScheme,
    #[error(
        "an @ after the host: percent-encode @, / and : in the login and password \
         (%40, %2F, %3A)"
    )]
    StrayAt,
    #[error("{0}")]
    Invalid(ValidationErrors),
}

impl Connection {
    /// The full URI, credentials included: what the engine connects with.
    ///
    /// It is returned as a [`Secret`] so that it cannot be logged by accident.
    /// Fields the type does not use are left out; `description` is never part of a URI.
    pub fn to_uri(&self) -> Secret {
        Secret::new(self.build_uri(false))
    }

    /// The URI with the password and every extra value replaced by `********`, for display.
    pub fn to_masked_uri(&self) -> String {
        self.build_uri(true)
    }

    fn build_uri(&self, mask: bool) -> String {
        let mut uri = String::with_capacity(64);
        let enc = |s: &str, set| utf8_percent_encode(s, set).to_string();
        let host = self.host.as_deref().unwrap_or("");
        if self.conn_type == ConnType::Sqlite {
            uri.push_str("sqlite://");
            uri.push_str(&enc(host, PATH));
        } else {
            let (scheme, bare_host) = scheme_and_host(self.conn_type, host);
            uri.push_str(scheme);
            uri.push_str("://");
            if self.login.is_some() || self.password.is_some() {
                uri.push_str(&enc(self.login.as_deref().unwrap_or(""), COMPONENT));
                if let Some(password) = &self.password {
                    uri.push(':');
                    uri.push_str(&if mask {
                        MASK.to_owned()
                    } else {
                        enc(password.expose(), COMPONENT)
                    });
                }
                uri.push('@');
            }
            let unbracketed = bare_host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(bare_host);
            if unbracketed.parse::<Ipv6Addr>().is_ok() {
                uri.push('[');
                uri.push_str(unbracketed);
                uri.push(']');
            } else {
                uri.push_str(&enc(bare_host, COMPONENT));
            }
            if let Some(port) = self.port {
                uri.push(':');
                uri.push_str(&port.to_string());
            }
            if let Some(schema) = &self.schema {
                uri.push('/');
                uri.push_str(&enc(schema, PATH));
            }
        }
        if let Some(extra) = &self.extra {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(extra.expose()) {
                let params = map.iter().filter(|(key, _)| {
                    // A key that would name the target is never written (validation refuses
                    // it; a row stored before that rule still cannot steer the secret).
                    !matches!(
                        self.conn_type.extra_key_role(key),
                        Some(crate::ExtraKeyRole::Names { .. })
                    )
                    // Nor the SSH tunnel: broked's routing, no driver's parameter
                    // (docs/tunnels.md); the URI through it comes from `open_tunnel`.
                    && !crate::is_tunnel_key(key)
                    // Nor password rotation's settings (docs/rotation.md).
                    && !crate::is_rotation_key(key)
                });
                for (i, (key, value)) in params.enumerate() {
                    uri.push(if i == 0 { '?' } else { '&' });
                    uri.push_str(&enc(key, COMPONENT));
                    uri.push('=');
                    if mask {
                        uri.push_str(MASK);
                    } else {
                        uri.push_str(&enc(&param_text(value), COMPONENT));
                    }
                }
            }
        }
        uri
    }

    /// Reads a URI of `docs/uri.md` into a valid connection with the given id.
    ///
    /// `parse(build(c)) == c` for every valid connection `c` without a description and
    /// without `extra.ssh_tunnel`, which the builder leaves out (docs/uri.md).
    /// Errors never contain any part of the input.
    pub fn from_uri(conn_id: ConnId, uri: &str) -> Result<Connection, UriError> {
        let (scheme, rest) = uri.split_once("://").ok_or(UriError::NoScheme)?;
        let scheme = scheme.to_ascii_lowercase();
        let (conn_type, host_prefix) = match scheme.as_str() {
            "postgres" | "postgresql" => (ConnType::Postgres, ""),
            "mysql" | "mariadb" => (ConnType::Mysql, ""),
            "sqlite" => (ConnType::Sqlite, ""),
            "http" => (ConnType::Http, ""),
            "https" => (ConnType::Http, "https://"),
            "sftp" => (ConnType::Sftp, ""),
            "s3" => (ConnType::S3, ""),
            "s3+http" => (ConnType::S3, "http://"),
            "s3+https" => (ConnType::S3, "https://"),
            "generic" => (ConnType::Generic, ""),
            _ if scheme.is_empty()
                || scheme.contains(|c: char| !c.is_ascii_alphanumeric() && !"+.-".contains(c)) =>
            {
                return Err(UriError::NoScheme);
            }
            _ => return Err(UriError::UnknownScheme),
        };
        if rest.contains('#') {
            return Err(UriError::Fragment);
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        // A second scheme means the URI was pasted inside another, or a password holds an
        // unencoded "://": either way part of a secret would land in a plain field.
        if rest.contains("://") {
            return Err(UriError::NestedScheme);
        }
        let mut c = Connection {
            conn_id,
            conn_type,
            host: None,
            port: None,
            schema: None,
            login: None,
            password: None,
            extra: query.map(parse_query).transpose()?,
            description: None,
        };
        if conn_type == ConnType::Sqlite {
            c.host = Some(decode(rest, "path")?);
        } else {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            // "user:pa/ss@host": the password's "/" ended the authority early; the rest of the
            // password would become the schema, shown unmasked.
            if path.contains('@') {
                return Err(UriError::StrayAt);
            }
            let host_port = match authority.rsplit_once('@') {
                Some((userinfo, host_port)) => {
                    let (login, password) = match userinfo.split_once(':') {
                        Some((login, password)) => (login, Some(password)),
                        None => (userinfo, None),
                    };
                    c.login = Some(decode(login, "login")?);
                    // Decoded straight into a Secret: the plaintext never sits in a plain String.
                    c.password = password
                        .map(|p| decode(p, "password").map(Secret::from))
                        .transpose()?;
                    host_port
                }
                None => authority,
            };
            let (host, port) = split_host_port(host_port)?;
            c.port = port;
            let host = decode(host, "host")?;
            // The URI's host is a host, never a URL of its own (which validation would read
            // as one, crate::endpoint): a percent-encoded "://" is a second scheme.
            if host.contains("://") {
                return Err(UriError::NestedScheme);
            }
            if !host_prefix.is_empty()
                && !host.is_empty()
                && crate::host::network_host(&host).is_none()
            {
                return Err(UriError::Invalid(ValidationErrors(vec![
                    crate::FieldError {
                        field: "host",
                        message: "host must be a host name or IP address (letters, digits, '.', \
                                  '-', '_')"
                            .into(),
                    },
                ])));
            }
            if !host.is_empty() {
                c.host = Some(format!("{host_prefix}{host}"));
            }
            if path.len() > 1 {
                c.schema = Some(decode(&path[1..], "path")?);
            }
        }
        c.validated().map_err(UriError::Invalid)
    }
}

/// The URI scheme for a type and host, and the host without its `http(s)://` prefix.
fn scheme_and_host(t: ConnType, host: &str) -> (&'static str, &str) {
    match t {
        ConnType::Http => match host.strip_prefix("https://") {
            Some(h) => ("https", h),
            None => ("http", host.strip_prefix("http://").unwrap_or(host)),
        },
        ConnType::S3 => {
            if let Some(h) = host.strip_prefix("https://") {
                ("s3+https", h)
            } else if let Some(h) = host.strip_prefix("http://") {
                ("s3+http", h)
            } else {
                ("s3", host)
            }
        }
        t => (t.info().scheme, host),
    }
}

fn split_host_port(host_port: &str) -> Result<(&str, Option<u16>), UriError> {
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (ip, after) = v6.split_once(']').ok_or(UriError::Ipv6)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UriError::Ipv6)?),
        };
        (&host_port[..ip.len() + 2], port)
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(p) if p != 0 => Some(p),
            _ => return Err(UriError::Port),
        },
        Some(_) => return Err(UriError::Port),
    };
    Ok((host, port))
}

fn decode(s: &str, part: &'static str) -> Result<String, UriError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| UriError::Encoding(part))
}

/// How an extra value is written in a query parameter (before percent-encoding).
fn param_text(value: &Value) -> String {
    match value {
        Value::String(s) if serde_json::from_str::<Value>(s).is_err() => s.clone(),
        other => other.to_string(),
    }
}

/// Reads query parameters into the canonical extra object.
fn parse_query(query: &str) -> Result<Secret, UriError> {
    let mut map = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key, "query")?;
        let text = Secret::new(decode(value, "query")?);
        let value = serde_json::from_str::<Value>(text.expose())
            .unwrap_or_else(|_| Value::String(text.expose().to_owned()));
        if map.insert(key, value).is_some() {
            return Err(UriError::DuplicateParameter);
        }
    }
    Ok(Secret::new(Value::Object(map).to_string()))
}

#[cfg(test)]
mod tests;
