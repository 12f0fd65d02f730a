//! The OpenAPI document says what the server accepts (issue 23): a client generated from the
//! served document drives the real server, and the document's request schemas, path rules and
//! links hang together.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use broked_tests::Server;
use serde_json::Value;

/// A password the generated client sends and must never get back.
const PASSWORD: &str = "Gen-Client-Pw-8c1e!";

/// openapi-python-client (pinned by scripts/services/openapi-client.sh) generates a Python
/// client from `/api/openapi.json`; tests/e2e/openapi_client.py creates, reads, lists,
/// replaces, changes, tests, and deletes connections with its generated functions and models.
#[test]
fn a_client_generated_from_the_document_drives_the_server() {
    let Some(venv) = broked_testenv::service("OPENAPI_CLIENT", &["GENERATOR", "PYTHON"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let doc = server.get("/api/openapi.json");
    assert_eq!(doc.status, 200);
    let doc_path = dir.path().join("openapi.json");
    std::fs::write(&doc_path, &doc.text).unwrap();
    let client = dir.path().join("client");
    let generated = Command::new(venv.get("GENERATOR"))
        .args(["generate", "--meta", "none", "--overwrite", "--path"])
        .arg(&doc_path)
        .arg("--output-path")
        .arg(client.join("broked_client"))
        .output()
        .expect("run openapi-python-client");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        generated.status.success(),
        "openapi-python-client failed:\n{}{}",
        text(&generated.stdout),
        text(&generated.stderr)
    );
    // A generic connection's test is a TCP connect: something has to listen.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = listener.local_addr().unwrap().port().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/openapi_client.py");
    let run = Command::new(venv.get("PYTHON"))
        .arg(&script)
        .arg(&server.base)
        .arg(&client)
        .arg(&tcp_port)
        .arg(PASSWORD)
        .output()
        .expect("run the generated client");
    assert!(
        run.status.success(),
        "the generated client failed:\n{}{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    assert!(
        text(&run.stdout).contains("as documented"),
        "{}",
        text(&run.stdout)
    );
    assert!(!server.log_text().contains(PASSWORD));
    drop(listener);
}

/// Each connection body refers to a schema the document defines, path ids carry their rule,
/// and a create links its conn_id to every operation that takes one (schemathesis' stateful
/// phase follows these).
#[test]
fn the_document_refers_to_what_it_defines_and_links_a_create() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let doc = server.get("/api/openapi.json").json;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut operation_ids = Vec::new();
    let mut bodies = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op["operationId"].as_str() {
                operation_ids.push(id.to_owned());
            }
            if let Some(Value::String(r)) =
                op.pointer("/requestBody/content/application~1json/schema/$ref")
            {
                let name = r.rsplit('/').next().unwrap();
                assert!(schemas.contains_key(name), "{method} {path}: {r}");
                bodies.push(format!("{method} {path} {name}"));
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" && p["name"] == "conn_id" {
                    assert_eq!(
                        p["schema"]["pattern"], "^[a-z0-9][a-z0-9_-]{0,127}$",
                        "{method} {path}"
                    );
                }
            }
        }
    }
    for want in [
        "post /api/connections ConnectionCreate",
        "post /api/connections/test ConnectionTest",
        "put /api/connections/{conn_id} ConnectionReplace",
        "patch /api/connections/{conn_id} ConnectionPatch",
        "put /api/pipelines/{pipeline_id} PipelineIn",
    ] {
        assert!(bodies.iter().any(|b| b == want), "{want}: {bodies:?}");
    }
    // Every create schema is one per type, chosen by `type`.
    let create = &schemas["ConnectionCreate"];
    assert_eq!(create["discriminator"]["propertyName"], "type");
    assert_eq!(create["oneOf"].as_array().unwrap().len(), 7);
    let links = doc["paths"]["/api/connections"]["post"]["responses"]["201"]["links"]
        .as_object()
        .expect("links on a create");
    for want in [
        "get_connection",
        "put_connection",
        "patch_connection",
        "delete_connection",
        "test_saved",
        "used_by",
    ] {
        assert!(
            links.values().any(|l| l["operationId"] == want),
            "{want}: {links:?}"
        );
    }
    for link in links.values() {
        let id = link["operationId"].as_str().unwrap();
        assert!(operation_ids.iter().any(|o| o == id), "{id}");
        assert_eq!(link["parameters"]["conn_id"], "$response.body#/conn_id");
    }
}
