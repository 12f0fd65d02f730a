//! An import read row by row ([`Importer`], issue 19): the same result as the import of the
//! parsed document, nothing written or recorded before `finish`, the shape of a document
//! that is not a list of connections told as a row error (not a syntax error).

use broked_connections::{AuditQuery, Connections, Error, ImportRowError};
use serde_json::{Value, json};

use super::Db;

const PASSWORD: &str = "Imp0rt-pw-Vq93-row-by-row";

fn row(id: &str) -> Value {
    json!({"conn_id": id, "type": "postgres", "host": "db.example.com", "port": 5432,
           "login": "etl", "password": PASSWORD, "extra": {"sslmode": "require"}})
}

/// `text` imported through [`Importer::read`], as the CLI reads a JSON file.
fn read(c: &Connections, text: &str, overwrite: bool) -> Result<usize, Error> {
    let mut importer = c.importer(overwrite);
    let mut json = serde_json::Deserializer::from_str(text);
    importer.read(&mut json).unwrap();
    json.end().unwrap();
    importer.finish()
}

fn import_records(c: &Connections) -> usize {
    c.audit_list(&AuditQuery {
        limit: 1000,
        ..AuditQuery::default()
    })
    .unwrap()
    .iter()
    .filter(|r| r.action == "import")
    .count()
}

fn ids(c: &Connections) -> Vec<String> {
    c.list(None)
        .unwrap()
        .into_iter()
        .map(|i| i.conn_id.as_str().to_owned())
        .collect()
}

#[test]
fn a_document_read_row_by_row_imports_what_the_parsed_document_does() {
    // Rows out of order, `connections` after other keys (and before them in the second).
    let text = json!({"format": "broked-connections", "version": 1,
                      "connections": [row("c"), row("a"), row("b")]})
    .to_string();
    let (one, two) = (Db::new(), Db::new());
    let (streamed, parsed) = (one.open(), two.open());
    assert_eq!(read(&streamed, &text, false).unwrap(), 3);
    assert_eq!(
        parsed
            .import(serde_json::from_str(&text).unwrap(), false)
            .unwrap(),
        3
    );
    assert_eq!(ids(&streamed), ["a", "b", "c"]);
    for id in ["a", "b", "c"] {
        let (s, p) = (
            streamed.connection(id).unwrap(),
            parsed.connection(id).unwrap(),
        );
        assert_eq!((s.host, s.port, s.login), (p.host, p.port, p.login));
        assert_eq!(
            streamed.resolve(id).unwrap().uri.expose(),
            parsed.resolve(id).unwrap().uri.expose()
        );
    }
    // A bare array, `connections` first; again without overwrite: refused, naming each row.
    let bare = json!([row("d")]).to_string();
    assert_eq!(read(&streamed, &bare, false).unwrap(), 1);
    let first = r#"{"connections": [{"conn_id": "b", "type": "generic", "host": "h", "port": 1},
                     {"conn_id": "e", "type": "generic", "host": "h", "port": 1}],
                    "format": "broked-connections"}"#;
    let Err(Error::Import(rows)) = read(&streamed, first, false) else {
        panic!("an existing conn_id without overwrite")
    };
    assert_eq!(
        rows.iter().map(|r| r.row).collect::<Vec<_>>(),
        [1],
        "{rows:?}"
    );
    assert_eq!(read(&streamed, first, true).unwrap(), 2);
    assert_eq!(ids(&streamed), ["a", "b", "c", "d", "e"]);
    assert_eq!(import_records(&streamed), 4, "one record per import");
}

/// Bad rows are named in the order of the file, a conn_id seen before included (the first
/// one of a conn_id is the one kept), whatever the order of the conn_ids.
#[test]
fn bad_rows_are_named_in_file_order_whatever_the_order_of_the_conn_ids() {
    let db = Db::new();
    let c = db.open();
    let text = json!([
        row("z"),
        row("m"),
        {"conn_id": "bad port", "type": "postgres", "host": "h", "port": 70000},
        row("a"),
        row("m"),
        "not an object",
        row("z"),
        row("a"),
    ])
    .to_string();
    let Err(Error::Import(rows)) = read(&c, &text, false) else {
        panic!("bad rows")
    };
    let named: Vec<(usize, Option<&str>)> =
        rows.iter().map(|r| (r.row, r.conn_id.as_deref())).collect();
    assert_eq!(
        named,
        [
            (3, Some("bad port")),
            (5, Some("m")),
            (6, None),
            (7, Some("z")),
            (8, Some("a"))
        ],
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .filter(|r| [5, 7, 8].contains(&r.row))
            .all(|r| r.message == "appears more than once in the file"),
        "{rows:?}"
    );
    assert!(ids(&c).is_empty(), "nothing imported");
    assert!(!format!("{rows:?}").contains(PASSWORD));
}

/// A document that is not a list of connections is a row-0 error of the import, read to its
/// end (so that the file is still checked to be JSON), and nothing changes.
#[test]
fn a_document_that_is_not_a_list_is_an_import_error() {
    let db = Db::new();
    let c = db.open();
    let not_an_array = "expected an array of connections";
    let no_list = "expected an array of connections, or an object with a \"connections\" array";
    for (text, message) in [
        ("5", not_an_array),
        ("\"text\"", not_an_array),
        ("null", not_an_array),
        ("true", not_an_array),
        (r#"{"format": "broked-connections", "version": 1}"#, no_list),
        (
            r#"{"connections": {"conn_id": "a"}, "version": 1}"#,
            no_list,
        ),
        (r#"{"connections": "a"}"#, no_list),
        // As in a parsed document, the last `connections` is the list.
        (
            r#"{"connections": [{"conn_id": "a"}], "connections": 3}"#,
            no_list,
        ),
    ] {
        let err = read(&c, text, false).unwrap_err();
        let expected = vec![ImportRowError {
            row: 0,
            conn_id: None,
            message: message.into(),
        }];
        assert!(
            matches!(&err, Error::Import(rows) if *rows == expected),
            "{text}: {err}"
        );
        // The parsed document says the same.
        let parsed = c
            .import(serde_json::from_str(text).unwrap(), false)
            .unwrap_err();
        assert_eq!(parsed.to_string(), err.to_string(), "{text}");
    }
    let last = format!(r#"{{"connections": 3, "connections": [{}]}}"#, row("a"));
    assert_eq!(read(&c, &last, false).unwrap(), 1, "{last}");
    assert_eq!(ids(&c), ["a"]);
}

/// An importer dropped before `finish` (the CLI found the file is not JSON after reading its
/// rows) writes nothing and records nothing.
#[test]
fn an_unfinished_import_changes_nothing() {
    let db = Db::new();
    let c = db.open();
    let records = import_records(&c);
    let text = format!("{} trailing", json!([row("a"), row("b")]));
    let mut importer = c.importer(false);
    let mut json = serde_json::Deserializer::from_str(&text);
    importer.read(&mut json).unwrap();
    assert!(json.end().is_err(), "not JSON after the document");
    drop(importer);
    assert!(ids(&c).is_empty());
    assert_eq!(import_records(&c), records);
    // A syntax error inside a row is the source's error.
    let mut importer = c.importer(false);
    let broken = r#"[{"conn_id": "a", "type": "generic"}, {"conn_id": }]"#;
    assert!(
        importer
            .read(&mut serde_json::Deserializer::from_str(broken))
            .is_err()
    );
    drop(importer);
    assert!(ids(&c).is_empty());
}

/// An import large enough to be sealed on several threads: every row's secrets are its own
/// (a value sealed for another conn_id would not open: its conn_id is bound to it).
#[test]
fn a_large_import_seals_each_row_for_itself() {
    let db = Db::new();
    let c = db.open();
    let rows: Vec<Value> = (0..3_000)
        .rev()
        .map(|i| {
            json!({"conn_id": format!("big-{i:04}"), "type": "postgres", "host": "db",
                   "login": "u", "password": format!("{PASSWORD}-{i}"),
                   "extra": {"application_name": format!("app-{i}")}})
        })
        .collect();
    assert_eq!(c.import(Value::Array(rows), false).unwrap(), 3_000);
    let export = c.export(true).unwrap();
    let exported = export["connections"].as_array().unwrap();
    assert_eq!(exported.len(), 3_000);
    for (i, row) in exported.iter().enumerate() {
        assert_eq!(row["conn_id"], format!("big-{i:04}"));
        assert_eq!(row["password"], format!("{PASSWORD}-{i}"));
        assert_eq!(row["extra"]["application_name"], format!("app-{i}"));
    }
}
