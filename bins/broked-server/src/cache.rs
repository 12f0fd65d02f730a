//! The answers of single GETs (`GET /api/connections/{conn_id}`), kept while the store does
//! not change (issue 19).
//!
//! A kept answer carries the store's generation it was read at. The next GET of the same
//! connection still asks the store — one call, `page_connections` with that generation — and
//! the store answers "unchanged" from one look at its generation when nothing was committed
//! since, by this process or any other (`broked-store`, `sqlite/page.rs`); then the kept
//! bytes are sent again, without reading, converting or serializing the row. Any commit moves
//! the generation, so an answer is never older than the last commit before the request.
//!
//! What is kept is exactly what the API shows anyway (the masked connection, its `ETag`): no
//! secret. Who may see it is decided before, per request, by the token check (`auth.rs`).
//! The PostgreSQL store does not say its generation with a page, so nothing is kept there.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use broked_connections::{ConnectionInfo, Generation};

use crate::wire::ConnectionOut;

/// Connections kept at most: past it, those of older generations go first, then all.
const MAX_KEPT: usize = 4_096;

/// The kept answers by conn_id.
#[derive(Default)]
pub(crate) struct Gets {
    kept: Mutex<HashMap<String, Kept>>,
}

/// One kept answer: the JSON body and the `ETag` of a `200`.
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    pub(crate) generation: Option<Generation>,
    body: Bytes,
    etag: HeaderValue,
}

impl Gets {
    /// The answer kept for `conn_id`, if any.
    pub(crate) fn get(&self, conn_id: &str) -> Option<Kept> {
        self.lock().get(conn_id).cloned()
    }

    /// Keeps `kept` for `conn_id` (if it has a generation).
    pub(crate) fn keep(&self, conn_id: String, kept: Kept) {
        let Some(generation) = kept.generation else {
            return;
        };
        let mut map = self.lock();
        if map.len() >= MAX_KEPT && !map.contains_key(&conn_id) {
            map.retain(|_, k| k.generation == Some(generation));
            if map.len() >= MAX_KEPT {
                map.clear();
            }
        }
        map.insert(conn_id, kept);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Kept {
    /// The answer of a GET of `info`, read at `generation`: the body and `ETag`
    /// [`crate::wire::tagged`] gives.
    pub(crate) fn new(info: ConnectionInfo, generation: Option<Generation>) -> Kept {
        let etag = crate::wire::etag(info.version);
        // Serializing a struct of strings, numbers and options into memory cannot fail.
        let body = serde_json::to_vec(&ConnectionOut::from(info))
            .expect("a ConnectionOut serializes")
            .into();
        Kept {
            generation,
            body,
            etag,
        }
    }

    /// The `200` with this body and `ETag`.
    pub(crate) fn response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        // What axum's `Json` sets.
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ETAG, self.etag.clone());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broked_connections::{ConnId, ConnType, LastTest};
    use proptest::prelude::*;

    fn info(text: &str, n: i64, tested: Option<bool>) -> ConnectionInfo {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        ConnectionInfo {
            conn_id: ConnId::new(format!("c-{}", n.rem_euclid(1000))).unwrap(),
            conn_type: ConnType::ALL[n.rem_euclid(ConnType::ALL.len() as i64) as usize],
            host: some(text),
            port: u16::try_from(n.rem_euclid(65_536)).ok().filter(|p| *p > 0),
            schema: Some(format!("{text}/schema")),
            login: some(&text.chars().rev().collect::<String>()),
            has_password: n % 2 == 0,
            has_extra: n % 3 == 0,
            description: some(text),
            created_at: "2026-12-02T10:00:00Z".into(),
            updated_at: format!("2026-12-02T10:00:{:02}Z", n.rem_euclid(60)),
            version: n,
            updated_by: some(text),
            last_test: tested.map(|ok| LastTest {
                tested_at: "2026-12-02T11:00:00Z".into(),
                ok,
                message: format!("said {text:?}"),
            }),
        }
    }

    /// What the kept answer sends: status, headers and body bytes.
    /// Status, headers and body of an answer.
    type Sent = (StatusCode, Vec<(String, Vec<u8>)>, Vec<u8>);

    fn sent(r: Response) -> Sent {
        let (parts, body) = r.into_parts();
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(body, usize::MAX))
            .unwrap();
        let mut headers: Vec<_> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        headers.sort();
        (parts.status, headers, body.to_vec())
    }

    /// A kept answer is byte for byte the answer `tagged` gives (the path before the
    /// cache), over odd text: quotes, backslashes, control characters, line separators,
    /// characters outside the BMP, empty and absent fields.
    #[test]
    fn a_kept_answer_is_the_tagged_answer_byte_for_byte() {
        for (i, text) in [
            "",
            "db.example.com",
            "quote \" backslash \\ slash /",
            "\u{0}\u{1}\u{1f}\u{7f} tab\t newline\n return\r",
            "\u{2028}\u{2029} <script>&amp;</script>",
            "ünïcödé 日本語 🎉 \u{10ffff}",
        ]
        .into_iter()
        .enumerate()
        {
            for tested in [None, Some(true), Some(false)] {
                let n = i as i64 * 7 + 1;
                let kept = Kept::new(info(text, n, tested), None).response();
                let before = crate::wire::tagged(StatusCode::OK, info(text, n, tested));
                assert_eq!(sent(kept), sent(before), "{text:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn kept_answers_equal_tagged_answers(text in any::<String>(), n in any::<i64>(), tested in proptest::option::of(any::<bool>())) {
            let kept = Kept::new(info(&text, n, tested), None).response();
            let before = crate::wire::tagged(StatusCode::OK, info(&text, n, tested));
            prop_assert_eq!(sent(kept), sent(before));
        }
    }

    #[test]
    fn answers_without_a_generation_are_not_kept() {
        let gets = Gets::default();
        gets.keep("c-1".into(), Kept::new(info("a", 1, None), None));
        assert!(gets.get("c-1").is_none());
        assert!(gets.lock().is_empty());
    }
}
