use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use base64::Engine as _;

use super::*;
use crate::sealed_key_id;

fn aad(conn_id: &str) -> Aad<'_> {
    Aad::new(conn_id, "password")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn new_ring() -> (tempfile::TempDir, Keyring) {
    let dir = tempfile::tempdir().unwrap();
    let (ring, created) = Keyring::open_or_create(&dir.path().join("broked.db.key")).unwrap();
    assert!(created);
    (dir, ring)
}

#[test]
fn path_for_db_appends_key_to_the_file_name() {
    assert_eq!(
        Keyring::path_for_db(Path::new("broked.db")),
        PathBuf::from("broked.db.key")
    );
    assert_eq!(
        Keyring::path_for_db(Path::new("/var/lib/broked/data.sqlite")),
        PathBuf::from("/var/lib/broked/data.sqlite.key")
    );
}

#[test]
fn keyring_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Keyring>();
}

#[test]
fn open_or_create_creates_a_0600_file_with_one_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db.key");
    let (ring, created) = Keyring::open_or_create(&path).unwrap();
    assert!(created);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(ring.active(), KeyId::new(1));
    assert_eq!(ring.keys().len(), 1);
    assert!(ring.keys()[0].active);
    assert_eq!(ring.path(), path);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("BACK IT UP"), "{text}");
    assert!(text.contains("`broked.db`"), "{text}");

    let (again, created) = Keyring::open_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(
        again.check_value(KeyId::new(1)),
        ring.check_value(KeyId::new(1))
    );
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn missing_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db.key");
    let err = Keyring::open(&path).unwrap_err();
    assert!(matches!(&err, CryptoError::Missing { path: p } if *p == path));
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("restore it from backup"), "{message}");
    // `open` never creates.
    assert!(!path.exists());
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let (_dir, ring) = new_ring();
    let path = ring.path().to_path_buf();
    for bad in [0o644, 0o640, 0o604, 0o660, 0o602] {
        fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
        let err = Keyring::open(&path).unwrap_err();
        assert!(matches!(err, CryptoError::Permissions { mode, .. } if mode == bad));
        let message = err.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(
        Keyring::open(&path).is_ok(),
        "read-only for the owner is fine"
    );
}

#[test]
fn a_symlink_is_refused() {
    let (dir, ring) = new_ring();
    let link = dir.path().join("other.db.key");
    std::os::unix::fs::symlink(ring.path(), &link).unwrap();
    let err = Keyring::open(&link).unwrap_err();
    assert!(
        matches!(&err, CryptoError::Symlink { path } if *path == link),
        "{err}"
    );
    assert!(matches!(
        Keyring::open_or_create(&link),
        Err(CryptoError::Symlink { .. })
    ));
    // A dangling link too: never create "through" it.
    let dangling = dir.path().join("dangling.db.key");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(matches!(
        Keyring::open_or_create(&dangling),
        Err(CryptoError::Symlink { .. })
    ));
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn a_directory_or_malformed_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db.key");
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(matches!(Keyring::open(&path), Err(CryptoError::Io { .. })));

    let path = dir.path().join("garbled.db.key");
    fs::write(
        &path,
        "broked-keyring v1\nactive k1\nkey k1 2026-01-01T00:00:00Z AAAA\nend\n",
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let err = Keyring::open(&path).unwrap_err();
    assert!(
        matches!(err, CryptoError::Malformed { line: 3, .. }),
        "{err}"
    );
    // A malformed file is never replaced by open_or_create.
    assert!(matches!(
        Keyring::open_or_create(&path),
        Err(CryptoError::Malformed { .. })
    ));
}

#[test]
fn seal_and_open_are_bound_to_conn_id_and_field() {
    let (_dir, ring) = new_ring();
    let blob = ring.seal(aad("warehouse"), b"hunter2").unwrap();
    assert_eq!(
        &ring.open_sealed(aad("warehouse"), &blob).unwrap()[..],
        b"hunter2"
    );
    assert!(matches!(
        ring.open_sealed(aad("warehouse-2"), &blob),
        Err(CryptoError::Decrypt)
    ));
    assert!(matches!(
        ring.open_sealed(Aad::new("warehouse", "extra"), &blob),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn a_blob_from_another_keyring_fails_clearly() {
    let (_d1, one) = new_ring();
    let (_d2, two) = new_ring();
    let blob = one.seal(aad("a"), b"x").unwrap();
    assert!(matches!(
        two.open_sealed(aad("a"), &blob),
        Err(CryptoError::Decrypt)
    ));
    let check = one.check_value(KeyId::new(1)).unwrap();
    let err = two.verify_check(KeyId::new(1), &check).unwrap_err();
    assert!(matches!(&err, CryptoError::WrongKey { path, .. } if path == two.path()));
    assert!(err.to_string().contains(&two.path().display().to_string()));
    assert!(one.verify_check(KeyId::new(1), &check).is_ok());
    assert!(matches!(
        one.verify_check(KeyId::new(9), &check),
        Err(CryptoError::UnknownKey(id)) if id == KeyId::new(9)
    ));
}

#[test]
fn rotate_keeps_old_blobs_readable_and_reseal_moves_them() {
    let (_dir, mut ring) = new_ring();
    let old = ring.seal(aad("c"), b"pw").unwrap();
    let check1 = ring.check_value(KeyId::new(1)).unwrap();
    let k2 = ring.rotate().unwrap();
    assert_eq!(k2, KeyId::new(2));
    assert_eq!(ring.active(), k2);
    assert_eq!(mode(ring.path()), 0o600);
    assert_eq!(ring.check_value(KeyId::new(1)).unwrap(), check1);
    assert_ne!(ring.check_value(k2).unwrap(), check1);
    let infos = ring.keys();
    assert_eq!(
        infos
            .iter()
            .map(|k| (k.id.get(), k.active))
            .collect::<Vec<_>>(),
        [(1, false), (2, true)]
    );
    assert!(infos[0].created_at <= infos[1].created_at);

    assert_eq!(&ring.open_sealed(aad("c"), &old).unwrap()[..], b"pw");
    let new = ring.reseal(aad("c"), &old).unwrap();
    assert_eq!(sealed_key_id(&new).unwrap(), k2);
    assert_eq!(&ring.open_sealed(aad("c"), &new).unwrap()[..], b"pw");
    assert!(ring.reseal(aad("other"), &old).is_err());
    assert_eq!(
        ring.seal(aad("c"), b"z")
            .map(|b| sealed_key_id(&b).unwrap())
            .unwrap(),
        k2
    );

    // Another process sees the rotation.
    let fresh = Keyring::open(ring.path()).unwrap();
    assert_eq!(fresh.active(), k2);
    assert_eq!(fresh.check_value(k2), ring.check_value(k2));
}

#[test]
fn remove_refuses_the_active_key_and_prunes_others() {
    let (_dir, mut ring) = new_ring();
    let old = ring.seal(aad("c"), b"pw").unwrap();
    let err = ring.remove(&[KeyId::new(1)]).unwrap_err();
    assert!(matches!(err, CryptoError::RemoveActive(id) if id == KeyId::new(1)));
    assert!(err.to_string().contains("rotate first"));
    let k2 = ring.rotate().unwrap();
    assert_eq!(ring.unused_keys([KeyId::new(1)]), Vec::<KeyId>::new());
    assert_eq!(ring.unused_keys([k2]), vec![KeyId::new(1)]);
    assert!(matches!(
        ring.remove(&[KeyId::new(1), k2]),
        Err(CryptoError::RemoveActive(_))
    ));
    assert!(ring.contains(KeyId::new(1)), "nothing removed on refusal");
    ring.remove(&[KeyId::new(1), KeyId::new(77)]).unwrap();
    assert!(!ring.contains(KeyId::new(1)));
    assert!(matches!(
        ring.open_sealed(aad("c"), &old),
        Err(CryptoError::UnknownKey(id)) if id == KeyId::new(1)
    ));
    let reread = Keyring::open(ring.path()).unwrap();
    assert_eq!(reread.keys().len(), 1);
    // Ids are never reused: the next key is k3.
    assert_eq!(ring.rotate().unwrap(), KeyId::new(3));
}

#[test]
fn a_stale_keyring_rotating_keeps_the_other_rotation() {
    let (_dir, mut a) = new_ring();
    let mut b = Keyring::open(a.path()).unwrap();
    let k2 = a.rotate().unwrap();
    let sealed_by_a = a.seal(aad("c"), b"pw").unwrap();
    // `b` has not seen k2; its rotation re-reads the file under the lock.
    let k3 = b.rotate().unwrap();
    assert_eq!((k2.get(), k3.get()), (2, 3));
    assert!(b.contains(k2));
    assert_eq!(&b.open_sealed(aad("c"), &sealed_by_a).unwrap()[..], b"pw");
    a.reload().unwrap();
    assert_eq!(a.active(), k3);
    assert_eq!(a.check_value(k3), b.check_value(k3));
}

#[test]
fn concurrent_rotations_lose_no_key() {
    let (_dir, ring) = new_ring();
    let path = ring.path().to_path_buf();
    let threads = 4;
    let per_thread = 5;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let path = path.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut ring = Keyring::open(&path).unwrap();
                barrier.wait();
                (0..per_thread)
                    .map(|_| ring.rotate().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<KeyId> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        threads * per_thread,
        "every rotation got its own id"
    );
    let last = Keyring::open(&path).unwrap();
    assert_eq!(last.keys().len(), 1 + threads * per_thread);
    assert_eq!(last.active(), KeyId::new((1 + threads * per_thread) as u32));
}

#[test]
fn threads_racing_to_create_end_with_one_key() {
    for _round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broked.db.key");
        let threads = 6;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let path = path.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let (ring, created) = Keyring::open_or_create(&path).unwrap();
                    (
                        created,
                        ring.keys().len(),
                        ring.check_value(ring.active()).unwrap(),
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.0).count(),
            1,
            "exactly one creator"
        );
        assert!(results.iter().all(|r| r.1 == 1));
        let checks: HashSet<_> = results.iter().map(|r| r.2.clone()).collect();
        assert_eq!(checks.len(), 1, "everyone uses the same key");
        let on_disk = Keyring::open(&path).unwrap();
        assert_eq!(
            on_disk.check_value(KeyId::new(1)).as_ref(),
            checks.iter().next()
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}

#[test]
fn many_seals_from_several_threads_never_repeat_a_nonce() {
    let (_dir, ring) = new_ring();
    let ring = Arc::new(ring);
    let threads = 4;
    let per_thread = 25_000;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|_| {
                        let blob = ring.seal(aad("c"), b"").unwrap();
                        <[u8; 12]>::try_from(&blob[5..17]).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut nonces = HashSet::new();
    for handle in handles {
        for nonce in handle.join().unwrap() {
            assert!(nonces.insert(nonce), "repeated nonce");
        }
    }
    assert_eq!(nonces.len(), threads * per_thread);
}

#[test]
fn debug_shows_no_key_bytes() {
    let (_dir, ring) = new_ring();
    let debug = format!("{ring:?} {:?}", ring.keys());
    let material = ring.keys[&KeyId::new(1)].key.material();
    let b64 = base64::engine::general_purpose::STANDARD.encode(material);
    let hex: String = material.iter().map(|b| format!("{b:02x}")).collect();
    let bytes = format!("{:?}", &material[..4]);
    for secret in [&b64[..16], &hex[..16], &bytes] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains("Keyring"), "{debug}");
    assert!(debug.contains("broked.db.key"), "{debug}");
}

#[test]
fn reload_after_the_file_changed() {
    let (_dir, mut ring) = new_ring();
    let mut other = Keyring::open(ring.path()).unwrap();
    let k2 = other.rotate().unwrap();
    assert!(!ring.contains(k2));
    ring.reload().unwrap();
    assert!(ring.contains(k2));
    assert_eq!(ring.active(), k2);
    // A failed reload leaves the keyring as it was.
    fs::set_permissions(ring.path(), fs::Permissions::from_mode(0o644)).unwrap();
    assert!(ring.reload().is_err());
    assert_eq!(ring.active(), k2);
    assert!(ring.seal(aad("c"), b"still works").is_ok());
}

#[test]
fn nonces_read_at_once_are_each_used_once_and_seals_with_them_open() {
    let (_dir, ring) = new_ring();
    let mut nonces = ring.nonces(3).unwrap();
    assert_eq!(nonces.left(), 3);
    assert_eq!(format!("{nonces:?}"), "Nonces { left: 3 }");
    let bytes = nonces.bytes.clone();
    let blobs: Vec<_> = (0..5)
        .map(|i| {
            ring.seal_with(&mut nonces, aad("c"), format!("pw-{i}").as_bytes())
                .unwrap()
        })
        .collect();
    assert_eq!(nonces.left(), 0);
    // The first three took the batch's nonces in turn; the others fresh ones of their own.
    for (i, blob) in blobs.iter().enumerate() {
        let nonce = &blob[5..17];
        let from_batch = bytes.chunks(12).position(|n| n == nonce);
        assert_eq!(from_batch, (i < 3).then_some(i), "seal {i}");
        assert_eq!(
            &ring.open_sealed(aad("c"), blob).unwrap()[..],
            format!("pw-{i}").as_bytes()
        );
        assert_eq!(sealed_key_id(blob).unwrap(), ring.active());
    }
    // A batch of 100,000 never repeats a nonce, nor does it meet the ones of single seals.
    let mut seen = HashSet::new();
    let mut nonces = ring.nonces(100_000).unwrap();
    for _ in 0..100_000 {
        let blob = ring.seal_with(&mut nonces, aad("c"), b"").unwrap();
        assert!(seen.insert(<[u8; 12]>::try_from(&blob[5..17]).unwrap()));
    }
    for blob in &blobs {
        assert!(seen.insert(<[u8; 12]>::try_from(&blob[5..17]).unwrap()));
    }
    assert_eq!(ring.nonces(0).unwrap().left(), 0);
}
