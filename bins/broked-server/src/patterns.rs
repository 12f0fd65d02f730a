//! Regex pieces the OpenAPI document and the handlers' parsers share. A leaf module: it uses
//! no other module of the server, so `openapi.rs`, `audit.rs` and `versions.rs` can all use it
//! without importing each other in a circle (tests/tidy).

/// The characters `str::trim` removes (Unicode `White_Space`), as a regex class. ECMA-262,
/// Python and the `regex` crate read it alike.
pub(crate) const WS: &str =
    r"[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";
