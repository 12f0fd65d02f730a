//! Known answers computed independently (Python's `hmac`/`hashlib`, HKDF by RFC 5869 by hand):
//! the formats are a promise — an old chain must keep verifying.

use super::*;

fn keys() -> AuditKeys {
    let secret: Vec<u8> = (0u8..32).collect();
    AuditKeys::from_secret(&secret).unwrap()
}

fn first() -> AuditFields<'static> {
    AuditFields {
        seq: 1,
        at: "2025-01-02T03:04:05Z",
        actor: "cli:alice",
        action: "create",
        conn_id: Some("prod-postgres"),
        fields: "type,host,password",
        outcome: "ok",
        request_id: None,
        value_hashes: "",
        detail: "",
    }
}

fn second() -> AuditFields<'static> {
    AuditFields {
        seq: 2,
        at: "2025-01-02T03:04:06Z",
        actor: "ci",
        action: "reveal",
        conn_id: Some("prod-postgres"),
        fields: "password",
        outcome: "ok",
        request_id: Some("req-1"),
        value_hashes: "hmac-sha256:00",
        detail: "what=uri",
    }
}

const M1: &str = "a8b32fb2c01fd9e4c917ff53351bab71aa391d3ab38798f53080413a801ae633";
const M2: &str = "2910cf8ea904fa38972b214879e4481857daa2b53695eaa378774fd17d0bf448";

#[test]
fn golden_chain() {
    let k = keys();
    assert_eq!(k.record_mac("", &first()), M1);
    assert_eq!(k.record_mac(M1, &second()), M2);
    assert!(k.verify_record(M1, &second(), M2));
    assert!(!k.verify_record("", &second(), M2), "another predecessor");
}

#[test]
fn golden_value_hash_and_checkpoint() {
    let k = keys();
    assert_eq!(
        k.value_hash(b"secret123"),
        "hmac-sha256:a4ba8e4d0325e12025a92278cc17980655848ca04c0171745dc0dea4c14c845a"
    );
    let sig = k.checkpoint_mac(2, M2, "2025-01-02T03:04:07Z");
    assert_eq!(
        sig,
        "d6ebaf10953a283be9a1a8df9ed86be0ca636fa6a4006ba764496df47e54bbe3"
    );
    assert!(k.verify_checkpoint(2, M2, "2025-01-02T03:04:07Z", &sig));
    assert!(!k.verify_checkpoint(3, M2, "2025-01-02T03:04:07Z", &sig));
}

#[test]
fn every_field_is_covered_and_unambiguous() {
    let k = keys();
    let base = second();
    let variants = [
        AuditFields { seq: 3, ..base },
        AuditFields {
            at: "2025-01-02T03:04:07Z",
            ..base
        },
        AuditFields {
            actor: "cj",
            ..base
        },
        AuditFields {
            action: "revealx",
            ..base
        },
        AuditFields {
            conn_id: None,
            ..base
        },
        AuditFields {
            conn_id: Some(""),
            ..base
        },
        AuditFields { fields: "", ..base },
        AuditFields {
            outcome: "denied",
            ..base
        },
        AuditFields {
            request_id: None,
            ..base
        },
        AuditFields {
            value_hashes: "",
            ..base
        },
        AuditFields { detail: "", ..base },
        // A byte moved from one field to the next encodes differently.
        AuditFields {
            actor: "c",
            action: "ireveal",
            ..base
        },
    ];
    let mut macs = std::collections::HashSet::new();
    macs.insert(k.record_mac(M1, &base));
    for v in variants {
        assert!(macs.insert(k.record_mac(M1, &v)), "{v:?}");
    }
}

#[test]
fn keys_differ_and_the_secret_round_trips_through_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let (ring, _) = Keyring::open_or_create(&dir.path().join("a.db.key")).unwrap();
    let (sealed, k) = ring.new_audit_secret().unwrap();
    let again = ring.open_audit_secret(&sealed).unwrap();
    assert_eq!(k.value_hash(b"x"), again.value_hash(b"x"));
    assert_ne!(k.value_hash(b"x"), keys().value_hash(b"x"));
    // Sealed for the audit secret only: as a connection's password it does not open.
    assert!(
        ring.open_sealed(Aad::new("audit", "secret"), &sealed)
            .is_err()
    );
    assert!(AuditKeys::from_secret(&[0u8; 31]).is_none());
    assert_eq!(format!("{k:?}"), "AuditKeys(********)");
    // Two secrets differ.
    let (_, other) = ring.new_audit_secret().unwrap();
    assert_ne!(k.value_hash(b"x"), other.value_hash(b"x"));
}
