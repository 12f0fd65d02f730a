//! Integration tests of the public API: golden fixtures, processes racing for the key file,
//! property tests over arbitrary blobs.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use broked_crypto::{Aad, CryptoError, KeyId, Keyring, sealed_key_id};
use proptest::prelude::*;

const GOLDEN_KEY_FILE: &str = include_str!("../fixtures/golden-keyring.txt");
const GOLDEN_SEALED: &str = include_str!("../fixtures/golden-sealed.tsv");
const GOLDEN_SEALED_V2: &str = include_str!("../fixtures/golden-sealed-v2.tsv");

/// Copies the golden key file to a fresh directory with mode 0600 (git does not keep modes).
fn golden_keyring() -> (tempfile::TempDir, Keyring) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("golden.db.key");
    fs::write(&path, GOLDEN_KEY_FILE).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let ring = Keyring::open(&path).unwrap();
    (dir, ring)
}

struct Golden {
    key: KeyId,
    conn_id: String,
    field: String,
    blob: Vec<u8>,
}

fn golden_blobs() -> Vec<Golden> {
    GOLDEN_SEALED
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            Golden {
                key: KeyId::parse(f[0]).unwrap(),
                conn_id: f[1].to_string(),
                field: f[2].to_string(),
                blob: BASE64.decode(f[3]).unwrap(),
            }
        })
        .collect()
}

#[test]
fn golden_fixture_keeps_opening() {
    let (_dir, ring) = golden_keyring();
    assert_eq!(ring.active(), KeyId::new(2));
    let keys: Vec<_> = ring
        .keys()
        .iter()
        .map(|k| (k.id.to_string(), k.active))
        .collect();
    assert_eq!(keys, [("k1".to_string(), false), ("k2".to_string(), true)]);
    assert_eq!(
        ring.keys()[0].created_at,
        time::macros::datetime!(2026-11-26 10:59:48 UTC)
    );
    // Check values are stored in databases: they must never change either.
    assert_eq!(
        ring.check_value(KeyId::new(1)).unwrap(),
        "08ca776dc6df64cb7f012f7f21899c31"
    );
    assert_eq!(
        ring.check_value(KeyId::new(2)).unwrap(),
        "878f6670d25146e637f027c1862200df"
    );

    let expected: [&[u8]; 3] = [
        b"hunter2",
        br#"{"sslmode":"require"}"#,
        "pässwörd with spaces & ünïcode".as_bytes(),
    ];
    let blobs = golden_blobs();
    assert_eq!(blobs.len(), expected.len());
    for (golden, plaintext) in blobs.iter().zip(expected) {
        assert_eq!(sealed_key_id(&golden.blob).unwrap(), golden.key);
        let aad = Aad::new(&golden.conn_id, &golden.field);
        assert_eq!(&ring.open_sealed(aad, &golden.blob).unwrap()[..], plaintext);
    }
}

#[test]
fn golden_format_2_blobs_keep_opening_only_for_their_target() {
    let (_dir, ring) = golden_keyring();
    let expected: [&[u8]; 3] = [
        b"hunter2",
        br#"{"sslmode":"require"}"#,
        "pässwörd with spaces & ünïcode".as_bytes(),
    ];
    let rows: Vec<Vec<&str>> = GOLDEN_SEALED_V2
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), expected.len());
    for (f, plaintext) in rows.iter().zip(expected) {
        let blob = BASE64.decode(f[4]).unwrap();
        assert_eq!(sealed_key_id(&blob).unwrap(), KeyId::parse(f[0]).unwrap());
        assert_eq!(broked_crypto::sealed_format(&blob).unwrap(), 2);
        let aad = Aad::bound(f[1], f[2], f[3]);
        assert_eq!(&ring.open_sealed(aad, &blob).unwrap()[..], plaintext);
        // Moved to another host, or read without its target: refused.
        let moved = f[3].replace("example.com", "example.net");
        assert!(
            ring.open_sealed(Aad::bound(f[1], f[2], &moved), &blob)
                .is_err()
        );
        assert!(ring.open_sealed(Aad::new(f[1], f[2]), &blob).is_err());
    }
}

#[test]
fn golden_blobs_move_to_a_new_key() {
    let (_dir, mut ring) = golden_keyring();
    let k3 = ring.rotate().unwrap();
    for golden in golden_blobs() {
        let aad = Aad::new(&golden.conn_id, &golden.field);
        let moved = ring.reseal(aad, &golden.blob).unwrap();
        assert_eq!(sealed_key_id(&moved).unwrap(), k3);
        assert_eq!(
            ring.open_sealed(aad, &moved).unwrap(),
            ring.open_sealed(aad, &golden.blob).unwrap()
        );
    }
    // The rewritten file keeps the golden keys.
    let reread = Keyring::open(ring.path()).unwrap();
    assert_eq!(
        reread.check_value(KeyId::new(1)).unwrap(),
        "08ca776dc6df64cb7f012f7f21899c31"
    );
}

#[test]
fn golden_blobs_refuse_other_rows_and_fields() {
    let (_dir, ring) = golden_keyring();
    let blobs = golden_blobs();
    // The password of `warehouse` copied into its `extra`, or onto `api_prod-1`.
    let pw = &blobs[0].blob;
    for aad in [
        Aad::new("warehouse", "extra"),
        Aad::new("api_prod-1", "password"),
    ] {
        assert!(matches!(
            ring.open_sealed(aad, pw),
            Err(CryptoError::Decrypt)
        ));
    }
}

const RACE_PATH: &str = "BROKED_CRYPTO_RACE_PATH";
const RACE_START: &str = "BROKED_CRYPTO_RACE_START_MS";

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The parent spawns this test binary several times, running only this test; in a child (the
/// environment names the path) it races for the key file and reports what it got.
#[test]
fn two_processes_racing_to_create_end_with_one_key() {
    if let Ok(path) = std::env::var(RACE_PATH) {
        let start: u128 = std::env::var(RACE_START).unwrap().parse().unwrap();
        while unix_ms() < start {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (ring, created) = Keyring::open_or_create(Path::new(&path)).unwrap();
        let check = ring.check_value(ring.active()).unwrap();
        println!("RACE-RESULT {created} {} {check}", ring.keys().len());
        return;
    }

    let exe = std::env::current_exe().unwrap();
    for _round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("broked.db.key");
        let start = unix_ms() + 400;
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "two_processes_racing_to_create_end_with_one_key",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(RACE_PATH, &path)
                    .env(RACE_START, start.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // All four are running before any is waited for.
        let children: Vec<_> = children
            .into_iter()
            .map(|child| child.wait_with_output().unwrap())
            .collect();
        let mut created = 0;
        let mut checks = HashSet::new();
        for output in children {
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let line = stdout
                .lines()
                .find_map(|l| l.split_once("RACE-RESULT ").map(|(_, result)| result))
                .unwrap_or_else(|| panic!("no result from the child:\n{stdout}"));
            let fields: Vec<&str> = line.split(' ').collect();
            created += usize::from(fields[0] == "true");
            assert_eq!(fields[1], "1", "one key");
            checks.insert(fields[2].to_string());
        }
        assert_eq!(created, 1, "exactly one process created the key file");
        assert_eq!(checks.len(), 1, "all processes use the same key");
        let on_disk = Keyring::open(&path).unwrap();
        assert_eq!(on_disk.keys().len(), 1);
        assert!(checks.contains(&on_disk.check_value(KeyId::new(1)).unwrap()));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}

#[test]
fn errors_name_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = Keyring::path_for_db(&dir.path().join("broked.db"));
    let missing = Keyring::open(&path).unwrap_err().to_string();
    assert!(missing.contains(&format!("key file {} does not exist", path.display())));
    assert!(missing.contains("restore it from backup"));

    Keyring::open_or_create(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let perms = Keyring::open(&path).unwrap_err().to_string();
    assert!(perms.contains("mode 0644"), "{perms}");
    assert!(
        perms.contains(&format!("run `chmod 600 {}`", path.display())),
        "{perms}"
    );

    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, &text[..text.len() / 2]).unwrap();
    let truncated = Keyring::open(&path).unwrap_err().to_string();
    assert!(
        truncated.starts_with(&format!("key file {}, line ", path.display())),
        "{truncated}"
    );
    assert!(truncated.contains("restore it from backup"), "{truncated}");

    assert_eq!(
        CryptoError::UnknownKey(KeyId::new(3)).to_string(),
        "the secret was sealed with key k3, which is not in the key file; \
         restore a key file that holds k3 from backup"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn seal_open_round_trip_through_the_keyring(
        plaintext in proptest::collection::vec(any::<u8>(), 0..300),
        conn_id in "[a-z0-9][a-z0-9_-]{0,127}",
        extra in any::<bool>(),
    ) {
        let (_dir, ring) = golden_keyring();
        let aad = Aad::new(&conn_id, if extra { "extra" } else { "password" });
        let blob = ring.seal(aad, &plaintext).unwrap();
        prop_assert_eq!(sealed_key_id(&blob).unwrap(), ring.active());
        prop_assert_eq!(&ring.open_sealed(aad, &blob).unwrap()[..], &plaintext[..]);
    }

    #[test]
    fn no_prefix_or_garbage_panics(
        plaintext in proptest::collection::vec(any::<u8>(), 0..64),
        garbage in proptest::collection::vec(any::<u8>(), 0..96),
        header in prop_oneof![Just(vec![]), Just(vec![1u8]), Just(vec![1u8, 0, 0, 0, 1]), Just(vec![1u8, 0, 0, 0, 2])],
    ) {
        let (_dir, ring) = golden_keyring();
        let aad = Aad::new("c", "password");
        let blob = ring.seal(aad, &plaintext).unwrap();
        for cut in 0..blob.len() {
            prop_assert!(ring.open_sealed(aad, &blob[..cut]).is_err());
            let _ = sealed_key_id(&blob[..cut]);
        }
        let mut forged = header;
        forged.extend_from_slice(&garbage);
        let _ = sealed_key_id(&forged);
        prop_assert!(ring.open_sealed(aad, &forged).is_err());
        prop_assert!(ring.reseal(aad, &forged).is_err());
    }
}
