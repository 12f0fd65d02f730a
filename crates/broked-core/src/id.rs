//! `ConnId`: the unique, immutable slug that pipelines reference.

use std::fmt;
use std::str::FromStr;

/// Maximum length of a conn_id, in bytes (all allowed characters are ASCII).
const MAX_LEN: usize = 128;

/// A connection id: `^[a-z0-9][a-z0-9_-]{0,127}$`.
///
/// The rule is checked in [`ConnId::new`]; a `ConnId` that exists is valid.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(String);

/// The error of [`ConnId::new`]; its message states the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "conn_id must be 1 to 128 characters of lowercase letters, digits, '_' or '-', \
     starting with a letter or digit (^[a-z0-9][a-z0-9_-]{{0,127}}$)"
)]
pub struct ConnIdError;

impl ConnId {
    /// The rule, for documentation and error messages.
    pub const RULE: &'static str = "^[a-z0-9][a-z0-9_-]{0,127}$";

    /// Checks the slug rule.
    pub fn new(id: impl Into<String>) -> Result<ConnId, ConnIdError> {
        let id = id.into();
        let bytes = id.as_bytes();
        let first_ok = matches!(bytes.first(), Some(b'a'..=b'z' | b'0'..=b'9'));
        let rest_ok = bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if first_ok && rest_ok && bytes.len() <= MAX_LEN {
            Ok(ConnId(id))
        } else {
            Err(ConnIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The environment variable that overrides this connection for the engine:
    /// `BROKED_CONN_` + the id upper-cased, with `-` as `_` (like Airflow's `AIRFLOW_CONN_*`).
    pub fn env_var_name(&self) -> String {
        let mut name = String::with_capacity(12 + self.0.len());
        name.push_str("BROKED_CONN_");
        name.extend(self.0.chars().map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        }));
        name
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for ConnId {
    type Err = ConnIdError;
    fn from_str(s: &str) -> Result<ConnId, ConnIdError> {
        ConnId::new(s)
    }
}

impl AsRef<str> for ConnId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_rule() {
        for ok in [
            "prod-postgres",
            "a",
            "0",
            "a_b-c",
            "9lives",
            &"a".repeat(128),
        ] {
            assert!(ConnId::new(ok).is_ok(), "{ok:?} should be valid");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "Prod",
            "a b",
            "a.b",
            "é",
            "a/b",
            &"a".repeat(129),
        ] {
            assert_eq!(
                ConnId::new(bad),
                Err(ConnIdError),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn error_message_states_the_rule() {
        let msg = ConnId::new("Bad Id").unwrap_err().to_string();
        assert!(msg.contains("^[a-z0-9][a-z0-9_-]{0,127}$"), "{msg}");
        assert!(msg.contains("conn_id"), "{msg}");
    }

    #[test]
    fn env_var_name() {
        let id = ConnId::new("prod-postgres_2").unwrap();
        assert_eq!(id.env_var_name(), "BROKED_CONN_PROD_POSTGRES_2");
    }
}
