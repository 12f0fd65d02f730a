use proptest::prelude::*;

use super::*;

fn key(byte: u8) -> Key {
    Key::from_slice(&[byte; KEY_LEN]).unwrap()
}

/// Format 1 associated data (no target): what the known answers below were computed for.
const AAD: Aad<'static> = Aad {
    conn_id: "warehouse",
    field: "password",
    target: None,
};

/// Format 2: bound to the connection's target too.
const AAD_V2: Aad<'static> = Aad {
    conn_id: "warehouse",
    field: "password",
    target: Some(r#"["postgres","db.example.com",5432,"etl"]"#),
};

#[test]
fn layout_of_a_sealed_blob() {
    let nonce = [9u8; NONCE_LEN];
    let blob = key(1)
        .seal_with_nonce(KeyId::new(0x0102_0304), AAD, nonce, b"hunter2")
        .unwrap();
    assert_eq!(blob.len(), SEALED_OVERHEAD + 7);
    assert_eq!(SEALED_OVERHEAD, 33);
    assert_eq!(blob[0], SEALED_VERSION_V1, "format 1 without a target");
    assert_eq!(&blob[1..5], &[1, 2, 3, 4]);
    assert_eq!(&blob[5..17], &nonce);
    assert_ne!(&blob[17..24], b"hunter2");
    assert_eq!(sealed_key_id(&blob).unwrap(), KeyId::new(0x0102_0304));
    let opened = key(1).open(AAD, &parse(&blob).unwrap()).unwrap();
    assert_eq!(&opened[..], b"hunter2");
}

#[test]
fn sealing_is_deterministic_for_a_given_nonce() {
    // Known answer: guards against an accidental change of the AAD construction or layout.
    let a = key(7)
        .seal_with_nonce(KeyId::new(1), AAD, [0; 12], b"pw")
        .unwrap();
    let b = key(7)
        .seal_with_nonce(KeyId::new(1), AAD, [0; 12], b"pw")
        .unwrap();
    assert_eq!(a, b);
    // Computed independently with Python's `cryptography` AESGCM over the documented AAD.
    let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "010000000100000000000000000000000011afbb7da1b6327cf32d270f8fcfb6357367"
    );
    let other_field = Aad {
        field: "extra",
        ..AAD
    };
    let c = key(7)
        .seal_with_nonce(KeyId::new(1), other_field, [0; 12], b"pw")
        .unwrap();
    assert_eq!(
        a[..19],
        c[..19],
        "same header, nonce and ciphertext (CTR mode)"
    );
    assert_ne!(a[19..], c[19..], "different tag");
}

#[test]
fn associated_data_is_unambiguous() {
    let header = [1, 0, 0, 0, 1];
    let a = associated_data(1, Aad::new("ab", "c"), &header);
    let b = associated_data(1, Aad::new("a", "bc"), &header);
    assert_ne!(a, b);
    let c = associated_data(1, Aad::new("ab", "c"), &[1, 0, 0, 0, 2]);
    assert_ne!(a, c);
    let d = associated_data(2, Aad::bound("ab", "c", "t"), &[2, 0, 0, 0, 1]);
    let e = associated_data(2, Aad::bound("ab", "ct", ""), &[2, 0, 0, 0, 1]);
    assert!(d.is_some());
    assert_ne!(d, e);
    assert_eq!(
        associated_data(2, Aad::new("ab", "c"), &[2, 0, 0, 0, 1]),
        None
    );
}

#[test]
fn aad_binds_conn_id_and_field() {
    let rng = SystemRandom::new();
    let k = key(3);
    let blob = k.seal(KeyId::new(1), AAD, b"s3cret", &rng).unwrap();
    let parsed = parse(&blob).unwrap();
    assert!(k.open(AAD, &parsed).is_ok());
    for wrong in [
        Aad::new("warehouse2", "password"),
        Aad::new("warehous", "password"),
        Aad::new("warehouse", "extra"),
        Aad::new("password", "warehouse"),
        Aad::new("", ""),
    ] {
        assert!(
            matches!(k.open(wrong, &parsed), Err(CryptoError::Decrypt)),
            "{wrong:?}"
        );
    }
}

#[test]
fn wrong_key_fails() {
    let rng = SystemRandom::new();
    let blob = key(3).seal(KeyId::new(1), AAD, b"s3cret", &rng).unwrap();
    assert!(matches!(
        key(4).open(AAD, &parse(&blob).unwrap()),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn every_single_bit_flip_fails_to_open() {
    let rng = SystemRandom::new();
    let k = key(5);
    let blob = k
        .seal(KeyId::new(1), AAD, b"correct horse battery", &rng)
        .unwrap();
    for bit in 0..blob.len() * 8 {
        let mut bad = blob.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        // Through the header check (version byte), or the tag check for everything else.
        let result = parse(&bad).and_then(|p| k.open(AAD, &p));
        assert!(result.is_err(), "bit {bit} flipped still opens");
    }
}

#[test]
fn short_or_foreign_blobs_are_bad_blobs() {
    assert!(matches!(
        sealed_key_id(&[]),
        Err(CryptoError::BadBlob("empty"))
    ));
    assert!(matches!(
        sealed_key_id(&[1]),
        Err(CryptoError::BadBlob("truncated"))
    ));
    // Format 2 (bound to the target) exists since issue 13; 3 does not.
    assert!(matches!(
        sealed_key_id(&[3; 64]),
        Err(CryptoError::BadBlob("unknown format version"))
    ));
    assert!(matches!(
        sealed_key_id(&[1; SEALED_OVERHEAD - 1]),
        Err(CryptoError::BadBlob("truncated"))
    ));
    // The empty plaintext seals to exactly the overhead.
    let blob = key(1)
        .seal_with_nonce(KeyId::new(2), AAD, [0; 12], b"")
        .unwrap();
    assert_eq!(blob.len(), SEALED_OVERHEAD);
    assert_eq!(key(1).open(AAD, &parse(&blob).unwrap()).unwrap().len(), 0);
}

#[test]
fn check_value_is_a_short_stable_hmac() {
    let a = key(1).check_value();
    assert_eq!(a.len(), 32);
    assert!(
        a.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(a, key(1).check_value());
    assert_ne!(a, key(2).check_value());
    // Known answer (computed independently with Python's hmac module):
    // HMAC-SHA256(key = 32 x 0x01, "broked-connections key check v1")[..16].
    assert_eq!(a, "71f5efe247d6a476f954cbc9ddda5477");
}

proptest! {
    #[test]
    fn seal_open_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        conn_id in "[a-z0-9][a-z0-9_-]{0,20}",
        field in prop_oneof![Just("password"), Just("extra")],
        id in any::<u32>(),
    ) {
        let rng = SystemRandom::new();
        let k = key(11);
        let aad = Aad::new(&conn_id, field);
        let blob = k.seal(KeyId::new(id), aad, &plaintext, &rng).unwrap();
        prop_assert_eq!(sealed_key_id(&blob).unwrap(), KeyId::new(id));
        let opened = k.open(aad, &parse(&blob).unwrap()).unwrap();
        prop_assert_eq!(&opened[..], &plaintext[..]);
    }

    #[test]
    fn garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = sealed_key_id(&garbage);
        if let Ok(parsed) = parse(&garbage) {
            prop_assert!(key(1).open(AAD, &parsed).is_err());
        }
    }
}

#[test]
fn format_2_binds_the_target_and_format_1_still_opens() {
    let rng = SystemRandom::new();
    let k = key(5);
    let blob = k.seal(KeyId::new(1), AAD_V2, b"s3cret", &rng).unwrap();
    assert_eq!(blob[0], SEALED_VERSION);
    assert_eq!(sealed_format(&blob).unwrap(), 2);
    assert_eq!(
        &k.open(AAD_V2, &parse(&blob).unwrap()).unwrap()[..],
        b"s3cret"
    );
    for wrong in [
        Aad::bound(
            "warehouse",
            "password",
            r#"["postgres","evil.example",5432,"etl"]"#,
        ),
        Aad::bound(
            "warehouse",
            "password",
            r#"["postgres","db.example.com",6543,"etl"]"#,
        ),
        Aad::bound("warehouse", "password", ""),
        AAD,
    ] {
        assert!(
            matches!(
                k.open(wrong, &parse(&blob).unwrap()),
                Err(CryptoError::Decrypt)
            ),
            "{wrong:?}"
        );
    }
    // A format 1 blob opens whatever target is asked for: the caller decides whether format 1
    // is still acceptable (broked-connections refuses it once a database is migrated).
    let old = k.seal(KeyId::new(1), AAD, b"legacy", &rng).unwrap();
    assert_eq!(sealed_format(&old).unwrap(), 1);
    assert_eq!(
        &k.open(AAD_V2, &parse(&old).unwrap()).unwrap()[..],
        b"legacy"
    );
}

#[test]
fn format_2_known_answer() {
    let a = key(7)
        .seal_with_nonce(KeyId::new(1), AAD_V2, [0; 12], b"pw")
        .unwrap();
    let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
    // Computed independently with Python's `cryptography` AESGCM over the documented AAD.
    assert_eq!(
        hex,
        "020000000100000000000000000000000011afe9fc8ad3fb2316d64a829db94231325d"
    );
}
