//! `Secret`: a string that does not show itself.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// What a secret looks like wherever it is displayed.
pub(crate) const MASK: &str = "********";

/// A password or an extra value.
///
/// `Debug` and `Display` print `********`; the memory is zeroized on drop; equality is
/// compared in constant time (for a given length). The only way to the text is
/// [`Secret::expose`], so every place that reveals a secret can be found with grep.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The plaintext. Call it only where the secret is really used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text [`Secret`]s show instead of themselves.
    pub const MASK: &'static str = MASK;
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_itself() {
        let s = Secret::new("hunter2-distinctive");
        assert_eq!(format!("{s}"), "********");
        assert_eq!(format!("{s:?}"), "********");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(********)");
        assert_eq!(s.expose(), "hunter2-distinctive");
    }

    #[test]
    fn equality() {
        assert_eq!(Secret::new("a"), Secret::new("a"));
        assert_ne!(Secret::new("a"), Secret::new("b"));
        assert_ne!(Secret::new("a"), Secret::new("ab"));
    }
}
