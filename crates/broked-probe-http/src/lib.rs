//! Tests HTTP connections with `reqwest` over rustls: one request, its status checked.
//!
//! The target is `host` (a bare host name means `http://`; `https://api.example` keeps its
//! scheme), `port` when set, then the schema (base path) and extra `path`. Credentials travel
//! in `basic_auth` from login/password, never in the URL; a host URL carrying user
//! information is refused. The probe policy is applied three times: to the host as written
//! (IP literals, which `reqwest` never resolves), in a DNS resolver that checks every address
//! it returns (so the connection goes to exactly the addresses that passed), and on every
//! redirect hop (at most 5, followed here rather than by `reqwest`). Basic auth and the custom
//! `headers` of extra go only to the connection's own origin: a redirect to another scheme,
//! host or port gets neither. Environment proxies are ignored (`no_proxy`): a proxy would
//! reach the target on the probe's behalf, past the policy.
//!
//! Not here: request bodies, cookies, OAuth. Response bodies are not read.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;

use broked_probe::sniff;
use broked_probe::{
    ConnType, Connection, Context, Failure, Policy, Probe, ProbeError, ProbeFuture, Probed, Tls,
    TlsFields, extra_object, require_host,
};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, StatusCode, Url};

/// The most redirects the probe follows.
pub const MAX_REDIRECTS: usize = 5;

/// The HTTP probe (`reqwest`).
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpProbe;

impl Probe for HttpProbe {
    fn conn_type(&self) -> ConnType {
        ConnType::Http
    }

    fn driver(&self) -> &'static str {
        "reqwest"
    }

    fn probe<'a>(&'a self, conn: &'a Connection, ctx: &'a Context) -> ProbeFuture<'a> {
        Box::pin(probe(conn, ctx))
    }
}

/// What the connection asks for, validated before any traffic.
struct Request {
    url: Url,
    method: Method,
    expected: Option<Vec<u16>>,
    headers: reqwest::header::HeaderMap,
    verify_tls: bool,
    ca_cert: Option<String>,
}

fn config(msg: impl Into<String>) -> ProbeError {
    ProbeError::new(Failure::Config, msg)
}

fn request(conn: &Connection) -> Result<Request, ProbeError> {
    let host = require_host(conn)?;
    let with_scheme = if host.contains("://") {
        host.to_owned()
    } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("http://[{host}]")
    } else {
        format!("http://{host}")
    };
    let mut url = Url::parse(&with_scheme)
        .map_err(|_| config("host is not a valid host name or http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(config("host URL scheme must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config(
            "host URL must not carry credentials: use login and password",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(config("host is required"));
    }
    if let Some(port) = conn.port {
        url.set_port(Some(port))
            .map_err(|_| config("port cannot be used with this host"))?;
    }
    let extra = extra_object(conn)?;
    // Path: the host URL's own path, then the schema (base path), then extra "path".
    let mut path = url.path().trim_end_matches('/').to_owned();
    for part in [
        conn.schema.as_deref(),
        extra.get("path").and_then(|v| v.as_str()),
    ]
    .into_iter()
    .flatten()
    {
        let part = part.trim_matches('/');
        if !part.is_empty() {
            path.push('/');
            path.push_str(part);
        }
    }
    if extra.get("path").is_some_and(|v| !v.is_string()) {
        return Err(config("extra path must be a string"));
    }
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path, None),
    };
    url.set_path(if path.is_empty() { "/" } else { &path });
    if query.is_some() {
        url.set_query(query.as_deref());
    }

    let method = match extra.get("method") {
        None => Method::GET,
        Some(serde_json::Value::String(m)) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| config("extra method is not an HTTP method"))?,
        Some(_) => return Err(config("extra method must be a string")),
    };
    let expected = match extra.get("expected_status") {
        None => None,
        Some(v) => {
            let list: Vec<&serde_json::Value> = match v {
                serde_json::Value::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            let codes = list
                .into_iter()
                .map(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| (100..=599).contains(n))
                })
                .collect::<Option<Vec<u16>>>()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    config("extra expected_status must be a status code or a list of them")
                })?;
            Some(codes)
        }
    };
    let mut headers = reqwest::header::HeaderMap::new();
    match extra.get("headers") {
        None => {}
        Some(serde_json::Value::Object(map)) => {
            for (name, value) in map {
                let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| config(format!("extra headers: {name:?} is not a header name")))?;
                let v = value
                    .as_str()
                    .and_then(|s| reqwest::header::HeaderValue::from_str(s).ok())
                    .ok_or_else(|| config(format!("extra headers: the value of {name} must be a string without line breaks")))?;
                headers.insert(n, v);
            }
        }
        Some(_) => return Err(config("extra headers must be an object of strings")),
    }
    let verify_tls = match extra.get("verify_tls") {
        None => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(config("extra verify_tls must be true or false")),
    };
    let ca_cert = match extra.get("ca_cert") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(config("extra ca_cert must be a PEM string")),
    };
    Ok(Request {
        url,
        method,
        expected,
        headers,
        verify_tls,
        ca_cert,
    })
}

/// Resolves names and lets through only addresses the policy allows.
struct PolicyResolver(Arc<Policy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            policy.check_host(&host)?;
            let addrs: Vec<SocketAddr> = broked_probe::lookup_host(&host, 0)
                .await
                .ok_or_else(|| broked_probe::dns_error(&host))?;
            for a in &addrs {
                policy.check_ip(a.ip())?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Checks a URL's host as written: an IP literal is never resolved by `reqwest`, so the
/// resolver would not see it; a name goes through the resolver as well.
fn check_url(policy: &Policy, url: &Url) -> Result<(), ProbeError> {
    match url.host_str() {
        // IPv6 literals come bracketed; check_host takes either form.
        Some(h) if !h.is_empty() => policy.check_host(h),
        _ => Err(ProbeError::new(
            Failure::Protocol,
            "redirect to a URL without a host",
        )),
    }
}

fn client(req: &Request, ctx: &Context) -> Result<reqwest::Client, ProbeError> {
    let policy = Arc::new(ctx.policy().clone());
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver(policy)))
        // Redirects are followed by `send` below, which decides what each hop may carry.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ctx.remaining())
        .connect_timeout(ctx.remaining())
        .user_agent(concat!(
            "broked-connections/",
            env!("CARGO_PKG_VERSION"),
            " connection test"
        ))
        .danger_accept_invalid_certs(!req.verify_tls)
        .referer(false);
    if let Some(pem) = &req.ca_cert {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|_| config("extra ca_cert is not a PEM certificate"))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| ProbeError::new(Failure::Other, format!("HTTP client: {}", e.without_url())))
}

/// Sends the request and follows up to [`MAX_REDIRECTS`] redirects, checking every hop's
/// URL against the policy before connecting. The credentials — basic auth and the custom
/// `headers` of extra — go only to the connection's own origin (scheme, host and port): a
/// hop to another origin gets neither, and neither does any hop after it that is not back
/// at the connection's origin. (`reqwest` alone drops `Authorization` across hosts but keeps
/// custom headers such as `X-Api-Key`.)
///
/// Returns the last response and the weakest transport of all hops: an `http://` hop that
/// redirects to `https://` has already sent the request in clear.
async fn send(
    client: &reqwest::Client,
    req: &Request,
    conn: &Connection,
    ctx: &Context,
) -> Result<(reqwest::Response, Tls), ProbeError> {
    let origin = origin(&req.url);
    let home = req.url.origin();
    let mut url = req.url.clone();
    let mut method = req.method.clone();
    let mut hops = 0;
    let mut weakest = Tls::Verified;
    loop {
        weakest = weaker(weakest, transport(&url, req.verify_tls));
        let mut builder = client.request(method.clone(), url.clone());
        if url.origin() == home {
            builder = builder.headers(req.headers.clone());
            if let Some(login) = conn.login.as_deref().filter(|l| !l.is_empty()) {
                builder = builder.basic_auth(login, conn.password.as_ref().map(|p| p.expose()));
            }
        }
        let attempt = async {
            builder
                .send()
                .await
                .map_err(|e| classify(e, &origin, ctx.policy().timeout()))
        };
        let look = || scheme_mismatch(ctx, &url);
        let response = sniff::watch_with(ctx, attempt, look).await?;
        let status = response.status();
        let location = match status.as_u16() {
            301 | 302 | 303 | 307 | 308 => response.headers().get(reqwest::header::LOCATION),
            _ => None,
        };
        let Some(location) = location else {
            return Ok((response, weakest));
        };
        if hops == MAX_REDIRECTS {
            return Err(ProbeError::new(
                Failure::Protocol,
                format!("{origin}: more than {MAX_REDIRECTS} redirects"),
            ));
        }
        hops += 1;
        let next = location
            .to_str()
            .ok()
            .and_then(|l| url.join(l).ok())
            .ok_or_else(|| {
                ProbeError::new(
                    Failure::Protocol,
                    format!("{origin}: redirect to an invalid URL"),
                )
            })?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(ProbeError::new(
                Failure::Protocol,
                format!("{origin}: redirect to a non-HTTP URL"),
            ));
        }
        check_url(ctx.policy(), &next)?;
        // As browsers and reqwest do: 303 turns anything but HEAD into GET, 301/302 a POST.
        if (status == StatusCode::SEE_OTHER && method != Method::HEAD)
            || (matches!(status.as_u16(), 301 | 302) && method == Method::POST)
        {
            method = Method::GET;
        }
        drop(response);
        url = next;
    }
}

/// When a request to `url` failed as `tls`, `protocol` or `timeout`, or stalls
/// ([`sniff::watch_with`]): what the server there speaks ([`sniff::sniff`], at an address the
/// policy approves again). An `https://` URL whose server speaks plain HTTP, or the reverse,
/// is a `tls` failure saying which scheme to write in host; a server that is not HTTP at all
/// a `protocol` failure naming port; `None` when nothing recognised says otherwise.
async fn scheme_mismatch(ctx: &Context, url: &Url) -> Option<ProbeError> {
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = ctx.resolve(bare, port).await.ok()?;
    let within = ctx.remaining().min(std::time::Duration::from_secs(2));
    let found = sniff::sniff(ctx, *addrs.first()?, within).await?;
    let https = url.scheme() == "https";
    let hostport = format!("{host}:{port}");
    let fix = |scheme: &str| format!("write host as {scheme}://{host}");
    sniff::http_mismatch(&hostport, https, found, fix)
}

/// The transport of one request: https with verification on is [`Tls::Verified`] (rustls
/// refuses a certificate it cannot verify), https with `verify_tls: false`
/// [`Tls::Unverified`], plain http [`Tls::Plaintext`].
fn transport(url: &Url, verify_tls: bool) -> Tls {
    match (url.scheme(), verify_tls) {
        ("https", true) => Tls::Verified,
        ("https", false) => Tls::Unverified,
        _ => Tls::Plaintext,
    }
}

fn weaker(a: Tls, b: Tls) -> Tls {
    let rank = |t| match t {
        Tls::Plaintext => 0,
        Tls::Unverified => 1,
        Tls::Verified => 2,
    };
    if rank(b) < rank(a) { b } else { a }
}

async fn probe(conn: &Connection, ctx: &Context) -> Result<Probed, ProbeError> {
    let req = request(conn)?;
    check_url(ctx.policy(), &req.url)?;
    let client = client(&req, ctx)?;
    let origin = origin(&req.url);
    let (response, tls) = send(&client, &req, conn, ctx).await?;
    let status = response.status();
    drop(response);
    let ok = match &req.expected {
        Some(codes) => codes.contains(&status.as_u16()),
        None => status.as_u16() < 400,
    };
    if ok {
        return Ok(Probed::new(format!("HTTP {status}"), tls));
    }
    let expected = req.expected.as_ref().map(|c| {
        let list: Vec<String> = c.iter().map(u16::to_string).collect();
        format!(", expected {}", list.join(" or "))
    });
    let expected = expected.unwrap_or_default();
    Err(match status {
        StatusCode::UNAUTHORIZED => ProbeError::new(
            Failure::Auth,
            format!(
                "{origin} answered {status}{expected}: check login, password and extra.headers"
            ),
        ),
        StatusCode::FORBIDDEN => ProbeError::new(
            Failure::Authorization,
            format!(
                "{origin} answered {status}{expected}: the credentials may not access this path: \
                 check login, extra.headers, schema (base path) and extra.path"
            ),
        ),
        StatusCode::NOT_FOUND | StatusCode::GONE => ProbeError::new(
            Failure::NotFound,
            format!(
                "{origin} answered {status}{expected}: check schema (base path) and extra.path"
            ),
        ),
        _ => ProbeError::new(
            Failure::Protocol,
            format!(
                "{origin} answered {status}{expected}: check schema (base path), extra.path and \
                 extra.expected_status"
            ),
        ),
    })
}

/// The fields a TLS or certificate failure names.
const TLS_FIELDS: TlsFields = TlsFields {
    ca: Some("extra.ca_cert (or extra.verify_tls: false to skip the check)"),
    mode: "host (https:// or http://)",
};

/// `scheme://host:port`, what messages name (never the path or query, which may carry tokens).
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A `reqwest` error as a failure class. Its URL is removed; a [`ProbeError`] raised by the
/// resolver or the redirect policy is found in the source chain and returned as it is.
fn classify(e: reqwest::Error, origin: &str, timeout: std::time::Duration) -> ProbeError {
    let e = e.without_url();
    let mut chain: Vec<String> = Vec::new();
    let mut io_kind = None;
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(p) = s.downcast_ref::<ProbeError>() {
            return p.clone();
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(p) = io.get_ref().and_then(|i| i.downcast_ref::<ProbeError>()) {
                return p.clone();
            }
            io_kind.get_or_insert(io.kind());
        }
        chain.push(s.to_string());
        source = s.source();
    }
    let cause = chain.last().cloned().unwrap_or_default();
    let text = chain.join(": ").to_ascii_lowercase();
    if e.is_timeout() {
        return ProbeError::new(
            Failure::Timeout,
            format!(
                "no answer from {origin} within {}: check host and port (a firewall may drop \
                 the packets)",
                broked_probe::human_duration(timeout)
            ),
        );
    }
    if text.contains("certificate")
        || text.contains("tls")
        || text.contains("handshake")
        || text.contains("invalidcontenttype")
        || text.contains("corrupt message")
        || text.contains("alert")
    {
        let host = Url::parse(origin)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let hostport = origin.split_once("://").map_or(origin, |(_, hp)| hp);
        // The innermost TLS part of the chain is rustls' own text.
        let tls_text = chain
            .iter()
            .rev()
            .find(|t| {
                let t = t.to_ascii_lowercase();
                t.contains("certificate") || t.contains("corrupt") || t.contains("alert")
            })
            .unwrap_or(&cause);
        return broked_probe::tls_error(hostport, &host, tls_text, TLS_FIELDS);
    }
    if let Some(kind) = io_kind {
        return broked_probe::io_error(&std::io::Error::new(kind, cause), origin);
    }
    if e.is_redirect() {
        return ProbeError::new(Failure::Protocol, format!("{origin}: {cause}"));
    }
    if e.is_connect() && text.contains("refused") {
        return ProbeError::new(
            Failure::Refused,
            format!(
                "connection refused by {origin}: check host and port, and that the server is running"
            ),
        );
    }
    ProbeError::new(
        Failure::Protocol,
        format!("{origin} did not answer as an HTTP server ({cause}): check host and port"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use broked_core::{ConnId, Secret};

    #[test]
    fn transport_is_the_weakest_hop() {
        let http = Url::parse("http://a.example/").unwrap();
        let https = Url::parse("https://a.example/").unwrap();
        assert_eq!(transport(&https, true), Tls::Verified);
        assert_eq!(transport(&https, false), Tls::Unverified);
        assert_eq!(transport(&http, true), Tls::Plaintext);
        // http that redirects to https already sent the request in clear.
        assert_eq!(
            weaker(transport(&http, true), transport(&https, true)),
            Tls::Plaintext
        );
        assert_eq!(weaker(Tls::Verified, Tls::Unverified), Tls::Unverified);
        assert_eq!(weaker(Tls::Unverified, Tls::Verified), Tls::Unverified);
        assert_eq!(weaker(Tls::Verified, Tls::Verified), Tls::Verified);
    }

    fn conn(
        host: &str,
        port: Option<u16>,
        schema: Option<&str>,
        extra: Option<&str>,
    ) -> Connection {
        Connection {
            conn_id: ConnId::new("h").unwrap(),
            conn_type: ConnType::Http,
            host: Some(host.into()),
            port,
            schema: schema.map(Into::into),
            login: None,
            password: None,
            extra: extra.map(Secret::from),
            description: None,
        }
    }

    #[test]
    fn urls() {
        let cases = [
            (conn("api.test", None, None, None), "http://api.test/"),
            (
                conn("https://api.test", None, None, None),
                "https://api.test/",
            ),
            (
                conn(
                    "https://api.test/v1/",
                    Some(8443),
                    Some("base"),
                    Some(r#"{"path":"/health?x=1"}"#),
                ),
                "https://api.test:8443/v1/base/health?x=1",
            ),
            (
                conn("127.0.0.1", Some(8080), Some("/x/"), None),
                "http://127.0.0.1:8080/x",
            ),
            (conn("2130706434", None, None, None), "http://127.0.0.2/"),
            (conn("::1", Some(81), None, None), "http://[::1]:81/"),
        ];
        for (c, want) in cases {
            assert_eq!(request(&c).map(|r| r.url.to_string()).unwrap(), want);
        }
    }

    #[test]
    fn bad_config() {
        for (c, want) in [
            (
                conn("https://u:pw@api.test", None, None, None),
                "must not carry credentials",
            ),
            (conn("ftp://api.test", None, None, None), "scheme"),
            (
                conn("api.test", None, None, Some(r#"{"method":"GE T"}"#)),
                "method",
            ),
            (
                conn("api.test", None, None, Some(r#"{"expected_status":"ok"}"#)),
                "expected_status",
            ),
            (
                conn("api.test", None, None, Some(r#"{"headers":{"X":"a\nb"}}"#)),
                "line breaks",
            ),
            (
                conn("api.test", None, None, Some(r#"{"verify_tls":"no"}"#)),
                "verify_tls",
            ),
            (conn("api.test", None, None, Some("[1]")), "JSON object"),
        ] {
            let e = request(&c).err().unwrap();
            assert_eq!(e.kind, Failure::Config);
            assert!(e.message.contains(want), "{}", e.message);
            assert!(!e.message.contains("pw@"), "{}", e.message);
        }
    }

    #[test]
    fn expected_status_forms() {
        let r = request(&conn(
            "a.test",
            None,
            None,
            Some(r#"{"expected_status":[200,"204"],"method":"head"}"#),
        ))
        .unwrap();
        assert_eq!(r.expected, Some(vec![200, 204]));
        assert_eq!(r.method, Method::HEAD);
        let r = request(&conn(
            "a.test",
            None,
            None,
            Some(r#"{"expected_status":401}"#),
        ))
        .unwrap();
        assert_eq!(r.expected, Some(vec![401]));
    }
}
