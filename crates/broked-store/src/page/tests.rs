//! Pages and test results, on every backend (as `crate::tests`' suite does).

use crate::tests::{Backend, Sqlite, conn, del, with_key};
use crate::*;

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Sqlite::new());
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(b) = crate::tests::Pg::new() {
                        super::$name(&b);
                    }
                }
            )*
        }
    };
}

both!(
    pages_follow_each_other_in_conn_id_order_and_carry_no_sealed_value,
    filters_by_type_search_and_count,
    test_results_are_recorded_listed_and_filtered,
    a_test_of_an_older_version_or_a_deleted_connection_records_nothing,
    status_filtered_pages_follow_each_other,
    a_search_for_the_escape_character_finds_it_as_written,
    the_kept_counts_follow_every_write,
    a_kept_total_is_the_same_on_every_kind_of_page,
);

/// 25 connections: `c-00`…`c-24`; every third an `http` one on `API.example.com`, the others
/// postgres on `db.example.com`; `c-07` described as "Billing WAREHOUSE".
fn seed(store: &impl Store) {
    with_key(store);
    for i in 0..25 {
        let mut c = conn(&format!("c-{i:02}"));
        if i % 3 == 0 {
            c.conn_type = "http".into();
            c.host = Some("API.example.com".into());
            c.password = None;
            c.extra = Some(Sealed {
                key_id: 1,
                blob: b"sealed-extra".to_vec(),
            });
        }
        c.description = (i == 7).then(|| "Billing WAREHOUSE".into());
        store.insert_connection(&c).unwrap();
    }
}

/// The first page's total without a search or status filter (on SQLite from the counts the
/// database keeps, migration 7; counted on PostgreSQL): after inserts, an update that changes
/// the type, one that does not, deletes (with and without a kept history), an import that
/// overwrites and the purge of a deleted one's history, it equals the rows counted one by one
/// — per type and for all, and capped as `count_up_to` asks.
fn the_kept_counts_follow_every_write(b: &impl Backend) {
    let store = b.open();
    seed(&store);
    let total = |conn_type: Option<&str>, cap: u64| {
        store
            .page_connections(&ConnQuery {
                conn_type: conn_type.map(str::to_owned),
                limit: Some(1),
                count_up_to: Some(cap),
                ..ConnQuery::default()
            })
            .unwrap()
            .total
    };
    let rows = |conn_type: Option<&str>| {
        store
            .page_connections(&ConnQuery {
                conn_type: conn_type.map(str::to_owned),
                ..ConnQuery::default()
            })
            .unwrap()
            .rows
            .len() as u64
    };
    let check = |when: &str| {
        for t in [
            None,
            Some("http"),
            Some("postgres"),
            Some("mysql"),
            Some("sftp"),
        ] {
            let n = rows(t);
            assert_eq!(total(t, 1_000), Some(Total::Exact(n)), "{when}: {t:?}");
            if n > 2 {
                assert_eq!(total(t, 2), Some(Total::MoreThan(2)), "{when}: {t:?}");
            }
        }
    };
    check("seeded");
    assert_eq!(total(None, 1_000), Some(Total::Exact(25)));
    // A change of type moves the connection from one count to the other; another change
    // moves nothing.
    let mut retyped = store.get_connection("c-01").unwrap().unwrap();
    retyped.conn_type = "mysql".into();
    retyped.updated_at = "2026-12-03T10:00:00Z".into();
    assert_eq!(
        store.update_connection(&retyped, 10).unwrap(),
        Written::Done
    );
    let mut same = store.get_connection("c-02").unwrap().unwrap();
    same.host = Some("db2.example.com".into());
    assert_eq!(store.update_connection(&same, 10).unwrap(), Written::Done);
    check("after updates");
    assert_eq!(total(Some("mysql"), 1_000), Some(Total::Exact(1)));
    // Deletes, one keeping its history, one forced.
    assert_eq!(
        store.delete_connection("c-03", &del(false)).unwrap(),
        Deleted::Done
    );
    assert_eq!(
        store.delete_connection("c-04", &del(true)).unwrap(),
        Deleted::Done
    );
    store.purge_history("c-03").unwrap();
    check("after deletes");
    // An import: new rows and overwritten ones, one of them of another type.
    let mut over = conn("c-05");
    over.conn_type = "sftp".into();
    let rows_in = [over, conn("n-1"), conn("n-2")];
    store.put_connections(&rows_in, true, 10).unwrap();
    check("after an import");
    assert_eq!(total(None, 1_000), Some(Total::Exact(25)));
    assert_eq!(total(Some("sftp"), 1_000), Some(Total::Exact(1)));
}

fn ids(page: &ConnPage) -> Vec<&str> {
    page.rows.iter().map(|r| r.conn_id.as_str()).collect()
}

fn pages_follow_each_other_in_conn_id_order_and_carry_no_sealed_value(b: &impl Backend) {
    let store = b.open();
    seed(&store);
    let mut q = ConnQuery {
        limit: Some(10),
        ..ConnQuery::default()
    };
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let page = store.page_connections(&q).unwrap();
        sizes.push((page.rows.len(), page.more));
        seen.extend(ids(&page).into_iter().map(str::to_owned));
        if !page.more {
            break;
        }
        q.after = page.rows.last().map(|r| r.conn_id.clone());
    }
    assert_eq!(sizes, [(10, true), (10, true), (5, false)]);
    let expected: Vec<String> = (0..25).map(|i| format!("c-{i:02}")).collect();
    assert_eq!(seen, expected);

    // Everything at once, and the columns of a row.
    let all = store.page_connections(&ConnQuery::default()).unwrap();
    assert_eq!(all.rows.len(), 25);
    assert!(!all.more);
    assert_eq!(all.total, None, "not asked for");
    let pg = &all.rows[1];
    assert_eq!(
        (
            pg.conn_type.as_str(),
            pg.host.as_deref(),
            pg.port,
            pg.has_password,
            pg.has_extra
        ),
        ("postgres", Some("db.example.com"), Some(5432), true, false)
    );
    assert_eq!(
        (pg.schema.as_deref(), pg.login.as_deref(), pg.version),
        (Some("mydb"), Some("etl"), 1)
    );
    let http = &all.rows[0];
    assert_eq!((http.has_password, http.has_extra), (false, true));
    assert_eq!(http.last_test, None);
    // A page after the last id is empty; one that ends exactly at the end has no next.
    let after_end = store
        .page_connections(&ConnQuery {
            after: Some("c-24".into()),
            limit: Some(5),
            ..ConnQuery::default()
        })
        .unwrap();
    assert_eq!((after_end.rows.len(), after_end.more), (0, false));
    let exact = store
        .page_connections(&ConnQuery {
            after: Some("c-19".into()),
            limit: Some(5),
            ..ConnQuery::default()
        })
        .unwrap();
    assert_eq!((exact.rows.len(), exact.more), (5, false));
}

fn filters_by_type_search_and_count(b: &impl Backend) {
    let store = b.open();
    seed(&store);
    let query = |conn_type: Option<&str>, search: Option<&str>| ConnQuery {
        conn_type: conn_type.map(str::to_owned),
        search: search.map(str::to_owned),
        count_up_to: Some(1_000),
        ..ConnQuery::default()
    };
    let http = store.page_connections(&query(Some("http"), None)).unwrap();
    assert_eq!(
        ids(&http),
        [
            "c-00", "c-03", "c-06", "c-09", "c-12", "c-15", "c-18", "c-21", "c-24"
        ]
    );
    assert_eq!(http.total, Some(Total::Exact(9)));
    // The host, case-insensitively.
    let api = store
        .page_connections(&query(None, Some("api.EXAMPLE")))
        .unwrap();
    assert_eq!(api.total, Some(Total::Exact(9)));
    // The description, and the conn_id.
    let billing = store
        .page_connections(&query(None, Some("warehouse")))
        .unwrap();
    assert_eq!(ids(&billing), ["c-07"]);
    let by_id = store.page_connections(&query(None, Some("C-1"))).unwrap();
    assert_eq!(by_id.rows.len(), 10);
    // Filters combine; an empty search is no filter; nothing found is an empty page.
    let both = store
        .page_connections(&query(Some("postgres"), Some("-2")))
        .unwrap();
    assert_eq!(ids(&both), ["c-20", "c-22", "c-23"]);
    assert_eq!(
        store
            .page_connections(&query(None, Some("")))
            .unwrap()
            .rows
            .len(),
        25
    );
    let none = store
        .page_connections(&query(None, Some("no-such")))
        .unwrap();
    assert_eq!((none.rows.len(), none.total), (0, Some(Total::Exact(0))));
    // LIKE wildcards are plain characters.
    assert!(
        store
            .page_connections(&query(None, Some("%")))
            .unwrap()
            .rows
            .is_empty()
    );
    assert!(
        store
            .page_connections(&query(None, Some("c_0")))
            .unwrap()
            .rows
            .is_empty()
    );
    // The total counts every page, not the rows after the cursor; it stops at the cap.
    let paged = store
        .page_connections(&ConnQuery {
            after: Some("c-20".into()),
            limit: Some(2),
            count_up_to: Some(100),
            ..ConnQuery::default()
        })
        .unwrap();
    assert_eq!(
        (ids(&paged), paged.more, paged.total),
        (vec!["c-21", "c-22"], true, Some(Total::Exact(25)))
    );
    let capped = store
        .page_connections(&ConnQuery {
            limit: Some(2),
            count_up_to: Some(10),
            ..ConnQuery::default()
        })
        .unwrap();
    assert_eq!(capped.total, Some(Total::MoreThan(10)));
    let at_cap = store
        .page_connections(&ConnQuery {
            count_up_to: Some(25),
            ..ConnQuery::default()
        })
        .unwrap();
    assert_eq!(at_cap.total, Some(Total::Exact(25)));
}

fn status(ok: bool, message: &str) -> TestStatus {
    TestStatus {
        tested_at: "2026-12-03T10:00:00Z".into(),
        ok,
        message: message.into(),
    }
}

fn test_results_are_recorded_listed_and_filtered(b: &impl Backend) {
    let store = b.open();
    seed(&store);
    assert!(
        store
            .record_test("c-01", 1, &status(true, "connected"))
            .unwrap()
    );
    assert!(
        store
            .record_test("c-02", 1, &status(false, "refused"))
            .unwrap()
    );
    assert!(
        store
            .record_test("c-03", 1, &status(false, "timed out"))
            .unwrap()
    );
    // A later test replaces the result.
    assert!(
        store
            .record_test("c-03", 1, &status(true, "connected again"))
            .unwrap()
    );
    let with = |s: StatusFilter| {
        store
            .page_connections(&ConnQuery {
                status: Some(s),
                count_up_to: Some(100),
                ..ConnQuery::default()
            })
            .unwrap()
    };
    let failing = with(StatusFilter::Failing);
    assert_eq!(ids(&failing), ["c-02"]);
    assert_eq!(failing.rows[0].last_test, Some(status(false, "refused")));
    assert_eq!(failing.total, Some(Total::Exact(1)));
    assert_eq!(ids(&with(StatusFilter::Passing)), ["c-01", "c-03"]);
    assert_eq!(
        with(StatusFilter::Passing).rows[1].last_test,
        Some(status(true, "connected again"))
    );
    assert_eq!(with(StatusFilter::Untested).total, Some(Total::Exact(22)));
    // With other filters.
    let http_ok = store
        .page_connections(&ConnQuery {
            conn_type: Some("http".into()),
            status: Some(StatusFilter::Passing),
            ..ConnQuery::default()
        })
        .unwrap();
    assert_eq!(ids(&http_ok), ["c-03"]);
    // A new handle sees it.
    let other = b.open();
    let all = other.page_connections(&ConnQuery::default()).unwrap();
    assert_eq!(all.rows[2].last_test, Some(status(false, "refused")));
}

fn a_test_of_an_older_version_or_a_deleted_connection_records_nothing(b: &impl Backend) {
    let store = b.open();
    seed(&store);
    assert!(
        store
            .record_test("c-05", 1, &status(true, "connected"))
            .unwrap()
    );
    let mut c = store.get_connection("c-05").unwrap().unwrap();
    c.host = Some("other.example.com".into());
    assert_eq!(store.update_connection(&c, 10).unwrap(), Written::Done);
    // The test of version 1 ended after the update to version 2.
    assert!(
        !store
            .record_test("c-05", 1, &status(false, "refused"))
            .unwrap()
    );
    let listed = |s: &dyn Store| {
        s.page_connections(&ConnQuery {
            after: Some("c-04".into()),
            limit: Some(1),
            ..ConnQuery::default()
        })
        .unwrap()
        .rows
        .remove(0)
    };
    let row = listed(&store);
    assert_eq!((row.conn_id.as_str(), row.version), ("c-05", 2));
    assert_eq!(row.last_test, None, "the result was about version 1");
    assert!(
        store
            .record_test("c-05", 2, &status(false, "refused"))
            .unwrap()
    );
    assert_eq!(listed(&store).last_test, Some(status(false, "refused")));
    assert!(!store.record_test("missing", 1, &status(true, "x")).unwrap());
    // Deleting the connection deletes its result: one created again is untested.
    assert_eq!(
        store.delete_connection("c-05", &del(false)).unwrap(),
        Deleted::Done
    );
    assert!(!store.record_test("c-05", 2, &status(true, "x")).unwrap());
    store.insert_connection(&conn("c-05")).unwrap();
    assert_eq!(listed(&store).last_test, None);
}

/// Failing and passing connections page by a cursor like the others (the statement reads
/// them from the results' index, issue 19): every page follows the one before, none twice.
fn status_filtered_pages_follow_each_other(b: &impl Backend) {
    let store = b.open();
    seed(&store);
    for i in 0..25 {
        let id = format!("c-{i:02}");
        assert!(store.record_test(&id, 1, &status(i % 2 == 0, "x")).unwrap());
    }
    // An update makes c-04 untested: its old result no longer lists it as passing.
    let mut c = store.get_connection("c-04").unwrap().unwrap();
    c.login = Some("other".into());
    assert_eq!(store.update_connection(&c, 10).unwrap(), Written::Done);
    let walk = |status: StatusFilter, conn_type: Option<&str>| {
        let mut q = ConnQuery {
            status: Some(status),
            conn_type: conn_type.map(str::to_owned),
            limit: Some(4),
            count_up_to: Some(100),
            ..ConnQuery::default()
        };
        let mut seen = Vec::new();
        let mut total = None;
        loop {
            let page = store.page_connections(&q).unwrap();
            total = total.or(page.total);
            assert!(page.rows.len() <= 4);
            seen.extend(ids(&page).into_iter().map(str::to_owned));
            if !page.more {
                break;
            }
            q.after = page.rows.last().map(|r| r.conn_id.clone());
            q.count_up_to = None;
        }
        (seen, total)
    };
    let name = |i: &u32| format!("c-{i:02}");
    let passing: Vec<String> = (0..25)
        .filter(|i| i % 2 == 0 && *i != 4)
        .map(|i| name(&i))
        .collect();
    let failing: Vec<String> = (0..25).filter(|i| i % 2 == 1).map(|i| name(&i)).collect();
    assert_eq!(
        walk(StatusFilter::Passing, None),
        (passing.clone(), Some(Total::Exact(passing.len() as u64)))
    );
    assert_eq!(
        walk(StatusFilter::Failing, None),
        (failing.clone(), Some(Total::Exact(12)))
    );
    assert_eq!(
        walk(StatusFilter::Untested, None),
        (vec!["c-04".to_owned()], Some(Total::Exact(1)))
    );
    // With the type: every third is http.
    let http_failing: Vec<String> = failing
        .iter()
        .filter(|id| id[2..].parse::<u32>().unwrap() % 3 == 0)
        .cloned()
        .collect();
    assert_eq!(
        walk(StatusFilter::Failing, Some("http")),
        (
            http_failing.clone(),
            Some(Total::Exact(http_failing.len() as u64))
        )
    );
}

/// `q` is plain text: the LIKE escape character and wildcards in it match themselves only.
fn a_search_for_the_escape_character_finds_it_as_written(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    let described = [
        ("a", "share \\\\files\\x"),
        ("b", "100% sure"),
        ("c", "1000 sure"),
        ("d", "under_score"),
        ("e", "underscore"),
    ];
    for (id, description) in described {
        let mut c = conn(id);
        c.description = Some(description.into());
        store.insert_connection(&c).unwrap();
    }
    let found = |text: &str| {
        let page = store
            .page_connections(&ConnQuery {
                search: Some(text.into()),
                ..ConnQuery::default()
            })
            .unwrap();
        ids(&page)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(found("\\"), ["a"]);
    assert_eq!(found("\\\\files\\"), ["a"]);
    assert_eq!(found("\\f"), ["a"]);
    assert_eq!(found("0%"), ["b"]);
    assert_eq!(found("r_s"), ["d"]);
    assert_eq!(found("R_S"), ["d"]);
    assert_eq!(found("\\%"), Vec::<String>::new());
}

/// The query plan of every combination of filters (SQLite, `EXPLAIN QUERY PLAN`): a page of
/// a million connections costs what its rows cost only if no plan sorts (a temporary
/// B-tree reads every match before the first row) and every filter that has an index seeks
/// with it; only the search text and `untested` scan the connections in conn_id order
/// (docs/storage.md, "Pages").
#[test]
fn sqlite_page_plans_seek_and_never_sort() {
    use crate::page::{Dialect, page_sql};
    let b = Sqlite::new();
    let store = b.open();
    seed(&store);
    drop(store);
    let c = rusqlite::Connection::open(b.path()).unwrap();
    let plan = |sql: &str, params: &[crate::page::Param]| -> String {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                r.get::<_, String>("detail")
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    let statuses = [
        None,
        Some(StatusFilter::Failing),
        Some(StatusFilter::Passing),
        Some(StatusFilter::Untested),
    ];
    for conn_type in [None, Some("http")] {
        for search in [None, Some("warehouse")] {
            for status in statuses {
                for after in [None, Some("c-10")] {
                    let q = ConnQuery {
                        conn_type: conn_type.map(str::to_owned),
                        search: search.map(str::to_owned),
                        status,
                        after: after.map(str::to_owned),
                        limit: Some(100),
                        count_up_to: Some(10_000),
                        ..ConnQuery::default()
                    };
                    let ((page, params), count) = page_sql(Dialect::Sqlite, &q);
                    let page_plan = plan(&page, &params);
                    let (count, count_params) = count.unwrap();
                    let count_plan = plan(&count, &count_params);
                    let what = format!("{q:?}: page {page_plan:?}, count {count_plan:?}");
                    assert!(!page_plan.contains("TEMP B-TREE"), "{what}");
                    assert!(!count_plan.contains("TEMP B-TREE"), "{what}");
                    let by_status = "INDEX connection_status_ok (ok=?";
                    let by_type = "INDEX connections_type (conn_type=?";
                    // Without a status filter and a search text the count is kept by the
                    // database (migration 7): one row of `connection_counts` per type, read
                    // by its key — no entry of `connections` is counted.
                    let plain = status.is_none() && search.is_none();
                    if plain {
                        assert!(!count.contains("connection_status"), "{what}");
                        assert!(!count_plan.contains("connections"), "{what}");
                        assert!(count_plan.contains("connection_counts"), "{what}");
                        if conn_type.is_some() {
                            assert!(count_plan.contains("PRIMARY KEY (conn_type=?)"), "{what}");
                        }
                    }
                    if matches!(status, Some(StatusFilter::Failing | StatusFilter::Passing)) {
                        // The page in the results' order; the count with either index.
                        assert!(page_plan.contains(by_status), "{what}");
                        assert!(
                            count_plan.contains(by_status) || count_plan.contains(by_type),
                            "{what}"
                        );
                    } else if conn_type.is_some() {
                        assert!(page_plan.contains(by_type), "{what}");
                        if !plain {
                            assert!(count_plan.contains(by_type), "{what}");
                        }
                    } else if after.is_some() {
                        assert!(page_plan.contains("PRIMARY KEY (conn_id>?)"), "{what}");
                    }
                }
            }
        }
    }
    // One connection (the single GET): the primary key.
    let ((one, params), _) = page_sql(
        Dialect::Sqlite,
        &ConnQuery {
            conn_id: Some("c-01".into()),
            ..ConnQuery::default()
        },
    );
    assert!(plan(&one, &params).contains("PRIMARY KEY (conn_id=?)"));
}

/// The total from the kept counts on pages of every shape — full and partial, of a type, of
/// a type with no connection, and asked with a cursor past the last connection (no row to
/// carry it: PostgreSQL reads it in the page statement, and then apart) — equals the
/// connections counted one by one.
fn a_kept_total_is_the_same_on_every_kind_of_page(b: &impl Backend) {
    let store = b.open();
    seed(&store);
    let total = |t: Option<&str>, limit: usize, after: Option<&str>, cap: u64| {
        store
            .page_connections(&ConnQuery {
                conn_type: t.map(str::to_owned),
                limit: Some(limit),
                after: after.map(str::to_owned),
                count_up_to: Some(cap),
                ..ConnQuery::default()
            })
            .unwrap()
            .total
    };
    for (t, n) in [
        (None, 25),
        (Some("http"), 9),
        (Some("postgres"), 16),
        (Some("sftp"), 0),
    ] {
        for limit in [1, 8, 9, 25, 100] {
            assert_eq!(
                total(t, limit, None, 1_000),
                Some(Total::Exact(n)),
                "{t:?} {limit}"
            );
            assert_eq!(
                total(t, limit, Some("zz"), 1_000),
                Some(Total::Exact(n)),
                "{t:?}"
            );
            assert_eq!(
                total(t, limit, Some("c-05"), 1_000),
                Some(Total::Exact(n)),
                "{t:?}"
            );
        }
        if n > 3 {
            assert_eq!(total(t, 2, None, 3), Some(Total::MoreThan(3)), "{t:?}");
            assert_eq!(
                total(t, 2, Some("zz"), 3),
                Some(Total::MoreThan(3)),
                "{t:?}"
            );
        }
    }
}
