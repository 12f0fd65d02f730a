//! Small facts about this machine that the helpers for private servers need.

use std::path::Path;

/// A loopback port that was free a moment ago (bound, then released): for a server that a
/// test starts, or as a port where nothing listens.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the tests run as root (database servers refuse to, so they run as their own user).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `chown -R OWNER PATH`, e.g. `postgres:postgres`; panics with chown's message on failure.
pub fn chown(path: &Path, owner: &str) {
    let out = std::process::Command::new("chown")
        .args(["-R", owner])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
