//! The web UI: static files embedded in the binary, no build step, nothing from the internet.
//!
//! `ui/index.html`, `ui/app.js` and `ui/style.css` are plain HTML, JavaScript and CSS that use
//! only the REST API (docs/ui.md). They are served under a strict Content-Security-Policy: no
//! inline script or style, nothing from another origin, no framing.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/style.css");

/// A strict policy: only our own scripts, styles and API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
}

fn page(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::{APP_JS, INDEX, STYLE};

    /// What the CSP would block, and what would turn API text into markup, is not in the files.
    #[test]
    fn no_inline_code_and_no_html_from_strings() {
        for (name, text) in [
            ("index.html", INDEX),
            ("app.js", APP_JS),
            ("style.css", STYLE),
        ] {
            for banned in [
                "style=",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "http://",
                "https://",
            ] {
                assert!(!text.contains(banned), "{name} contains {banned:?}");
            }
        }
        assert!(!INDEX.contains("<script>"), "no inline script");
        assert!(!INDEX.contains("<style"), "no inline style");
        for handler in [
            "onclick=",
            "onload=",
            "onsubmit=",
            "onchange=",
            "oninput=",
            "onerror=",
        ] {
            assert!(!INDEX.contains(handler), "no inline handler {handler}");
        }
    }

    /// Every element the script looks up by a literal id exists in the page.
    #[test]
    fn ids_used_by_the_script_exist() {
        let mut rest = APP_JS;
        let mut checked = 0;
        while let Some(at) = rest.find("$('") {
            rest = &rest[at + 3..];
            let id = &rest[..rest.find('\'').expect("closing quote")];
            assert!(
                INDEX.contains(&format!("id=\"{id}\"")),
                "app.js uses #{id}, index.html lacks it"
            );
            checked += 1;
        }
        // Every key of a connection object (the list the API reads), and the region the form
        // keeps in extra.
        for field in broked_connections::CONNECTION_KEYS
            .into_iter()
            .chain(["region"])
        {
            for prefix in ["f-", "e-"] {
                assert!(
                    INDEX.contains(&format!("id=\"{prefix}{field}\"")),
                    "index.html lacks #{prefix}{field}"
                );
            }
            assert!(
                INDEX.contains(&format!("data-field=\"{field}\"")),
                "index.html lacks the {field} field"
            );
        }
        assert!(checked > 20, "the scan found the lookups ({checked})");
    }
}
