//! Tests an S3 connection for real with `aws-sdk-s3`: a `HeadBucket` on the bucket (`schema`),
//! signed with the connection's own keys (`login` = access key id, `password` = secret key).
//!
//! `host` is the endpoint of an S3-compatible store (`minio.local`, `http://127.0.0.1` with a
//! `port`); without it the probe talks to AWS. Extra keys: `region` (default `us-east-1`),
//! `path_style` (default on for a custom endpoint, off for AWS), `session_token` (temporary
//! credentials), `endpoint_url` (the endpoint as one URL, when `host` is empty).
//!
//! What is deliberately absent: `aws-config` and with it every default lookup. No credentials,
//! region or endpoint come from the environment, profile files or instance metadata, so a
//! connection with blank keys can never borrow the server's own identity. Every name the SDK
//! connects to goes through the probe policy (the endpoint through [`Context::resolve`], any
//! other name through the same policy in the HTTP client's DNS resolver). No retries: a test
//! reports the first answer.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use broked_core::Secret;
use broked_probe::sniff::{self, Speaks};
use broked_probe::{
    ConnType, Connection, Context, Failure, Policy, Probe, ProbeError, ProbeFuture, Probed, Tls,
    TlsFields, human_duration,
};

/// The S3 probe; its driver is `aws-sdk-s3`.
#[derive(Debug, Clone, Copy, Default)]
pub struct S3Probe;

impl Probe for S3Probe {
    fn conn_type(&self) -> ConnType {
        ConnType::S3
    }

    fn driver(&self) -> &'static str {
        "aws-sdk-s3"
    }

    fn probe<'a>(&'a self, conn: &'a Connection, ctx: &'a Context) -> ProbeFuture<'a> {
        Box::pin(check(conn, ctx))
    }
}

/// The default region when extra has none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Tests `conn` (an s3 connection) within `ctx`'s deadline and policy: `HeadBucket` on its
/// bucket. On success returns a detail naming the bucket, the endpoint and the region, and
/// the transport: [`Tls::Verified`] for AWS and `https` endpoints (rustls verifies the
/// certificate; there is no switch to turn that off), [`Tls::Plaintext`] for `http://`.
pub async fn check(conn: &Connection, ctx: &Context) -> Result<Probed, ProbeError> {
    let p = Params::from_connection(conn)?;

    let mut known = HashMap::new();
    let mut endpoint_addr = None;
    if let Some(ep) = &p.endpoint {
        let addrs = ctx.resolve(&ep.host, ep.port).await?;
        // One plain TCP connect first: "refused" and "unreachable" come back at once and
        // precisely, before the SDK (which loads the TLS trust store) is even built.
        let (_, addr) = ctx.connect_tcp(&ep.host, ep.port).await?;
        endpoint_addr = Some(addr);
        known.insert(
            ep.host.to_ascii_lowercase(),
            addrs.iter().map(|a| a.ip()).collect(),
        );
    }
    let resolver = PolicyResolver {
        policy: ctx.policy().clone(),
        known: Arc::new(known),
        failure: Arc::default(),
    };
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_with_resolver(resolver.clone());

    let budget = ctx.remaining();
    let credentials = Credentials::new(
        p.access_key.clone(),
        p.secret_key.expose(),
        p.session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "broked-connection",
    );
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(p.region.clone()))
        .credentials_provider(credentials)
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(budget)
                .read_timeout(budget)
                .operation_attempt_timeout(budget)
                .operation_timeout(budget)
                .build(),
        )
        .force_path_style(p.path_style);
    if let Some(ep) = &p.endpoint {
        config = config.endpoint_url(ep.url());
    }
    let client = aws_sdk_s3::Client::from_conf(config.build());

    let head = client.head_bucket().bucket(&p.bucket).send();
    let err = match tokio::time::timeout(budget, head).await {
        Err(_) => return Err(timeout(&p, budget)),
        Ok(Ok(out)) => {
            let region = out.bucket_region().unwrap_or(&p.region);
            let tls = match &p.endpoint {
                Some(ep) if !ep.https => Tls::Plaintext,
                _ => Tls::Verified,
            };
            return Ok(Probed::new(
                format!(
                    "bucket {} found at {} (region {region})",
                    p.bucket,
                    p.target()
                ),
                tls,
            ));
        }
        Ok(Err(err)) => err,
    };
    if let Some(failure) = resolver.take_failure() {
        return Err(failure);
    }
    let mut failure = classify(&err, &p, budget);
    // A TLS failure, or an answer that is not HTTP: what does the endpoint speak? An https://
    // endpoint that speaks plain HTTP (the scheme left out of host) is the common case.
    if let (Some(ep), Some(addr)) = (&p.endpoint, endpoint_addr)
        && matches!(
            failure.kind,
            Failure::Tls | Failure::Protocol | Failure::Other
        )
        && let Some(found) = sniff::sniff(ctx, addr, ctx.remaining()).await
        && let Some(better) = scheme_mismatch(ep, found)
    {
        return Err(better);
    }
    // HEAD answers carry no body, so a 403 does not say whether the keys are wrong or only not
    // allowed on this bucket. A request with a body (listing zero keys) tells.
    if failure.kind == Failure::Auth && failure_code(&err).is_none() {
        let list = client
            .list_objects_v2()
            .bucket(&p.bucket)
            .max_keys(0)
            .send();
        if let Ok(Err(SdkError::ServiceError(se))) =
            tokio::time::timeout(ctx.remaining(), list).await
        {
            if let Some(better) = auth_message(se.err().meta().code(), &p) {
                failure = better;
            }
        }
    }
    Err(failure)
}

/// What the probe needs from the connection, checked before any packet is sent.
struct Params {
    access_key: String,
    secret_key: Secret,
    session_token: Option<Secret>,
    bucket: String,
    region: String,
    endpoint: Option<Endpoint>,
    path_style: bool,
}

/// A custom endpoint: scheme, host (IPv6 without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    https: bool,
    host: String,
    port: u16,
    /// Where it came from: `host` or `extra.endpoint_url`.
    field: &'static str,
}

/// What `found` at the endpoint means when the request failed: an `https://` endpoint that
/// speaks plain HTTP, or the reverse ([`Failure::Tls`], saying how to write the endpoint), or
/// no S3 server at all ([`Failure::Protocol`]).
fn scheme_mismatch(ep: &Endpoint, found: Speaks) -> Option<ProbeError> {
    let hostport = ep.hostport();
    sniff::http_mismatch(&hostport, ep.https, found, |scheme| {
        let other = Endpoint {
            https: scheme == "https",
            ..ep.clone()
        };
        match ep.field {
            "host" => format!(
                "store the endpoint as {scheme}://{} in host (port {})",
                other.bracketed_host(),
                ep.port
            ),
            field => format!("set {field} to {}", other.url()),
        }
    })
}

impl Endpoint {
    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `host:port` as messages name it.
    fn hostport(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// `scheme://host[:port]` with the port only where a user would have typed it; `field`
    /// is where the text came from.
    fn parse(text: &str, port: Option<u16>, field: &'static str) -> Result<Endpoint, String> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (true, &text[8..])
        } else if lower.starts_with("http://") {
            (false, &text[7..])
        } else {
            (true, text)
        };
        let rest = rest.trim_end_matches('/');
        let (host, url_port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed '[' in the endpoint")?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err("unexpected text after the IPv6 address".into()),
            };
            (host, port)
        } else if rest.parse::<std::net::Ipv6Addr>().is_ok() {
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let url_port = url_port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or("invalid port")
            })
            .transpose()?;
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        if !ok {
            return Err("the endpoint must be a host name or IP address, without a path".into());
        }
        Ok(Endpoint {
            https,
            host: host.to_owned(),
            port: port.or(url_port).unwrap_or(if https { 443 } else { 80 }),
            field,
        })
    }
}

impl Params {
    fn from_connection(conn: &Connection) -> Result<Params, ProbeError> {
        let config = |m: &str| ProbeError::new(Failure::Config, m);
        let extra = broked_probe::extra_object(conn)?;
        let string = |key: &str| -> Result<Option<String>, ProbeError> {
            match extra.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_owned())),
                Some(_) => Err(ProbeError::new(
                    Failure::Config,
                    format!("extra.{key} must be a string"),
                )),
            }
        };
        let access_key = conn
            .login
            .clone()
            .filter(|l| !l.trim().is_empty())
            .ok_or_else(|| config("login (the access key id) is required"))?;
        let secret_key = conn
            .password
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| config("password (the secret access key) is required"))?;
        let bucket = conn
            .schema
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| config("schema (the bucket) is required to test an s3 connection"))?;
        let region = match string("region")? {
            Some(r) => r,
            None => string("region_name")?.unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        };
        if !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(config("extra.region must be a region name like eu-west-1"));
        }
        let endpoint = match (&conn.host, string("endpoint_url")?) {
            (Some(host), _) => Some(
                Endpoint::parse(host, conn.port, "host")
                    .map_err(|why| ProbeError::new(Failure::Config, format!("host: {why}")))?,
            ),
            (None, Some(url)) => Some(Endpoint::parse(&url, None, "extra.endpoint_url").map_err(
                |why| ProbeError::new(Failure::Config, format!("extra.endpoint_url: {why}")),
            )?),
            (None, None) => None,
        };
        let path_style = match extra
            .get("path_style")
            .or_else(|| extra.get("force_path_style"))
        {
            None | Some(serde_json::Value::Null) => endpoint.is_some(),
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) if s == "true" => true,
            Some(serde_json::Value::String(s)) if s == "false" => false,
            Some(_) => return Err(config("extra.path_style must be true or false")),
        };
        let session_token = match string("session_token")? {
            Some(t) => Some(t),
            None => string("aws_session_token")?,
        }
        .map(Secret::new);
        Ok(Params {
            access_key,
            secret_key,
            session_token,
            bucket,
            region,
            endpoint,
            path_style,
        })
    }

    /// Where the requests go, for messages: the endpoint URL, or AWS S3.
    fn target(&self) -> String {
        match &self.endpoint {
            Some(ep) => ep.url(),
            None => format!("AWS S3 ({})", self.region),
        }
    }
}

/// The HTTP client's DNS resolver: the endpoint's addresses as [`Context::resolve`] found and
/// checked them, and any other name (AWS's virtual-hosted bucket names) resolved and checked
/// against the same policy. A refusal is kept for the probe to report as such.
#[derive(Clone)]
struct PolicyResolver {
    policy: Policy,
    known: Arc<HashMap<String, Vec<IpAddr>>>,
    failure: Arc<Mutex<Option<ProbeError>>>,
}

impl fmt::Debug for PolicyResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyResolver").finish_non_exhaustive()
    }
}

impl PolicyResolver {
    fn take_failure(&self) -> Option<ProbeError> {
        self.failure.lock().ok()?.take()
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ProbeError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ips) = self.known.get(&name) {
            return Ok(ips.clone());
        }
        self.policy.check_host(&name)?;
        let ips: Vec<IpAddr> = broked_probe::lookup_host(&name, 0)
            .await
            .ok_or_else(|| {
                ProbeError::new(
                    Failure::Dns,
                    format!(
                        "could not resolve host {name}: check host (the endpoint), extra.region \
                         and schema (the bucket)"
                    ),
                )
            })?
            .into_iter()
            .map(|a| a.ip())
            .collect();
        for ip in &ips {
            self.policy.check_ip(*ip)?;
        }
        Ok(ips)
    }
}

impl ResolveDns for PolicyResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            self.lookup(name).await.map_err(|e| {
                let message = e.message.clone();
                if let Ok(mut slot) = self.failure.lock() {
                    slot.get_or_insert(e);
                }
                ResolveDnsError::new(message)
            })
        })
    }
}

fn timeout(p: &Params, budget: Duration) -> ProbeError {
    ProbeError::new(
        Failure::Timeout,
        format!(
            "no answer from {} within {}: check host and port (a firewall may drop the packets)",
            p.target(),
            human_duration(budget)
        ),
    )
}

fn failure_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().meta().code(),
        _ => None,
    }
}

/// The message for an S3 error code that means the keys are wrong or not allowed.
fn auth_message(code: Option<&str>, p: &Params) -> Option<ProbeError> {
    let auth = |m: String| Some(ProbeError::new(Failure::Auth, m));
    match code? {
        "SignatureDoesNotMatch" => auth(format!(
            "authentication failed: {} rejected the signature (SignatureDoesNotMatch): the secret key (password) is wrong",
            p.target()
        )),
        "InvalidAccessKeyId" => auth(format!(
            "authentication failed: {} does not know the access key id (InvalidAccessKeyId): check login",
            p.target()
        )),
        "InvalidToken" | "ExpiredToken" | "TokenRefreshRequired" => auth(format!(
            "authentication failed: the session token was rejected ({}): refresh the temporary credentials",
            code?
        )),
        "AccessDenied" | "AllAccessDisabled" => Some(ProbeError::new(
            Failure::Authorization,
            format!(
                "access denied: the keys (login {}) are valid but may not access bucket {} ({}): \
                 check schema, or grant the key access to the bucket",
                p.access_key, p.bucket, code?
            ),
        )),
        _ => None,
    }
}

fn classify<E>(err: &SdkError<E, HttpResponse>, p: &Params, budget: Duration) -> ProbeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let target = p.target();
    match err {
        SdkError::ServiceError(se) => {
            let raw = se.raw();
            let status = raw.status().as_u16();
            let code = se.err().meta().code();
            if let Some(e) = auth_message(code, p) {
                return e;
            }
            match status {
                404 => ProbeError::new(
                    Failure::NotFound,
                    format!(
                        "bucket {} does not exist at {target}: check schema",
                        p.bucket
                    ),
                ),
                401 | 403 => ProbeError::new(
                    Failure::Auth,
                    format!(
                        "access denied to bucket {} (HTTP {status}): check login (the access key id) and \
                         password (the secret key), or whether the key may access this bucket",
                        p.bucket
                    ),
                ),
                301 | 307 => {
                    let region = raw
                        .headers()
                        .get("x-amz-bucket-region")
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default();
                    ProbeError::new(
                        Failure::Config,
                        format!(
                            "bucket {} is in another region{region}: set extra.region",
                            p.bucket
                        ),
                    )
                }
                _ => ProbeError::new(
                    Failure::Protocol,
                    format!(
                        "{target} answered HeadBucket with HTTP {status}{}: check host and port \
                         (is it an S3 endpoint?)",
                        code.map(|c| format!(" ({c})")).unwrap_or_default()
                    ),
                ),
            }
        }
        SdkError::TimeoutError(_) => timeout(p, budget),
        SdkError::DispatchFailure(d) => {
            if d.is_timeout() {
                return timeout(p, budget);
            }
            dispatch_error(err, p)
        }
        SdkError::ResponseError(_) => ProbeError::new(
            Failure::Protocol,
            format!("{target} did not answer like an S3 server: check host and port"),
        ),
        SdkError::ConstructionFailure(_) => ProbeError::new(
            Failure::Config,
            "the request could not be built: check extra.region, schema (the bucket) and host (the endpoint)",
        ),
        _ => ProbeError::new(Failure::Other, format!("HeadBucket at {target} failed")),
    }
}

/// A failure to send the request: a TLS or certificate failure in the source chain
/// ([`broked_probe::tls_error`]), an IO error (refused, unreachable…), or something else. Only
/// the TLS and IO parts of the chain are quoted.
fn dispatch_error(err: &(dyn std::error::Error + 'static), p: &Params) -> ProbeError {
    let target = p.target();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut tls = None;
    let mut io = None;
    while let Some(e) = source {
        let text = e.to_string();
        let lower = text.to_ascii_lowercase();
        // The innermost TLS text is rustls' own, the most precise.
        if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
            || lower.contains("corrupt message")
            || lower.contains("alert")
        {
            tls = Some(text);
        }
        if io.is_none() {
            io = e.downcast_ref::<std::io::Error>().map(|io| io.kind());
        }
        source = e.source();
    }
    if let Some(text) = tls {
        let (hostport, host) = match &p.endpoint {
            Some(ep) => (ep.hostport(), ep.host.as_str()),
            None => (target.clone(), "s3.amazonaws.com"),
        };
        let fields = TlsFields {
            ca: None,
            mode: p.endpoint.as_ref().map_or("host", |ep| ep.field),
        };
        return broked_probe::tls_error(&hostport, host, &text, fields);
    }
    match io {
        Some(kind) => broked_probe::io_error(&std::io::Error::from(kind), &target),
        None => ProbeError::new(
            Failure::Other,
            format!("could not send the request to {target}: check host and port"),
        ),
    }
}

#[cfg(test)]
mod tests;
