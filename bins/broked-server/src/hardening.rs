//! Keeping secrets in memory out of files: no core dumps.

/// `RLIMIT_CORE` 0 and `PR_SET_DUMPABLE` 0, so a crash never writes the process memory —
/// decrypted passwords included — to disk, and other processes of the same user cannot
/// ptrace it.
pub(crate) fn disable_core_dumps() -> nix::Result<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    nix::sys::prctl::set_dumpable(false)?;
    Ok(())
}

/// Raises the soft limit of open files to the hard one: each client holds a descriptor, and
/// the usual soft default (1,024) lets a thousand idle connections starve the server.
pub(crate) fn raise_open_files_limit() -> nix::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    #[test]
    fn core_dumps_are_off_after_the_call() {
        super::disable_core_dumps().unwrap();
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let hard = super::raise_open_files_limit().unwrap();
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
    }
}
