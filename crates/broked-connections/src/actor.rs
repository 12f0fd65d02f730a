//! Who does something: the [`Actor`] the audit log (and the version history) names.
//!
//! `Connections::create` and the other plain methods act as [`Actor::library`]; the server
//! acts as the token of each request (`connections.acting(Actor::token(name))`, see
//! `acting.rs`), the CLI as `cli:<unix user>`.

use std::fmt;

/// Who acts: a token's name, `cli:<unix user>`, or `library`; with the request id of the
/// call when there is one (a server's `X-Request-Id`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    name: String,
    request_id: Option<String>,
}

impl Actor {
    /// The longest name or request id kept; longer ones are cut (at a character boundary).
    pub const MAX_LEN: usize = 128;

    /// A program that links the library and calls [`Connections`](crate::Connections) directly.
    pub fn library() -> Actor {
        Actor::named("library")
    }

    /// The admin CLI: `cli:<unix user>`, the user of the process's real uid (its passwd
    /// entry), else `$USER`, else `uid<N>`.
    pub fn cli() -> Actor {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| format!("uid{uid}"));
        Actor::named(&format!("cli:{user}"))
    }

    /// An API token by its name (`bootstrap` for the server's `--api-token`, `local` for a
    /// loopback server without tokens; see [`Grant::name`](crate::Grant)).
    pub fn token(name: &str) -> Actor {
        Actor::named(name)
    }

    /// Someone who did not authenticate (a refused request); the name of the token
    /// presented when it is known.
    pub fn anonymous() -> Actor {
        Actor::named("anonymous")
    }

    /// Any other name (control characters are replaced, the length bounded).
    pub fn named(name: &str) -> Actor {
        Actor {
            name: clean(name),
            request_id: None,
        }
    }

    /// The same actor, for the request `id`.
    pub fn with_request_id(mut self, id: impl AsRef<str>) -> Actor {
        let id = clean(id.as_ref());
        self.request_id = (!id.is_empty()).then_some(id);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
}

/// Printable, bounded: a name reaches logs, the audit table and terminals.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(Actor::MAX_LEN));
    for c in text.chars() {
        if out.len() + c.len_utf8() > Actor::MAX_LEN {
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actor")
            .field("name", &self.name)
            .field("request_id", &self.request_id)
            .finish()
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Actor::library().name(), "library");
        assert_eq!(Actor::token("ci").name(), "ci");
        assert!(Actor::cli().name().starts_with("cli:"));
        assert!(Actor::cli().name().len() > "cli:".len());
        let a = Actor::token("ci").with_request_id("abc-1");
        assert_eq!(a.request_id(), Some("abc-1"));
        assert_eq!(Actor::token("ci").with_request_id("").request_id(), None);
        assert_eq!(Actor::named("a\nb").name(), "a?b");
        assert_eq!(Actor::named(&"é".repeat(100)).name().len(), 128);
    }
}
