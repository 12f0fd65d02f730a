//! Keeping secrets in memory out of files: no core dumps.

/// `RLIMIT_CORE` 0 and `PR_SET_DUMPABLE` 0, so a crash never writes the process memory —
/// decrypted passwords included — to disk, and other processes of the same user cannot
/// ptrace it.
pub(crate) fn disable_core_dumps() -> nix::Result<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    nix::sys::prctl::set_dumpable(false)?;
    Ok(())
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
}
