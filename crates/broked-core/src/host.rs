//! Host names as validation stores them: the canonical form of a host that is not a URL, and
//! the host-name/IP check. A leaf module: `connection.rs` (validation), `endpoint.rs` (URLs in
//! host) and `uri.rs` use it, and it uses none of them.

use std::net::Ipv6Addr;

use crate::ConnType;

/// The canonical form of a host that is not a URL (see `split` in endpoint.rs, which calls
/// this for them): a host name, IP, socket or file path, for a type; or why it is not valid.
pub(crate) fn canonical_host(t: ConnType, host: &str) -> Result<String, String> {
    if host.chars().any(char::is_control) {
        return Err("host must not contain control characters".into());
    }
    if t == ConnType::Sqlite {
        return Ok(host.to_owned());
    }
    let lower = host.get(..8).unwrap_or(host).to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("https://") {
        (Some("https://"), &host[8..])
    } else if lower.starts_with("http://") {
        (Some("http://"), &host[7..])
    } else {
        (None, host)
    };
    match (t, scheme) {
        (_, None) => {}
        (ConnType::Http | ConnType::S3, Some(_)) => {}
        (_, Some(_)) => {
            return Err(format!(
                "host of a {t} connection is a host name or IP address, without http:// or https://"
            ));
        }
    }
    if scheme.is_none()
        && rest.starts_with('/')
        && matches!(t, ConnType::Postgres | ConnType::Mysql)
    {
        return Ok(rest.to_owned()); // a Unix socket path
    }
    let name = network_host(rest).ok_or_else(|| {
        if rest.contains(['/', '?', '#']) {
            "host must be a host name or IP address; put a path in schema".to_owned()
        } else if rest.contains(':') {
            "host must be a host name or IP address; put the port in port".to_owned()
        } else {
            "host must be a host name or IP address (letters, digits, '.', '-', '_')".to_owned()
        }
    })?;
    Ok(match (t, scheme) {
        (ConnType::Http, Some("http://")) | (_, None) => name,
        (_, Some(scheme)) if name.contains(':') => format!("{scheme}[{name}]"),
        (_, Some(scheme)) => format!("{scheme}{name}"),
    })
}

/// A host name or IP literal, IPv6 without brackets.
pub(crate) fn network_host(s: &str) -> Option<String> {
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = inner.parse::<Ipv6Addr>() {
        return Some(ip.to_string());
    }
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    ok.then(|| s.to_owned())
}
