//! End-to-end tests of broked connections: the built binaries driven against real servers.
//!
//! The helpers here are shared by the test binaries under `tests/`.
