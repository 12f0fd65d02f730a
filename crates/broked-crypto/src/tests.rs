use super::*;

#[test]
fn key_id_display_and_parse() {
    assert_eq!(KeyId::new(1).to_string(), "k1");
    assert_eq!(KeyId::new(42).to_string(), "k42");
    assert_eq!(KeyId::parse("k42"), Some(KeyId::new(42)));
    assert_eq!(KeyId::parse("k4294967295"), Some(KeyId::new(u32::MAX)));
    for bad in [
        "",
        "k",
        "42",
        "K1",
        "k01",
        "k-1",
        "k+1",
        "k1 ",
        "k4294967296",
        "kx",
    ] {
        assert_eq!(KeyId::parse(bad), None, "{bad:?}");
    }
    assert!(KeyId::new(2) > KeyId::new(1));
    assert_eq!(KeyId::new(7).get(), 7);
}

#[test]
fn usage_bound_is_well_below_the_nist_limit() {
    const { assert!(ROTATE_AFTER_SEALS <= (1 << 32) / 2) };
    assert!(!needs_rotation(ROTATE_AFTER_SEALS - 1));
    assert!(needs_rotation(ROTATE_AFTER_SEALS));
}
