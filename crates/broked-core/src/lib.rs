//! The domain model of broked connections.
//!
//! What is here: [`ConnId`] (the slug rule, checked in its constructor), [`ConnType`] and the
//! type table, [`Connection`] and its validation ([`ConnectionInput::validate`]), the URI
//! builder and parser ([`Connection::to_uri`], [`Connection::from_uri`]) and [`Secret`], the
//! string type every password and extra value travels in, and [`redact`]: the rules that
//! take secrets out of text (URLs, driver messages), used by the store and the probes.
//!
//! What is not here, by design: any IO (files, network, clocks, environment), any encryption
//! (that is `broked-crypto`), any wire format (that is the server's). This crate has no
//! serde derive on secret-bearing types, so a secret cannot be serialized by accident.

mod connection;
mod dialect;
pub mod endpoint;
mod host;
mod id;
pub mod redact;
mod rotate_every;
mod secret;
mod target;
mod types;
mod uri;

pub use connection::{
    Connection, ConnectionInput, FieldError, ValidationErrors, effective_port, target_binding,
};
pub use dialect::{Dialect, DialectError, UnknownDialect};
pub use id::{ConnId, ConnIdError};
pub use rotate_every::{ROTATE_EVERY_KEY, ROTATE_EVERY_RULE, parse_rotate_every};
pub use secret::Secret;
pub use target::{
    ExtraKeyRole, MAX_ROLE_NAME, ROTATION_ALLOWED_ROLES_KEY, ROTATION_KEYS, ROTATION_ROLES_KEY,
    SSH_TUNNEL_KEY, is_rotation_key, is_tunnel_key, rotation_allowed_roles, rotation_key,
    rotation_roles, securing_extra,
};
pub use types::{ConnType, Field, FieldUse, TypeInfo, UnknownConnType};
pub use uri::UriError;
