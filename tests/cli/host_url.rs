//! Issue 18: `--host` as a URL, and URL hosts in import files — split by the same parser as
//! the API; the CLI prints what was stored.

use super::*;

fn endpoint(v: &Value) -> (Value, Value, Value) {
    (v["host"].clone(), v["port"].clone(), v["schema"].clone())
}

#[test]
fn host_flags_and_import_files_take_a_url() {
    let cli = TestCli::new();
    let c = cli.add(
        "analytics",
        &argv("--type postgres --host postgres://db.internal:5433/analytics --login etl"),
        Some(PW),
    );
    assert_eq!(
        endpoint(&c),
        (json!("db.internal"), json!(5433), json!("analytics"))
    );
    let c = cli.add(
        "minio",
        &argv("--type s3 --host http://127.0.0.1:9000 --port 9000 --login minio-access"),
        Some(PW),
    );
    assert_eq!(
        endpoint(&c),
        (json!("http://127.0.0.1"), json!(9000), Value::Null)
    );
    let c = cli.add(
        "cache",
        &argv("--type generic --host tcp://[::1]:6379"),
        None,
    );
    assert_eq!(endpoint(&c), (json!("::1"), json!(6379), Value::Null));

    // A conflict names both flags' fields; a URL with a login is refused without repeating it.
    let r = cli
        .run(&argv(
            "connections add clash --type s3 --host http://127.0.0.1:9000 --port 9001",
        ))
        .fails(1);
    assert!(
        r.stderr.contains("host") && r.stderr.contains("port") && r.stderr.contains("9001"),
        "{}",
        r.stderr
    );
    let r = cli
        .run(&argv(
            "connections add who --type http --host http://good@evil.example",
        ))
        .fails(1);
    assert!(r.stderr.contains("login and password"), "{}", r.stderr);
    assert!(!r.stderr.contains("evil"), "{}", r.stderr);
    let r = cli
        .run(&argv(
            "connections add wrong --type postgres --host mysql://db/x",
        ))
        .fails(1);
    assert!(r.stderr.contains("postgres://"), "{}", r.stderr);

    // update --host with a URL: its port and database replace the stored ones (the password
    // is for another target now, so it is given again).
    let c = cli
        .run_stdin(
            &argv(
                "connections update analytics --host postgresql://db2.internal:6543/reports \
                 --password-stdin -o json",
            ),
            Some(PW),
        )
        .ok()
        .json();
    assert_eq!(
        endpoint(&c),
        (json!("db2.internal"), json!(6543), json!("reports"))
    );
    // The same endpoint as a URL keeps the password: no change of target.
    let c = cli
        .run(&argv(
            "connections update analytics --host postgres://db2.internal:6543 -o json",
        ))
        .ok()
        .json();
    assert_eq!(
        endpoint(&c),
        (json!("db2.internal"), json!(6543), json!("reports"))
    );
    assert!(cli.get_uri("analytics").contains("CliS3cret"));
    // Another host while the password is kept: refused.
    let r = cli
        .run(&argv(
            "connections update analytics --host postgres://db3.internal:6543",
        ))
        .fails(1);
    assert!(r.stderr.contains("password"), "{}", r.stderr);

    // Import files (JSON and YAML) with URL hosts.
    let json_file = cli.path("urls.json");
    std::fs::write(
        &json_file,
        json!([{"conn_id": "api", "type": "http", "host": "https://api.example.com:8443/v1"}])
            .to_string(),
    )
    .unwrap();
    cli.run(&["connections", "import", json_file.to_str().unwrap()])
        .ok();
    let yaml_file = cli.path("urls.yaml");
    std::fs::write(
        &yaml_file,
        "- conn_id: files\n  type: sftp\n  host: sftp://files.example.com:2222//upload/in\n",
    )
    .unwrap();
    cli.run(&["connections", "import", yaml_file.to_str().unwrap()])
        .ok();
    let get = |id: &str| {
        cli.run(&["connections", "get", id, "-o", "json"])
            .ok()
            .json()
    };
    assert_eq!(
        endpoint(&get("api")),
        (json!("https://api.example.com"), json!(8443), json!("v1"))
    );
    assert_eq!(
        endpoint(&get("files")),
        (json!("files.example.com"), json!(2222), json!("/upload/in"))
    );
    // A bad URL in a file: every row is refused with its row number, nothing imported.
    let bad = cli.path("bad.json");
    std::fs::write(
        &bad,
        json!([
            {"conn_id": "ok-one", "type": "http", "host": "http://ok.example"},
            {"conn_id": "bad-one", "type": "http", "host": "http://x:0"}
        ])
        .to_string(),
    )
    .unwrap();
    let r = cli
        .run(&["connections", "import", bad.to_str().unwrap()])
        .fails(1);
    assert!(
        r.stderr.contains("row 2") && r.stderr.contains("port"),
        "{}",
        r.stderr
    );
    cli.run(&["connections", "get", "ok-one"]).fails(1);
    cli.assert_no_leak(&[PW_MARK]);
}
