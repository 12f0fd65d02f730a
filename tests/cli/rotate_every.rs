//! Issue 20: an invalid `extra.rotate_every` is refused on save by every CLI path — `add`,
//! `update` and `import` (the whole file, naming the row) — with exit 1, naming the key and
//! never the value, and nothing changes.

use super::*;

/// Not an interval; the mark must appear in no message.
const BAD: &str = r#"{"rotate_every": "soon-Rv9Q"}"#;
const BAD_MARK: &str = "Rv9Q";

#[track_caller]
fn names_the_key_not_the_value(r: &Run) {
    assert!(r.stderr.contains("extra.rotate_every"), "{}", r.stderr);
    assert!(
        !r.stderr.contains(BAD_MARK) && !r.stdout.contains(BAD_MARK),
        "{r:?}"
    );
}

#[test]
fn an_invalid_rotate_every_is_refused_by_add_update_and_import() {
    let cli = TestCli::new();
    let file = |name: &str, text: &str| {
        let p = cli.path(name);
        std::fs::write(&p, text).unwrap();
        format!("@{}", p.display())
    };
    let bad = file("bad.json", BAD);
    let good = file(
        "good.json",
        r#"{"rotate_every": "30d", "sslmode": "require"}"#,
    );
    let add = |id: &str, extra: &str| {
        let mut args = vec!["connections", "add", id, "--extra", extra];
        args.extend_from_slice(PG_FLAGS);
        cli.run(&args)
    };
    let list = || cli.run(&["connections", "list", "-o", "json"]).ok().json();

    names_the_key_not_the_value(&add("sched", &bad).fails(1));
    assert_eq!(list(), json!([]), "nothing stored");

    // A valid schedule is stored; an update to an invalid one changes nothing.
    add("sched", &good).ok();
    let get = || {
        cli.run(&["connections", "get", "sched", "-o", "json"])
            .ok()
            .json()
    };
    let before = get();
    let r = cli
        .run(&["connections", "update", "sched", "--extra", &bad])
        .fails(1);
    names_the_key_not_the_value(&r);
    assert_eq!(get(), before, "the update changed nothing");
    // The stored extra is the valid one still.
    let exported = cli
        .run(&["connections", "export", "--decrypted"])
        .ok()
        .json();
    let extra = exported["connections"][0]["extra"].to_string();
    assert!(extra.contains("30d"), "{extra}");

    // An import with one bad row among good ones imports nothing and names that row.
    let row = |id: &str, extra: Value| {
        json!({"conn_id": id, "type": "postgres", "host": "db.example.com", "login": "etl",
               "extra": extra})
    };
    let doc = json!({"format": "broked-connections", "version": 1, "connections": [
        row("imp-a", json!({"rotate_every": "12h"})),
        row("imp-b", serde_json::from_str::<Value>(BAD).unwrap()),
        row("imp-c", Value::Null),
    ]});
    let import = cli.path("import.json");
    std::fs::write(&import, doc.to_string()).unwrap();
    let r = cli
        .run(&["connections", "import", import.to_str().unwrap()])
        .fails(1);
    names_the_key_not_the_value(&r);
    assert!(r.stderr.contains("row 2"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("row 1") && !r.stderr.contains("row 3"),
        "{}",
        r.stderr
    );
    let ids: Vec<Value> = list()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conn_id"].clone())
        .collect();
    assert_eq!(ids, [json!("sched")], "nothing imported");
    cli.assert_no_leak(&[BAD_MARK]);
}
