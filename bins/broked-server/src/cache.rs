//! The answers of single GETs (`GET /api/connections/{conn_id}`), kept while the store does
//! not change (issue 19).
//!
//! A kept answer carries the store's generation it was read at. The token check of every
//! request looks at the generation after the request arrived (`auth.rs`); when that is the
//! kept answer's, the check sends the kept bytes itself ([`Gets::kept_at`]). Otherwise the
//! handler asks the store — one call, `page_connections` with that generation — and
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

/// The store's generation looked at by the token check of this request (`auth.rs`), after
/// the request arrived: an answer kept from that generation holds every commit made before
/// the request, so a handler sends it without a look of its own (one syscall pair less per
/// kept GET, issue 19).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen(pub(crate) Generation);

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

    /// The answer kept for `conn_id` if it was read at `generation` (the token check's look
    /// of this request, [`Seen`]): nothing was committed since, so it is current.
    pub(crate) fn kept_at(&self, conn_id: &str, generation: Generation) -> Option<Kept> {
        self.lock()
            .get(conn_id)
            .filter(|k| k.generation == Some(generation))
            .cloned()
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

/// Lists kept at most, and the largest list body kept (a list of 10,000 is ~2.3 MB).
const MAX_LISTS: usize = 32;
const MAX_LIST_BYTES: usize = 4 << 20;

/// How long a kept list is sent again while the store does not change: a row's
/// `next_due_at` may be computed from the clock (a schedule the scheduler has not recorded
/// yet), which moves without a commit.
const LIST_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The answers of `GET /api/connections` for tokens that see every connection, by query,
/// kept while the store does not change and for at most [`LIST_FRESH`] (issue 19: the list
/// of 1,000 was bound by reading and serializing its rows on every request). Never for a
/// token limited to some connections: its answer is filtered for it.
#[derive(Default)]
pub(crate) struct Lists {
    kept: Mutex<HashMap<String, KeptList>>,
}

/// One kept list: the body of a `200`, the generation of the store before it was read.
#[derive(Clone)]
pub(crate) struct KeptList {
    generation: Generation,
    at: std::time::Instant,
    body: Bytes,
}

impl Lists {
    /// The body kept for `query`, if it was read at `generation` (nothing committed since)
    /// less than [`LIST_FRESH`] ago.
    pub(crate) fn get(&self, query: &str, generation: Generation) -> Option<Response> {
        let map = self.lock();
        let kept = map.get(query)?;
        (kept.generation == generation && kept.at.elapsed() < LIST_FRESH)
            .then(|| json_response(kept.body.clone()))
    }

    /// Keeps `body` for `query`, read after the store was at `generation`.
    pub(crate) fn keep(&self, query: String, generation: Generation, body: Bytes) {
        if body.len() > MAX_LIST_BYTES {
            return;
        }
        let mut map = self.lock();
        if map.len() >= MAX_LISTS && !map.contains_key(&query) {
            map.retain(|_, k| k.generation == generation && k.at.elapsed() < LIST_FRESH);
            if map.len() >= MAX_LISTS {
                map.clear();
            }
        }
        map.insert(
            query,
            KeptList {
                generation,
                at: std::time::Instant::now(),
                body,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeptList>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A `200` with a JSON body, as axum's `Json` answers.
pub(crate) fn json_response(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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
    fn lists_are_kept_per_query_and_generation_bounded_in_number_and_size() {
        let lists = Lists::default();
        let (g1, g2) = (Generation::for_tests(1), Generation::for_tests(2));
        lists.keep("q".into(), g1, Bytes::from_static(b"[1]"));
        let body = |r: Response| sent(r).2;
        assert_eq!(body(lists.get("q", g1).unwrap()), b"[1]");
        assert!(lists.get("q", g2).is_none(), "a commit since");
        assert!(lists.get("other", g1).is_none());
        // Older than LIST_FRESH: read again.
        lists.lock().get_mut("q").unwrap().at -= LIST_FRESH;
        assert!(lists.get("q", g1).is_none());
        // Too large: not kept.
        lists.keep(
            "big".into(),
            g1,
            Bytes::from(vec![b' '; MAX_LIST_BYTES + 1]),
        );
        assert!(lists.get("big", g1).is_none());
        // Never more than MAX_LISTS.
        for i in 0..3 * MAX_LISTS {
            lists.keep(format!("q{i}"), g2, Bytes::from_static(b"[]"));
            assert!(lists.lock().len() <= MAX_LISTS);
        }
        let last = format!("q{}", 3 * MAX_LISTS - 1);
        assert!(lists.get(&last, g2).is_some());
    }

    #[test]
    fn answers_without_a_generation_are_not_kept() {
        let gets = Gets::default();
        gets.keep("c-1".into(), Kept::new(info("a", 1, None), None));
        assert!(gets.get("c-1").is_none());
        assert!(gets.lock().is_empty());
    }
}
