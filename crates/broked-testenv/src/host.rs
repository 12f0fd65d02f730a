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

/// Whether this process holds SQLite's "DMS" lock on the WAL index `shm` (a database's `-shm`
/// file, byte 128): while any process holds it, nobody rebuilds the WAL index under the
/// others.
pub fn holds_dms_lock(shm: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(shm).unwrap().ino();
    // `/proc/locks` is read a page at a time; a lock that other threads' locks move
    // between two reads can be skipped. A held lock shows in one of a few reads; a lock
    // that is not held shows in none.
    (0..5).any(|_| {
        own_locks()
            .iter()
            .any(|&(i, start, end)| i == ino && start <= 128 && 128 <= end)
    })
}

/// `(inode, start, end)` of every POSIX lock this process holds, from `/proc/locks`.
fn own_locks() -> Vec<(u64, u64, u64)> {
    let me = std::process::id().to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter_map(|l| {
            // "1: POSIX  ADVISORY  READ 1234 08:01:5678 128 128"
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(1) != Some(&"POSIX") || f.get(4) != Some(&me.as_str()) {
                return None;
            }
            let ino = f[5].rsplit(':').next()?.parse().ok()?;
            Some((ino, f[6].parse().ok()?, f[7].parse().ok()?))
        })
        .collect()
}

/// Runs `cmd` to its end (a test binary run again as a child, a tool): its exit status and what
/// it printed, standard output then standard error.
pub fn run_output(cmd: &mut std::process::Command) -> (std::process::ExitStatus, String) {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}
