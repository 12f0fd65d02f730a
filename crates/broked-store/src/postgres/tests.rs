//! PostgreSQL-only behaviour: migrations, opening, error messages. The behaviour both
//! backends share is in `crate::tests`.

use super::*;
use crate::tests::{Backend, Pg, conn, with_key};

#[test]
fn urls_lose_their_credentials_and_query() {
    for (url, shown) in [
        ("postgres://u:pw@db:5432/app", "postgres://db:5432/app"),
        ("postgres://u@db/app?sslmode=require", "postgres://db/app"),
        ("postgresql://db/app?password=pw", "postgresql://db/app"),
        ("postgres://u:p@ss@db", "postgres://db"),
        ("postgres://db:5432", "postgres://db:5432"),
        ("u:pw@db", "(an address that is not a URL)"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

#[test]
fn every_form_of_the_password_is_scrubbed() {
    let url = "postgres://u:p%40ss-w0rd@db/app?password=other-pw&sslmode=prefer";
    let text = "p@ss-w0rd p%40ss-w0rd other-pw u";
    assert_eq!(scrub(text, url), "******** ******** ******** u");
    assert_eq!(scrub("nothing here", "postgres://db/app"), "nothing here");
}

#[test]
fn a_wrong_password_is_a_connect_error_without_the_password() {
    let Some(pg) = Pg::new() else { return };
    let password = "Wr0ng-pw-Zq81-do-not-print";
    let bad = pg.url.replacen(
        &format!(":{}@", broked_testenv::postgres().unwrap().get("PASSWORD")),
        &format!(":{password}@"),
        1,
    );
    assert_ne!(bad, pg.url);
    let err = PgStore::open(&bad).unwrap_err();
    let text = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
    assert!(matches!(err, StoreError::Connect { .. }), "{text}");
    assert!(!text.contains(password), "{text}");
    assert!(!text.contains('@'), "no user information: {text}");
    assert!(text.contains("password authentication failed"), "{text}");
    // The same password as a URL parameter.
    let bad = format!(
        "postgres://{}/{}?user=broked_test&password={password}",
        pg.base_url
            .rsplit_once('@')
            .unwrap()
            .1
            .split('/')
            .next()
            .unwrap(),
        broked_testenv::postgres().unwrap().get("DB"),
    );
    let err = PgStore::open(&bad).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, StoreError::Connect { .. }), "{text}");
    assert!(!text.contains(password), "{text}");
}

#[test]
fn an_unreachable_server_is_a_connect_error() {
    let err = PgStore::open("postgres://u:secret-pw@127.0.0.1:1/db").unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, StoreError::Connect { .. }), "{text}");
    assert!(text.contains("postgres://127.0.0.1:1/db"), "{text}");
    assert!(!text.contains("secret-pw"), "{text}");
    let err = PgStore::open("not a url").unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
}

#[test]
fn debug_shows_no_credentials() {
    let Some(pg) = Pg::new() else { return };
    let store = pg.open();
    let shown = format!("{store:?}");
    assert!(!shown.contains('@'), "{shown}");
    assert!(!shown.contains("search_path"), "{shown}");
}

#[test]
fn migrations_are_recorded_and_run_once() {
    let Some(pg) = Pg::new() else { return };
    let store = pg.open();
    assert_eq!(store.schema_version().unwrap(), PG_SCHEMA_VERSION);
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    drop(store);
    let store = pg.open();
    assert_eq!(store.schema_version().unwrap(), PG_SCHEMA_VERSION);
    assert!(store.get_connection("a").unwrap().is_some());
}

#[test]
fn replicas_starting_at_once_migrate_once() {
    let Some(pg) = Pg::new() else { return };
    let stores: Vec<PgStore> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| pg.open())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for store in &stores {
        assert_eq!(store.schema_version().unwrap(), PG_SCHEMA_VERSION);
    }
    with_key(&stores[0]);
    stores[1].insert_connection(&conn("a")).unwrap();
    assert!(stores[3].get_connection("a").unwrap().is_some());
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let Some(pg) = Pg::new() else { return };
    drop(pg.open());
    pg.admin(&format!(
        "INSERT INTO broked_schema_migrations (version) VALUES ({})",
        PG_SCHEMA_VERSION + 1
    ));
    let err = PgStore::open(&pg.url).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
}

#[test]
fn a_lock_held_past_the_timeout_is_busy_not_a_hang() {
    let Some(pg) = Pg::new() else { return };
    let store = pg.open();
    with_key(&store);
    // A writer of another process holds the state row; ours gives up after BUSY_TIMEOUT.
    let url = pg.url.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = PgConnection::connect(&url).await.unwrap();
            let mut tx = c.begin().await.unwrap();
            sqlx::query("SELECT 1 FROM state WHERE id = 1 FOR UPDATE")
                .execute(&mut *tx)
                .await
                .unwrap();
            locked_tx.send(()).unwrap();
            let _ = done_rx.await;
            tx.rollback().await.unwrap();
        });
    });
    locked_rx.recv().unwrap();
    let start = std::time::Instant::now();
    let err = store.insert_connection(&conn("a")).unwrap_err();
    assert!(matches!(err, StoreError::Busy), "{err}");
    assert!(start.elapsed() >= BUSY_TIMEOUT, "{:?}", start.elapsed());
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    store.insert_connection(&conn("a")).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn open_and_calls_inside_a_tokio_test_work() {
    let Some(pg) = Pg::new() else { return };
    let store = PgStore::open(&pg.url).unwrap();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let guard = store.lock_rotation().unwrap();
    assert!(store.try_lock_rotation().unwrap().is_none());
    drop(guard);
    assert!(store.try_lock_rotation().unwrap().is_some());
    assert_eq!(store.list_connections(None).unwrap().len(), 1);
}
