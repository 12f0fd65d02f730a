//! A pinned SSH host key (`extra.host_key` of an sftp connection), shared by the sftp probe
//! and the SSH tunnels (`broked-tunnel`).
//!
//! Two forms (`docs/probes.md`): a public key line as in `known_hosts` (`ssh-ed25519 AAAA…`,
//! host names in front and a comment after are ignored) or a fingerprint `SHA256:…` as
//! `ssh-keygen -lf` prints it.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// The host key a hop expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPin {
    /// The SHA-256 fingerprint, base64 without padding (as OpenSSH prints it after `SHA256:`).
    Fingerprint(String),
    /// A public key: its algorithm name and the key blob.
    Key { algo: String, blob: Vec<u8> },
}

pub const HOST_KEY_FORMS: &str = "extra.host_key must be the server's public key as in \
     known_hosts (\"ssh-ed25519 AAAA…\") or its fingerprint (\"SHA256:…\", as ssh-keygen -l \
     prints it)";

impl HostKeyPin {
    /// Parses a key line (`[hosts] algo base64 [comment]`) or a `SHA256:` fingerprint. `None`
    /// when it is in neither form; the caller's error never echoes the value.
    pub fn parse(text: &str) -> Option<HostKeyPin> {
        let text = text.trim();
        if let Some(fp) = text.strip_prefix("SHA256:") {
            let fp = fp.trim().trim_end_matches('=');
            return match STANDARD_NO_PAD.decode(fp) {
                Ok(bytes) if bytes.len() == 32 => Some(HostKeyPin::Fingerprint(fp.to_owned())),
                _ => None,
            };
        }
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let at = tokens.iter().position(|t| is_key_algo(t))?;
        let algo = tokens[at];
        let blob = tokens.get(at + 1).and_then(|b| STANDARD.decode(b).ok())?;
        if blob_algo(&blob) != Some(algo) {
            return None;
        }
        Some(HostKeyPin::Key {
            algo: algo.to_owned(),
            blob,
        })
    }

    pub fn matches(&self, blob: &[u8], fingerprint: &str) -> bool {
        match self {
            HostKeyPin::Fingerprint(fp) => fp == fingerprint,
            HostKeyPin::Key { blob: want, .. } => want == blob,
        }
    }

    /// The host key algorithms to ask for, so that a server with several host keys presents
    /// the pinned one.
    pub fn method_pref(&self) -> Option<&str> {
        match self {
            HostKeyPin::Fingerprint(_) => None,
            HostKeyPin::Key { algo, .. } if algo == "ssh-rsa" => {
                Some("rsa-sha2-512,rsa-sha2-256,ssh-rsa")
            }
            HostKeyPin::Key { algo, .. } => Some(algo),
        }
    }
}

fn is_key_algo(t: &str) -> bool {
    t.starts_with("ssh-") || t.starts_with("ecdsa-sha2-") || t.starts_with("sk-")
}

/// The algorithm name that starts an SSH public key blob (a length-prefixed string).
pub fn blob_algo(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4 + len)?).ok()
}

/// The SHA-256 fingerprint of a key blob as OpenSSH prints it (base64 without padding).
pub fn fingerprint_of(hash: &[u8]) -> String {
    STANDARD_NO_PAD.encode(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPomiB6oTpmGkou55zwahUq7BXBvYSHKU8cu+88G87gt";

    #[test]
    fn both_documented_forms_parse() {
        let key = HostKeyPin::parse(&format!("host.example,10.0.0.1 {LINE} comment")).unwrap();
        assert!(matches!(&key, HostKeyPin::Key { algo, .. } if algo == "ssh-ed25519"));
        assert_eq!(key.method_pref(), Some("ssh-ed25519"));
        let fp = HostKeyPin::parse("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU").unwrap();
        assert!(fp.matches(b"", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"));
        assert!(!fp.matches(b"", "x"));
        for bad in [
            "",
            "SHA256:abc",
            "ssh-ed25519",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5",
            "yes",
        ] {
            assert_eq!(HostKeyPin::parse(bad), None, "{bad}");
        }
    }
}
