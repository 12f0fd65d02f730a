//! Who may do what: `Authorization: Bearer TOKEN` on every /api request when the server has
//! a bootstrap token (`--api-token`) or the store holds named tokens (issue 16). The request
//! gets a [`Grant`] (scopes and conn_id globs) that the route's scope and the handlers check;
//! repeated failures from one client are slowed down with 429.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use broked_connections::{Grant, Scope};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The configured token. `Debug` does not print it.
pub(crate) struct Token(String);

impl Token {
    pub(crate) fn new(token: String) -> Token {
        Token(token)
    }

    /// Constant-time comparison with the bearer value of a request.
    fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(********)")
    }
}

/// The credentials of `Bearer CREDENTIALS`; the scheme name is case-insensitive (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Whether a `Host` header (`name[:port]`) names this machine's loopback interface.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses what a web page on another site could make a browser send:
/// - without an API token, a `Host` that is not a loopback name (a DNS-rebinding page
///   reaches 127.0.0.1 under its own name);
/// - an `Origin` other than this server's own, or `Sec-Fetch-Site: cross-site` (a page
///   posting to http://127.0.0.1:8080 from elsewhere).
fn cross_site(auth_required: bool, headers: &axum::http::HeaderMap) -> Option<ApiError> {
    use axum::http::{HeaderName, StatusCode, header};
    // Names as `HeaderName`s: a `&str` name is parsed and hashed anew on every lookup.
    const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header(&header::HOST).unwrap_or("");
    if !auth_required && !loopback_host(host) {
        return Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            "without an API token this server answers only for a loopback host name \
             (localhost, 127.0.0.1, [::1]); set BROKED_API_TOKEN to serve other names",
        ));
    }
    let foreign_origin = header(&header::ORIGIN).is_some_and(|origin| {
        origin
            .split_once("://")
            .is_none_or(|(_, authority)| !authority.eq_ignore_ascii_case(host))
    });
    if foreign_origin || header(&SEC_FETCH_SITE) == Some("cross-site") {
        return Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "requests from another site's pages are refused",
        ));
    }
    None
}

/// What the token check needs of the server's state.
pub(crate) struct Guard {
    pub(crate) connections: Arc<broked_connections::Connections>,
    pub(crate) token: Option<Arc<Token>>,
    pub(crate) failures: Arc<Failures>,
    /// The kept answers of single GETs (`cache.rs`).
    pub(crate) gets: Arc<crate::cache::Gets>,
}

/// The client's address, set per connection by the accept loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddr(pub(crate) IpAddr);

/// Failed authentications per client address in the current window.
#[derive(Default)]
pub(crate) struct Failures {
    by_client: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

/// At most this many failed authentications per client and window; then 429 until it ends.
const FAILURES_ALLOWED: u32 = 30;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

impl Failures {
    /// Seconds until the client may try again, if it is over the limit.
    fn blocked(&self, client: Option<IpAddr>) -> Option<u64> {
        let map = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
        let (start, n) = map.get(&client)?;
        let left = FAILURE_WINDOW.checked_sub(start.elapsed())?;
        (*n >= FAILURES_ALLOWED).then(|| left.as_secs().max(1))
    }

    fn record(&self, client: Option<IpAddr>) {
        let mut map = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (start, _)| start.elapsed() < FAILURE_WINDOW);
        }
        let entry = map.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The scope a route needs (`None`: any valid token), from its template and method.
pub(crate) fn scope_of(method: &axum::http::Method, route: &str) -> Option<Scope> {
    use axum::http::Method;
    if route.starts_with("/api/tokens") || route == "/api/audit" {
        return Some(Scope::Admin);
    }
    // Purging a deleted connection's history erases what an incident review reads.
    if method == axum::http::Method::DELETE && route == "/api/connections/{conn_id}/versions" {
        return Some(Scope::Admin);
    }
    if route == "/api/openapi.json"
        || route == "/api/connection-types"
        || route == "/api/whoami"
        || route == "/metrics"
    {
        return None;
    }
    let test = method == Method::POST
        && (route == "/api/connections/test" || route == "/api/connections/{conn_id}/test");
    Some(if test {
        Scope::Test
    } else if method == Method::GET || method == Method::HEAD {
        Scope::Read
    } else {
        Scope::Write
    })
}

/// The conn_id in the path of a `/api/connections/{conn_id}...` route (also the
/// `/api/connections/test` alias, which serves the connection named `test` for GET, PUT,
/// PATCH and DELETE).
fn path_conn_id<'a>(method: &axum::http::Method, route: &str, path: &'a str) -> Option<&'a str> {
    let alias = route == "/api/connections/test" && method != axum::http::Method::POST;
    if !route.starts_with("/api/connections/{conn_id}") && !alias {
        return None;
    }
    path.strip_prefix("/api/connections/")?.split('/').next()
}

fn refuse(status: axum::http::StatusCode, code: &'static str, message: String) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The token check as a tower layer on every `/api` route (and `/metrics`): a hand-written
/// service rather than `axum::middleware::from_fn`, whose boxed future, second clone of the
/// route and clones of the state per request cost a tenth of a kept GET (issue 19). The check
/// runs synchronously in `call` when the token cache answers (the generation look is cheap on
/// both stores); when it needs the store — the first request after a commit, a token's last
/// use recorded once a minute — the look runs on a blocking thread and the rest of the check
/// after it. The request then goes to the route, or the refusal is the answer.
#[derive(Clone)]
pub(crate) struct RequireTokenLayer(Arc<Guard>);

impl RequireTokenLayer {
    pub(crate) fn new(guard: Guard) -> RequireTokenLayer {
        RequireTokenLayer(Arc::new(guard))
    }
}

impl<S> tower::Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> RequireToken<S> {
        RequireToken {
            guard: self.0.clone(),
            inner,
        }
    }
}

/// The service of [`RequireTokenLayer`].
#[derive(Clone)]
pub(crate) struct RequireToken<S> {
    guard: Arc<Guard>,
    inner: S,
}

/// The future of a check that had to read the store (on a blocking thread), then the route's.
type Looked = std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> tower::Service<Request> for RequireToken<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Either<Ready<Result<Response, Infallible>>, S::Future>, Looked>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(named) = self.guard.look_up(&request, false) else {
            // The token cache cannot answer without the store (the first request after a
            // commit, a token's use recorded once a minute): a read or a write, on a
            // blocking thread — never on an async worker, where on PostgreSQL it would hold
            // every other request of that worker for a round trip. The service that was
            // made ready goes with it; a clone stays.
            let guard = self.guard.clone();
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Either::Right(Box::pin(async move {
                let looking = guard.clone();
                let looked = tokio::task::spawn_blocking(move || {
                    let named = looking.look_up(&request, true);
                    (request, named)
                })
                .await;
                let Ok((request, named)) = looked else {
                    tracing::error!("the token check's store look panicked");
                    return Ok(ApiError::internal().into_response());
                };
                // Allowed to use the store, the look always answers.
                let named = named.unwrap_or(Ok((true, None, None)));
                match guard.check(request, named) {
                    Checked::Pass(request) => inner.call(request).await,
                    Checked::Answer(answer) => Ok(answer),
                }
            }));
        };
        match self.guard.check(request, named) {
            Checked::Pass(request) => Either::Left(Either::Right(self.inner.call(request))),
            Checked::Answer(answer) => Either::Left(Either::Left(ready(Ok(answer)))),
        }
    }
}

/// What the token check learns from the store ([`broked_connections::Authorization`]).
type Named = broked_connections::Authorization;

/// What the token check decided: the request goes on to its route, or this is the answer (a
/// refusal, or a kept answer).
enum Checked {
    Pass(Request),
    Answer(Response),
}

/// What a request may do once its token was checked: everything (no token needed, or the
/// bootstrap token) or a named token's grant. A [`Grant`] is only built for a request that
/// goes on to a handler.
enum Access {
    All(&'static str),
    Named(Grant),
}

impl Access {
    fn allows(&self, scope: Scope) -> bool {
        match self {
            Access::All(_) => true,
            Access::Named(g) => g.allows(scope),
        }
    }

    fn sees(&self, conn_id: &str) -> bool {
        match self {
            Access::All(_) => true,
            Access::Named(g) => g.sees(conn_id),
        }
    }

    fn is_limited(&self) -> bool {
        match self {
            Access::All(_) => false,
            Access::Named(g) => g.is_limited(),
        }
    }

    fn grant(self) -> Grant {
        match self {
            Access::All(name) => Grant::all(name),
            Access::Named(g) => g,
        }
    }
}

/// The token a request presents (`Authorization: Bearer …`), and the client's address.
fn credentials(request: &Request) -> (Option<&str>, Option<IpAddr>) {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    (
        presented,
        request.extensions().get::<ClientAddr>().map(|a| a.0),
    )
}

impl Guard {
    /// The store's part of the check: whether named tokens exist (they turn authentication
    /// on even without a bootstrap token) and what the presented one may do, from one look at
    /// the store's generation (issue 19). A client over the limit of failures gets no lookup
    /// of its token. `None` when that needs a read or write of the store and `may_block` is
    /// false.
    fn look_up(
        &self,
        request: &Request,
        may_block: bool,
    ) -> Option<Result<Named, broked_connections::Error>> {
        let c = &self.connections;
        let (presented, client) = credentials(request);
        if matches!((presented, &self.token), (Some(p), Some(t)) if t.matches(p)) {
            return Some(Ok((false, None, None)));
        }
        if presented.is_some() && self.failures.blocked(client).is_some() {
            let any = if may_block {
                c.tokens_exist().map(Some)
            } else {
                c.tokens_exist_cached()
            };
            return any.map(|a| a.map(|any| (any, None, None))).transpose();
        }
        if may_block {
            Some(c.authorize(presented))
        } else {
            c.authorize_cached(presented).transpose()
        }
    }

    /// The request, with its [`Grant`] (and the generation the check saw, [`crate::cache::Seen`])
    /// in its extensions — or the answer: a refusal, or the kept answer of a single GET.
    /// `named` is what [`Guard::look_up`] found for this request.
    fn check(
        &self,
        mut request: Request,
        named: Result<Named, broked_connections::Error>,
    ) -> Checked {
        use axum::http::StatusCode;
        let c = &self.connections;
        let (presented, client) = credentials(&request);
        let bootstrap = matches!((presented, &self.token), (Some(p), Some(t)) if t.matches(p));
        let (named_any, named_grant, seen) = match named {
            Ok(named) => named,
            Err(e) => return Checked::Answer(ApiError::from(e).into_response()),
        };
        let auth_required = self.token.is_some() || named_any;
        if let Some(refused) = cross_site(auth_required, request.headers()) {
            return Checked::Answer(refused.into_response());
        }
        // The methods the token routes have; any other answers 405 from the router.
        let is_tokens_route = {
            use axum::http::Method;
            let (path, method) = (request.uri().path(), request.method());
            (path == "/api/tokens"
                && (method == Method::GET || method == Method::HEAD || method == Method::POST))
                || (path.starts_with("/api/tokens/") && method == Method::DELETE)
        };
        let access = if !auth_required {
            // Creating a token here would switch authentication on for everyone, from a
            // request nobody authenticated: token management needs a token, or the CLI.
            if is_tokens_route {
                return Checked::Answer(refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "token management over the API needs authentication: start the server \
                     with --api-token (or BROKED_API_TOKEN), or use `broked token create`"
                        .into(),
                ));
            }
            Access::All("local")
        } else {
            if let Some(retry) = self.failures.blocked(client) {
                let mut r = refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_failures",
                    "too many failed authentications from this address; try again later".into(),
                );
                if let Ok(v) = axum::http::HeaderValue::from_str(&retry.to_string()) {
                    r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
                }
                return Checked::Answer(r);
            }
            match (bootstrap, named_grant) {
                (true, _) => Access::All("bootstrap"),
                (false, Some(g)) => Access::Named(g),
                (false, None) => {
                    // Only a presented token that is wrong counts towards the limit: a client
                    // that has not sent one yet (a browser before its prompt) is not guessing.
                    if presented.is_some() {
                        self.failures.record(client);
                        tracing::warn!(client = ?client, "refused authentication: a wrong token");
                        record_refused(c, client, &request);
                    }
                    return Checked::Answer(ApiError::unauthorized().into_response());
                }
            }
        };
        // The route's scope, and the connection in its path: a connection outside the token's
        // globs answers exactly like a missing one.
        if let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() {
            let route = matched.as_str();
            if let Some(scope) = scope_of(request.method(), route) {
                if !access.allows(scope) {
                    return Checked::Answer(refuse(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("this token may not do that: it needs the {scope} scope"),
                    ));
                }
            }
            if let Some(id) = path_conn_id(request.method(), route, request.uri().path()) {
                if !access.sees(id) {
                    return Checked::Answer(
                        ApiError::not_found(format!("connection {id:?} not found")).into_response(),
                    );
                }
                // A single GET whose answer was kept at the generation this check saw (after
                // the request arrived): it holds every commit made before the request, and
                // the token may see it — sent from here (cache.rs).
                if let Some(generation) = seen {
                    if request.method() == axum::http::Method::GET
                        && route == "/api/connections/{conn_id}"
                    {
                        if let Some(kept) = self.gets.kept_at(id, generation) {
                            return Checked::Answer(kept.response());
                        }
                    }
                }
            }
            if route.starts_with("/api/tokens") && access.is_limited() {
                return Checked::Answer(refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "tokens are managed with an admin token that is not limited to some \
                     connections"
                        .into(),
                ));
            }
        }
        request.extensions_mut().insert(access.grant());
        // The store's generation as the check saw it, after the request arrived: a handler
        // may send an answer kept from that generation without looking again (cache.rs).
        if let Some(generation) = seen {
            request
                .extensions_mut()
                .insert(crate::cache::Seen(generation));
        }
        Checked::Pass(request)
    }
}

/// Records a refused authentication in the audit log, off the async workers and without
/// waiting for it: actor `anonymous` (the presented token is unknown by definition, and never
/// recorded), the client's address in the detail.
fn record_refused(
    c: &Arc<broked_connections::Connections>,
    client: Option<IpAddr>,
    request: &Request,
) {
    let mut actor = broked_connections::Actor::anonymous();
    if let Some(id) = request.extensions().get::<crate::metrics::RequestId>() {
        actor = actor.with_request_id(&id.0);
    }
    let detail = format!(
        "client={} route={}",
        client.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or("unmatched", |m| m.as_str())
    );
    let c = c.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = c.record_refused(&actor, &detail) {
            tracing::warn!(error = %e, "cannot record a refused authentication in the audit log");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
            "LOCALHOST:1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for no in [
            "",
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "[::2]:80",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
        ] {
            assert!(!loopback_host(no), "{no}");
        }
    }
}
