//! The HTTP probe against tiny HTTP/HTTPS responders written here, on loopback only.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use broked_core::{ConnId, Secret};
use broked_probe::testkit::{closed_port, silent_listener};
use broked_probe::{ConnType, Connection, Failure, Outcome, Registry, Tls};
use broked_probe_http::HttpProbe;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const PASSWORD: &str = "http-Secret-pw-77";

/// What a responder answers: status and extra header lines, given the request head.
type Handler = Arc<dyn Fn(&str) -> (u16, String) + Send + Sync>;

/// Heads of the requests a responder received.
type Seen = Arc<Mutex<Vec<String>>>;

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, handler: Handler, seen: Seen) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    seen.lock().unwrap().push(head.clone());
    let (status, headers) = handler(&head);
    let resp =
        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n{headers}\r\n");
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A plain HTTP responder on `ip`; returns its port and what it saw.
async fn http_server(ip: &str, handler: Handler) -> (u16, Seen) {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_one(s, handler.clone(), seen2.clone()));
        }
    });
    (port, seen)
}

fn ok() -> Handler {
    Arc::new(|_| (200, String::new()))
}

fn registry(timeout: Duration, deny: &[&str]) -> Registry {
    broked_probe::testkit::registry(HttpProbe, timeout, deny)
}

fn conn(host: &str, port: Option<u16>, extra: Option<&str>) -> Connection {
    Connection {
        conn_id: ConnId::new("web").unwrap(),
        conn_type: ConnType::Http,
        host: Some(host.to_owned()),
        port,
        schema: None,
        login: Some("etl".into()),
        password: Some(Secret::from(PASSWORD)),
        extra: extra.map(Secret::from),
        description: None,
    }
}

async fn test(r: &Registry, c: &Connection) -> Outcome {
    let o = r.test(c).await;
    let all = format!("{o:?}");
    if std::env::var_os("SHOW").is_some() {
        eprintln!("{all}");
    }
    assert!(!all.contains(PASSWORD), "password leaked: {all}");
    assert!(!all.contains("extra-token-value"), "extra leaked: {all}");
    o
}

#[tokio::test]
async fn success_sends_basic_auth_headers_method_and_path() {
    let (port, seen) = http_server("127.0.0.1", ok()).await;
    let mut c = conn(
        "127.0.0.1",
        Some(port),
        Some(r#"{"method":"HEAD","path":"/health","headers":{"X-Api-Key":"extra-token-value"}}"#),
    );
    c.schema = Some("/api/v1".into());
    let o = test(&registry(Duration::from_secs(5), &[]), &c).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.message, "Connected successfully (reqwest)");
    assert_eq!(o.driver, "reqwest");
    assert_eq!(o.detail, "HTTP 200 OK");
    assert_eq!(o.tls, Some(Tls::Plaintext), "plain http: {o:?}");
    let head = seen.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("HEAD /api/v1/health HTTP/1.1\r\n"),
        "{head}"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("etl:{PASSWORD}"));
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "authorization: basic {}",
            basic.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("x-api-key: extra-token-value"),
        "{head}"
    );
}

#[tokio::test]
async fn status_classes_and_expected_status() {
    let handler: Handler = Arc::new(|head: &str| {
        let path = head.split(' ').nth(1).unwrap_or("/");
        match path {
            "/401" => (401, String::new()),
            "/403" => (403, String::new()),
            "/404" => (404, String::new()),
            "/500" => (500, String::new()),
            "/204" => (204, String::new()),
            _ => (200, String::new()),
        }
    });
    let (port, _) = http_server("127.0.0.1", handler).await;
    let r = registry(Duration::from_secs(5), &[]);
    let cases = [
        (r#"{"path":"/401"}"#, Some(Failure::Auth)),
        // Issue 18: 403 is `authorization` (it was `auth`): the server knows who asks.
        (r#"{"path":"/403"}"#, Some(Failure::Authorization)),
        (r#"{"path":"/404"}"#, Some(Failure::NotFound)),
        (r#"{"path":"/500"}"#, Some(Failure::Protocol)),
        (r#"{"path":"/204"}"#, None),
        (
            r#"{"path":"/204","expected_status":200}"#,
            Some(Failure::Protocol),
        ),
        (r#"{"path":"/401","expected_status":[401,403]}"#, None),
    ];
    for (extra, want) in cases {
        let o = test(&r, &conn("127.0.0.1", Some(port), Some(extra))).await;
        assert_eq!(o.failure, want, "{extra}: {o:?}");
        // Issue 18: each failure names the fields to check.
        let fields: &[&str] = match want {
            Some(Failure::Auth) => &["login", "password", "extra.headers"],
            Some(Failure::Authorization) => &["login", "extra.headers", "schema", "extra.path"],
            Some(Failure::NotFound) => &["schema", "extra.path"],
            Some(_) => &["extra.expected_status"],
            None => &[],
        };
        broked_probe::testkit::assert_names(&o.message, fields);
    }
    let o = test(
        &r,
        &conn(
            "127.0.0.1",
            Some(port),
            Some(r#"{"path":"/204","expected_status":200}"#),
        ),
    )
    .await;
    // Issue 18: the message goes on to name the fields to check.
    assert_eq!(
        o.message,
        format!(
            "http://127.0.0.1:{port} answered 204 No Content, expected 200: check schema (base \
             path), extra.path and extra.expected_status"
        )
    );
}

#[tokio::test]
async fn redirects_are_checked_per_hop() {
    // The denied target: it must never see a connection.
    let (denied_port, denied_seen) = http_server("127.0.0.2", ok()).await;
    let handler: Handler = Arc::new(move |head: &str| {
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let to = match path.as_str() {
            "/plain" => format!("http://127.0.0.2:{denied_port}/"),
            "/decimal" => format!("http://2130706434:{denied_port}/"),
            "/mapped" => format!("http://[::ffff:127.0.0.2]:{denied_port}/"),
            "/named" => format!("http://denied.localhost:{denied_port}/"),
            "/loop" => "/loop".to_owned(),
            "/ok" => "/final".to_owned(),
            _ => return (200, String::new()),
        };
        (302, format!("Location: {to}\r\n"))
    });
    let (port, seen) = http_server("127.0.0.1", handler).await;
    let r = registry(
        Duration::from_secs(5),
        &["127.0.0.2/32", "denied.localhost"],
    );
    for path in ["/plain", "/decimal", "/mapped", "/named"] {
        let extra = format!(r#"{{"path":"{path}"}}"#);
        let o = test(&r, &conn("127.0.0.1", Some(port), Some(&extra))).await;
        assert_eq!(o.failure, Some(Failure::Blocked), "{path}: {o:?}");
        assert_eq!(o.message, "blocked by probe policy");
    }
    let o = test(
        &r,
        &conn("127.0.0.1", Some(port), Some(r#"{"path":"/loop"}"#)),
    )
    .await;
    assert_eq!(o.failure, Some(Failure::Protocol), "{o:?}");
    assert!(o.message.contains("redirects"), "{o:?}");
    let o = test(
        &r,
        &conn("127.0.0.1", Some(port), Some(r#"{"path":"/ok"}"#)),
    )
    .await;
    assert!(o.success, "{o:?}");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with("GET /final "))
    );
    assert!(
        denied_seen.lock().unwrap().is_empty(),
        "a denied address received a request"
    );
}

/// Issue 13.7: basic auth and the custom headers of extra go to the connection's origin only;
/// a redirect to another origin (here another port) gets neither, and a redirect back home
/// gets them again.
#[tokio::test]
async fn credentials_stay_with_their_origin_on_redirects() {
    let (other_port, other_seen) = http_server(
        "127.0.0.1",
        Arc::new(|head: &str| {
            let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
            match path.strip_prefix("/back-to/") {
                Some(port) => (307, format!("Location: http://127.0.0.1:{port}/home\r\n")),
                None => (200, String::new()),
            }
        }),
    )
    .await;
    let handler: Handler = Arc::new(move |head: &str| {
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let port = head
            .lines()
            .find_map(|l| l.strip_prefix("host: 127.0.0.1:"))
            .unwrap_or("0")
            .trim()
            .to_owned();
        match path.as_str() {
            "/away" => (
                302,
                format!("Location: http://127.0.0.1:{other_port}/landed\r\n"),
            ),
            "/round-trip" => (
                302,
                format!("Location: http://127.0.0.1:{other_port}/back-to/{port}\r\n"),
            ),
            "/same" => (301, "Location: /same-final\r\n".to_owned()),
            _ => (200, String::new()),
        }
    });
    let (port, seen) = http_server("127.0.0.1", handler).await;
    let r = registry(Duration::from_secs(5), &[]);
    let extra = |path: &str| {
        format!(r#"{{"path":"{path}","headers":{{"X-Api-Key":"extra-token-value"}}}}"#)
    };
    let carries = |head: &str| {
        let h = head.to_ascii_lowercase();
        (
            h.contains("x-api-key: extra-token-value"),
            h.contains("authorization: basic"),
        )
    };
    for path in ["/away", "/round-trip", "/same"] {
        let o = test(&r, &conn("127.0.0.1", Some(port), Some(&extra(path)))).await;
        assert!(o.success, "{path}: {o:?}");
    }
    let seen = seen.lock().unwrap().clone();
    let other = other_seen.lock().unwrap().clone();
    assert!(!other.is_empty(), "the other origin was reached");
    for head in &other {
        assert_eq!(
            carries(head),
            (false, false),
            "sent to another origin:\n{head}"
        );
    }
    // Every request at the connection's origin carried both: the first ones, the same-origin
    // hop, and the hop back home.
    assert_eq!(seen.len(), 5, "{seen:?}");
    for head in &seen {
        assert_eq!(
            carries(head),
            (true, true),
            "at the connection's origin:\n{head}"
        );
    }
    assert!(seen.iter().any(|h| h.starts_with("GET /same-final ")));
    assert!(seen.iter().any(|h| h.starts_with("GET /home ")));
}

#[tokio::test]
async fn denied_hosts_are_blocked_before_any_packet() {
    let (port, seen) = http_server("127.0.0.2", ok()).await;
    let r = registry(Duration::from_secs(5), &["127.0.0.2/32"]);
    for host in [
        "127.0.0.2",
        "2130706434",
        "::ffff:127.0.0.2",
        "http://[::ffff:127.0.0.2]",
        "http://0x7f000002",
    ] {
        let o = test(&r, &conn(host, Some(port), None)).await;
        assert_eq!(o.failure, Some(Failure::Blocked), "{host}: {o:?}");
    }
    // A name resolving to a denied address.
    let r = registry(Duration::from_secs(5), &["127.0.0.0/8", "::1"]);
    let o = test(&r, &conn("localhost", Some(port), None)).await;
    assert_eq!(o.failure, Some(Failure::Blocked), "{o:?}");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn refused_fast_and_silent_times_out() {
    let closed = closed_port();
    let r = registry(Duration::from_millis(500), &[]);
    let start = Instant::now();
    let o = test(&r, &conn("127.0.0.1", Some(closed), None)).await;
    assert_eq!(o.failure, Some(Failure::Refused), "{o:?}");
    broked_probe::testkit::assert_names(&o.message, &["host and port"]);
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );

    let port = silent_listener().await;
    let start = Instant::now();
    let o = test(&r, &conn("127.0.0.1", Some(port), None)).await;
    let took = start.elapsed();
    assert_eq!(o.failure, Some(Failure::Timeout), "{o:?}");
    broked_probe::testkit::assert_names(&o.message, &["host", "port"]);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn not_http_is_protocol() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        }
    });
    let o = test(
        &registry(Duration::from_secs(2), &[]),
        &conn("127.0.0.1", Some(port), None),
    )
    .await;
    assert_eq!(o.failure, Some(Failure::Protocol), "{o:?}");
    // Issue 18: what the port speaks instead, and the field to check.
    assert!(
        o.message.starts_with(&format!(
            "127.0.0.1:{port} speaks SSH, not HTTP: check port"
        )),
        "{o:?}"
    );
}

#[tokio::test]
async fn unresolvable_host_is_dns() {
    use broked_probe::testkit::UNRESOLVABLE;
    let r = registry(Duration::from_secs(5), &[]);
    for host in [
        UNRESOLVABLE.to_owned(),
        format!("https://{UNRESOLVABLE}/v1"),
    ] {
        let o = test(&r, &conn(&host, None, None)).await;
        assert_eq!(o.failure, Some(Failure::Dns), "{host}: {o:?}");
        broked_probe::testkit::assert_names(&o.message, &[UNRESOLVABLE, "host"]);
    }
}

mod tls {
    use super::*;
    use broked_testenv::TestCa;
    use tokio_rustls::TlsAcceptor;

    /// An HTTPS responder with a certificate for `names` from a fresh test CA; returns its
    /// port and the CA's PEM.
    async fn https_server_for(names: &[&str]) -> (u16, String) {
        let ca = TestCa::new("broked test CA");
        let acceptor = TlsAcceptor::from(ca.server_config(names));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        serve_one(tls, ok(), Arc::default()).await;
                    }
                });
            }
        });
        (port, ca.pem())
    }

    /// [`https_server_for`] localhost and 127.0.0.1.
    async fn https_server() -> (u16, String) {
        https_server_for(&["localhost", "127.0.0.1"]).await
    }

    #[tokio::test]
    async fn verified_with_test_ca_failing_without_it() {
        let (port, ca_pem) = https_server().await;
        let r = registry(Duration::from_secs(5), &[]);
        let extra = serde_json::json!({ "ca_cert": ca_pem }).to_string();
        let o = test(&r, &conn("https://localhost", Some(port), Some(&extra))).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.tls, Some(Tls::Verified), "{o:?}");
        let o = test(&r, &conn("https://127.0.0.1", Some(port), Some(&extra))).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.tls, Some(Tls::Verified), "{o:?}");

        // Issue 18: an untrusted certificate is `certificate` (it was `tls`), naming the CA key.
        let o = test(&r, &conn("https://localhost", Some(port), None)).await;
        assert_eq!(o.failure, Some(Failure::Certificate), "{o:?}");
        assert!(o.message.contains("is not trusted"), "{o:?}");
        broked_probe::testkit::assert_names(&o.message, &["extra.ca_cert", "host"]);

        let o = test(
            &r,
            &conn(
                "https://localhost",
                Some(port),
                Some(r#"{"verify_tls":false}"#),
            ),
        )
        .await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.tls, Some(Tls::Unverified), "verify_tls false: {o:?}");
    }
}

/// Proxies from the server's environment would reach targets on the probe's behalf, past the
/// policy: they must be ignored. Environment variables are per process, so the check runs in
/// a child test process with HTTP_PROXY/HTTPS_PROXY/ALL_PROXY pointing at a recording listener.
#[test]
fn environment_proxies_are_ignored() {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.local_addr().unwrap().port());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "proxy_child", "--nocapture"])
        .env("BROKED_HTTP_PROXY_CHILD", "1")
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("HTTPS_PROXY", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    let (status, text) = broked_testenv::run_output(&mut child);
    assert!(status.success() && text.contains("1 passed"), "{text}");
    assert!(
        proxy.accept().is_err(),
        "the probe went through the environment's proxy"
    );
}

#[tokio::test]
async fn proxy_child() {
    if std::env::var_os("BROKED_HTTP_PROXY_CHILD").is_none() {
        return; // runs only inside environment_proxies_are_ignored
    }
    let (port, seen) = http_server("127.0.0.1", ok()).await;
    let o = test(
        &registry(Duration::from_secs(5), &[]),
        &conn("127.0.0.1", Some(port), None),
    )
    .await;
    assert!(o.success, "{o:?}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// Issue 18: the TLS classes, each naming what to fix — a certificate for another name, an
/// `https://` host that speaks plain HTTP, an `http://` host that speaks TLS.
mod tls_classes {
    use super::*;
    use broked_testenv::TestCa;
    use tokio_rustls::TlsAcceptor;

    #[tokio::test]
    async fn name_mismatch_is_certificate() {
        let ca = TestCa::new("broked test CA");
        let acceptor = TlsAcceptor::from(ca.server_config(&["localhost"]));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        serve_one(tls, ok(), Arc::default()).await;
                    }
                });
            }
        });
        let extra = serde_json::json!({ "ca_cert": ca.pem() }).to_string();
        let r = registry(Duration::from_secs(5), &[]);
        let o = test(&r, &conn("https://127.0.0.1", Some(port), Some(&extra))).await;
        assert_eq!(o.failure, Some(Failure::Certificate), "{o:?}");
        assert!(
            o.message.contains("is not valid for the name 127.0.0.1"),
            "{o:?}"
        );
        broked_probe::testkit::assert_names(&o.message, &["host"]);

        // The same server over http://: it speaks TLS, so the message says to write https://.
        let o = test(&r, &conn("http://localhost", Some(port), None)).await;
        assert_eq!(o.failure, Some(Failure::Tls), "{o:?}");
        assert_eq!(
            o.message,
            format!(
                "the server at localhost:{port} speaks TLS (HTTPS), not plain HTTP: write host as \
                 https://localhost"
            )
        );
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_says_use_http() {
        let (port, seen) = http_server("127.0.0.1", ok()).await;
        let r = registry(Duration::from_secs(5), &[]);
        let o = test(&r, &conn("https://127.0.0.1", Some(port), None)).await;
        assert_eq!(o.failure, Some(Failure::Tls), "{o:?}");
        assert_eq!(
            o.message,
            format!(
                "the server at 127.0.0.1:{port} speaks plain HTTP, not TLS (HTTPS): write host as \
                 http://127.0.0.1"
            )
        );
        // The look was a bare HEAD without credentials.
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.iter().all(|h| h.starts_with("HEAD / HTTP/1.0\r\n")),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .all(|h| !h.to_ascii_lowercase().contains("authorization"))
        );
    }
}
