//! The rotation lock: an exclusive `flock` on a file beside the database.

use std::path::PathBuf;

use super::SqliteStore;
use crate::{Result, RotationGuard, StoreError};

impl SqliteStore {
    /// `{db}.rotate.lock`, beside the database.
    pub fn rotation_lock_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".rotate.lock");
        PathBuf::from(name)
    }

    /// An exclusive `flock` on [`SqliteStore::rotation_lock_path`]: it excludes other
    /// processes and other open files in this one, and the kernel drops it when the process
    /// dies. The file itself is never removed (removing it would let two holders lock two
    /// different files).
    pub(super) fn rotation_lock(&self, wait: bool) -> Result<Option<RotationGuard>> {
        use nix::errno::Errno;
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.rotation_lock_path();
        let io = |source: std::io::Error| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        loop {
            match Flock::lock(file, arg) {
                Ok(held) => return Ok(Some(RotationGuard::new(held))),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, Errno::EWOULDBLOCK)) if !wait => return Ok(None),
                Err((_, e)) => return Err(io(e.into())),
            }
        }
    }
}
