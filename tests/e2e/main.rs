//! End-to-end tests: the real `broked-server` (and `broked`) binaries, driven over HTTP and
//! the command line, against the real PostgreSQL started by scripts/test.

mod attacks;
mod audit;
mod history;
mod host_url;
mod listing;
mod openapi_client;
mod operate;
mod replicas;
mod rotation;
mod rotation_roles;
mod safe_defaults;
mod server;
mod server_contract;
mod target;
mod tls;
mod tokens;
