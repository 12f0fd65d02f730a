//! `broked audit list|verify|hash|prune` (issue 17): records with the CLI's actor, each
//! tampering found by `verify` by sequence number (exit 1), a value found by its HMAC read
//! from stdin, pruning that keeps the chain verifiable — and no value anywhere.

use super::{PG_FLAGS, PW, PW_MARK, TestCli};

/// Runs SQL on the database file behind the CLI's back, as an attacker with the file would
/// (Python's `sqlite3` module: no SQLite library in this test crate).
fn tamper(cli: &TestCli, sql: &str) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], timeout=10)\n\
             c.executescript(sys.argv[2])\n\
             c.commit()",
        ])
        .arg(cli.db())
        .arg(sql)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn findings(cli: &TestCli) -> (i32, Vec<(i64, String)>) {
    let run = cli.run(&["audit", "verify", "-o", "json"]);
    let v = run.json();
    let list = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["seq"].as_i64().unwrap(),
                f["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (run.code, list)
}

#[test]
fn audit_records_the_cli_user_and_verify_finds_each_tampering_by_seq() {
    let cli = TestCli::new();
    cli.add("pg", PG_FLAGS, Some(PW));
    for i in 0..6 {
        cli.run(&[
            "connections",
            "update",
            "pg",
            "--description",
            &format!("d{i}"),
        ])
        .ok();
    }
    cli.get_uri("pg");
    cli.run(&["connections", "export", "--decrypted"]).ok();
    cli.run(&["key", "check"]).ok();

    let list = cli.run(&["audit", "list", "-o", "json"]).ok().json();
    let records = list.as_array().unwrap();
    assert_eq!(records.len(), 10, "{list:#}");
    let user = records[0]["actor"].as_str().unwrap();
    assert!(user.starts_with("cli:") && user.len() > 4, "{user}");
    assert!(records.iter().all(|r| r["actor"] == user), "{list:#}");
    let actions: Vec<&str> = records
        .iter()
        .rev()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "create",
            "update",
            "update",
            "update",
            "update",
            "update",
            "update",
            "reveal",
            "export",
            "key_check"
        ]
    );
    assert_eq!(
        records[9]["fields"],
        serde_json::json!(["type", "host", "login", "password"])
    );
    assert_eq!(records[8]["fields"], serde_json::json!(["description"]));
    // Filters, and the text table.
    let updates = cli
        .run(&[
            "audit", "list", "--conn", "pg", "--action", "update", "--since", "1h", "-o", "json",
        ])
        .ok()
        .json();
    assert_eq!(updates.as_array().unwrap().len(), 6);
    let text = cli.run(&["audit", "list", "--limit", "3"]).ok().stdout;
    assert!(text.starts_with("SEQ "), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");

    // The password's HMAC, the value read from stdin: the create and the reveal name it.
    let hash = cli
        .run_stdin(&["audit", "hash", "-", "-o", "json"], Some(PW))
        .ok()
        .json();
    assert!(hash["hash"].as_str().unwrap().starts_with("hmac-sha256:"));
    let mentions: Vec<&str> = hash["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(mentions, ["reveal", "create"]);

    // A clean chain: exit 0.
    let ok = cli.run(&["audit", "verify"]).ok();
    assert!(
        ok.stdout.contains("ok: 10 records checked"),
        "{}",
        ok.stdout
    );
    assert_eq!(findings(&cli), (0, vec![]));

    // An edited record (its actor changed): exit 1, named by its seq.
    tamper(&cli, "UPDATE audit SET actor = 'cli:mallory' WHERE seq = 3");
    assert_eq!(findings(&cli), (1, vec![(3, "edited".to_owned())]));
    let text = cli.run(&["audit", "verify"]);
    assert_eq!(text.code, 1);
    assert!(text.stdout.contains("seq 3: edited"), "{}", text.stdout);
    tamper(
        &cli,
        &format!("UPDATE audit SET actor = '{user}' WHERE seq = 3"),
    );

    // A record deleted in the middle.
    tamper(&cli, "DELETE FROM audit WHERE seq = 5");
    assert_eq!(findings(&cli), (1, vec![(5, "deleted".to_owned())]));

    // The tail truncated: the last records gone, below the signed checkpoint of the last
    // CLI run (each run signs its head when it closes).
    tamper(&cli, "DELETE FROM audit WHERE seq >= 9");
    let (code, found) = findings(&cli);
    assert_eq!(code, 1);
    assert!(found.contains(&(5, "deleted".to_owned())), "{found:?}");
    assert!(found.contains(&(9, "truncated".to_owned())), "{found:?}");

    cli.assert_no_leak(&[PW_MARK]);
}

#[test]
fn audit_prune_keeps_the_chain_verifiable_and_no_value_is_in_the_files() {
    let cli = TestCli::new();
    cli.add("pg", PG_FLAGS, Some(PW));
    cli.run(&["connections", "update", "pg", "--description", "x"])
        .ok();
    cli.run(&["audit", "prune", "--older-than", "1d"]).ok();
    tamper(
        &cli,
        "UPDATE audit SET at = '2001-01-01T00:00:00Z' WHERE seq <= 2",
    );
    // The edit broke those two records; pruning them away leaves a verifiable chain.
    let pruned = cli
        .run(&["audit", "prune", "--older-than", "1d", "-o", "json"])
        .ok()
        .json();
    assert_eq!(pruned["cut_seq"], 2, "{pruned}");
    let (code, found) = findings(&cli);
    assert_eq!((code, found), (0, vec![]));
    let list = cli.run(&["audit", "list", "-o", "json"]).ok().json();
    let actions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["audit_prune", "audit_prune"]);
    // Bad input: a clear message naming the flag, exit 2 for usage, nothing changed.
    let bad = cli.run(&["audit", "prune", "--older-than", "soon"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("--older-than"), "{}", bad.stderr);
    let bad = cli.run(&["audit", "list", "--since", "yesterday"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("since"), "{}", bad.stderr);
    // No value in the database files or the checkpoint file.
    let found = broked_tests::files_containing(cli.dir.path(), PW_MARK);
    assert!(found.is_empty(), "{PW_MARK} in {found:?}");
    let checkpoints = std::fs::read_to_string(cli.path("broked.db.key.audit")).unwrap();
    assert!(checkpoints.contains(" cut 2 "), "{checkpoints}");
    cli.assert_no_leak(&[PW_MARK]);
}
