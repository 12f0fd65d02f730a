//! The rotation lock and the named locks: an exclusive `flock` on a file beside the database.

use std::path::{Path, PathBuf};

use super::SqliteStore;
use crate::{Result, RotationGuard, StoreError};

impl SqliteStore {
    /// `{db}.rotate.lock`, beside the database.
    pub fn rotation_lock_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".rotate.lock");
        PathBuf::from(name)
    }

    /// The file of the named lock `name` ([`Store::lock_named`](crate::Store::lock_named)):
    /// `{db}.locks/{name}`, with every character outside `[A-Za-z0-9._-]` (and a leading
    /// `.`) written as `_`.
    pub fn named_lock_path(&self, name: &str) -> PathBuf {
        let mut dir = self.path.as_os_str().to_owned();
        dir.push(".locks");
        let file: String = name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || (c == '.' && i > 0) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        PathBuf::from(dir).join(if file.is_empty() { "_".into() } else { file })
    }

    /// An exclusive `flock` on [`SqliteStore::rotation_lock_path`]: it excludes other
    /// processes and other open files in this one, and the kernel drops it when the process
    /// dies. The file itself is never removed (removing it would let two holders lock two
    /// different files).
    pub(super) fn rotation_lock(&self, wait: bool) -> Result<Option<RotationGuard>> {
        flock(&self.rotation_lock_path(), wait)
    }

    /// The same kind of lock on [`SqliteStore::named_lock_path`]; the directory is made
    /// (mode 0700) on first use, and neither it nor the files are ever removed.
    pub(super) fn named_lock(&self, name: &str, wait: bool) -> Result<Option<RotationGuard>> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.named_lock_path(name);
        let dir = path.parent().expect("a lock file has a directory");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                source,
            })?;
        flock(&path, wait)
    }
}

fn flock(path: &Path, wait: bool) -> Result<Option<RotationGuard>> {
    use nix::errno::Errno;
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source: std::io::Error| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
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
