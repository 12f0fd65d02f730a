//! `broked connections history|rollback|purge` and `--keep-versions` (issue 17).

use serde_json::Value;

use super::{PG_FLAGS, PW, PW_MARK, TestCli};

const OLD_MARK: &str = "HistCliOld-41a";

#[test]
fn history_rollback_purge_and_keep_versions() {
    let cli = TestCli::new();
    cli.add("pg", PG_FLAGS, Some(OLD_MARK));
    cli.run_stdin(
        &["connections", "update", "pg", "--password-stdin"],
        Some(PW),
    )
    .ok();
    cli.run(&["connections", "update", "pg", "--description", "third"])
        .ok();
    let list = cli
        .run(&["connections", "history", "pg", "-o", "json"])
        .ok()
        .json();
    let rows: Vec<(i64, String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["changed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    .join(","),
                v["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (3, "description".to_owned(), true),
            (2, "password".to_owned(), false),
            (1, String::new(), false)
        ]
    );
    let by = list[0]["updated_by"].as_str().unwrap();
    assert!(by.starts_with("cli:"), "{by}");
    // Text: a table with the writer and the changed names.
    let text = cli.run(&["connections", "history", "pg"]).ok().stdout;
    assert!(text.starts_with("VERSION"), "{text}");
    assert!(
        text.contains("3 (current)") && text.contains("password"),
        "{text}"
    );
    // One version, masked.
    let one = cli
        .run(&[
            "connections",
            "history",
            "pg",
            "--version",
            "1",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(one["connection"]["password"], "********");
    assert_eq!(one["connection"]["version"], 1);
    // Rollback to 1: the old password is back (re-encrypted), as version 4.
    let back = cli
        .run(&["connections", "rollback", "pg", "--to", "1", "-o", "json"])
        .ok()
        .json();
    assert_eq!(back["version"], 4);
    assert!(cli.get_uri("pg").contains(OLD_MARK));
    // Bad input: clear errors, nothing changed.
    cli.run(&["connections", "rollback", "pg", "--to", "0"])
        .fails(2);
    let err = cli
        .run(&["connections", "rollback", "pg", "--to", "99"])
        .fails(1);
    assert!(err.stderr.contains("no version 99"), "{}", err.stderr);
    cli.run(&["connections", "history", "nope"]).fails(1);
    // Purge is for deleted connections.
    let err = cli.run(&["connections", "purge", "pg"]).fails(1);
    assert!(err.stderr.contains("delete it first"), "{}", err.stderr);
    cli.run(&["connections", "delete", "pg"]).ok();
    let list = cli
        .run(&["connections", "history", "pg", "-o", "json"])
        .ok()
        .json();
    assert_eq!(list[0]["deleted"], true);
    let purged = cli
        .run(&["connections", "purge", "pg", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        purged["purged"], 5,
        "versions 1 to 4 and the deleted marker"
    );
    cli.run(&["connections", "history", "pg"]).fails(1);
    // --keep-versions bounds the history of the writes it makes.
    cli.add("kv", PG_FLAGS, Some(OLD_MARK));
    for d in ["a", "b", "c", "d"] {
        cli.run(&[
            "--keep-versions",
            "2",
            "connections",
            "update",
            "kv",
            "--description",
            d,
        ])
        .ok();
    }
    let list: Value = cli
        .run(&["connections", "history", "kv", "-o", "json"])
        .ok()
        .json();
    let numbers: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [5, 4, 3]);
    cli.assert_no_leak(&[PW_MARK, OLD_MARK]);
}
