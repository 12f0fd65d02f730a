//! The bodies of the fuzz targets, shared by `cargo fuzz` (fuzz_targets/) and by the corpus
//! replay in `cargo test` (tests/corpus.rs), so every input that ever crashed stays a test.
//!
//! Each target feeds untrusted bytes to one parser and checks more than "no panic" where a
//! property exists: a parsed URI builds back to a URI that parses to the same connection; a
//! keyring file that opens can seal and open a value; an accepted pipeline survives
//! `to_value` / `from_value`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use broked_core::{ConnId, Connection};
use broked_crypto::{Aad, Keyring, sealed_key_id};

/// `broked_core::Connection::from_uri`, and `from_uri(to_uri(c)) == c` for what it accepts.
pub fn uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let id = ConnId::new("fuzz").unwrap();
    let Ok(conn) = Connection::from_uri(id.clone(), text) else {
        return;
    };
    let built = conn.to_uri();
    let again = Connection::from_uri(id, built.expose())
        .unwrap_or_else(|e| panic!("from_uri accepted {text:?} but rejects its own to_uri(): {e}"));
    assert!(
        again == conn,
        "round trip changed the connection: {text:?} -> {:?} -> {:?}",
        conn,
        again
    );
}

/// The golden keyring of broked-crypto's fixtures (public test keys), opened once.
fn golden() -> &'static Keyring {
    static KEYRING: OnceLock<(tempfile::TempDir, Keyring)> = OnceLock::new();
    &KEYRING
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("golden.db.key");
            write_0600(
                &path,
                include_bytes!("../../crates/broked-crypto/tests/fixtures/golden-keyring.txt"),
            );
            let keyring = Keyring::open(&path).expect("golden keyring opens");
            (dir, keyring)
        })
        .1
}

fn write_0600(path: &std::path::Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// `broked_crypto::sealed_key_id` and `Keyring::open_sealed` on arbitrary blobs.
pub fn sealed_blob(data: &[u8]) {
    let id = sealed_key_id(data);
    let keyring = golden();
    for (conn_id, field) in [
        ("warehouse", "password"),
        ("warehouse", "extra"),
        ("x", "password"),
    ] {
        if let Ok(plain) = keyring.open_sealed(Aad::new(conn_id, field), data) {
            // Only a real sealed blob opens; its key id must be readable too.
            assert!(id.is_ok(), "opened a blob whose key id does not parse");
            // Resealing gives a different blob that opens to the same plaintext.
            let again = keyring.seal(Aad::new(conn_id, field), &plain).unwrap();
            assert_eq!(
                *keyring
                    .open_sealed(Aad::new(conn_id, field), &again)
                    .unwrap(),
                *plain
            );
        }
    }
}

/// `Keyring::open` on arbitrary key file contents; a keyring that opens must work.
pub fn keyring_file(data: &[u8]) {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path: PathBuf = dir.path().join("fuzz.db.key");
    write_0600(&path, data);
    if let Ok(keyring) = Keyring::open(&path) {
        let aad = Aad::new("fuzz", "password");
        let blob = keyring
            .seal(aad, b"value")
            .expect("an opened keyring seals");
        assert_eq!(&**keyring.open_sealed(aad, &blob).unwrap(), b"value");
        assert!(sealed_key_id(&blob).is_ok());
    }
}

/// `broked_connections::PipelineDef::from_json`.
pub fn pipeline_def(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(def) = broked_connections::PipelineDef::from_json(text) {
        // What it accepted it writes back to a value that reads the same.
        let again = broked_connections::PipelineDef::from_value(def.to_value())
            .unwrap_or_else(|e| panic!("to_value() of an accepted {text:?} is rejected: {e}"));
        assert_eq!(again, def, "round trip changed the pipeline: {text:?}");
        let _ = def.references();
    }
}
