use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPomiB6oTpmGkou55zwahUq7BXBvYSHKU8cu+88G87gt";

#[test]
fn host_key_line_forms() {
    let plain = HostKeyPin::parse(KEY).unwrap();
    let HostKeyPin::Key { algo, blob } = &plain else {
        panic!("not a key: {plain:?}")
    };
    assert_eq!(algo, "ssh-ed25519");
    assert_eq!(blob.len(), 51);
    // known_hosts form with host names in front and a comment after.
    let known = HostKeyPin::parse(&format!("[127.0.0.1]:2222,example {KEY} me@host")).unwrap();
    assert_eq!(known, plain);
    assert_eq!(plain.method_pref(), Some("ssh-ed25519"));
}

#[test]
fn fingerprint_form() {
    let fp = "SHA256:cMFYTG1GE0kw1WQ0IYcv7Q1cSvX1LT06CEJiutP/xmI";
    let pin = HostKeyPin::parse(fp).unwrap();
    assert!(pin.matches(b"", "cMFYTG1GE0kw1WQ0IYcv7Q1cSvX1LT06CEJiutP/xmI"));
    assert!(!pin.matches(b"", "AAAATG1GE0kw1WQ0IYcv7Q1cSvX1LT06CEJiutP/xmI"));
    assert_eq!(pin.method_pref(), None);
    // With the padding some tools print.
    assert_eq!(HostKeyPin::parse(&format!("{fp}=")).unwrap(), pin);
}

#[test]
fn bad_host_keys_are_config_errors_that_do_not_echo() {
    for bad in [
        "hunter2-not-a-key",
        "SHA256:short",
        "ssh-ed25519 !!!notbase64",
        // The blob says ssh-ed25519, the line says ssh-rsa.
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIPomiB6oTpmGkou55zwahUq7BXBvYSHKU8cu+88G87gt",
    ] {
        let e = parse_host_key(bad).unwrap_err();
        assert_eq!(e.kind, Failure::Config, "{bad}");
        assert!(!e.message.contains(bad), "{}", e.message);
    }
}

#[test]
fn blob_algo_reads_the_length_prefixed_name() {
    assert_eq!(blob_algo(b"\0\0\0\x03abcdef"), Some("abc"));
    assert_eq!(blob_algo(b"\0\0\0\x09abc"), None);
    assert_eq!(blob_algo(b"\0\0"), None);
}
