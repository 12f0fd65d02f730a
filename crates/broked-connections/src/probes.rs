//! The probes built into this build, one cargo feature per connection type.

use broked_probe::{Policy, Registry};

use crate::{Error, Options};

/// `protected`: the store's database file (for SQLite) and the key file, never a test target.
pub(crate) fn registry(
    options: &Options,
    protected: Vec<std::path::PathBuf>,
) -> Result<Registry, Error> {
    let policy = Policy::new(
        options.probe_timeout,
        options.probe_disabled,
        &options.probe_deny,
    )
    .map_err(Error::Options)?;
    let policy = file_policy(policy.protect_files(protected), options)?;
    #[allow(unused_mut)]
    let mut registry = Registry::new(policy);
    #[cfg(feature = "postgres")]
    registry.register(std::sync::Arc::new(broked_probe_postgres::PostgresProbe));
    #[cfg(feature = "mysql")]
    registry.register(std::sync::Arc::new(broked_probe_mysql::MysqlProbe));
    #[cfg(feature = "sqlite")]
    registry.register(std::sync::Arc::new(broked_probe_sqlite::SqliteProbe));
    #[cfg(feature = "http")]
    registry.register(std::sync::Arc::new(broked_probe_http::HttpProbe));
    #[cfg(feature = "sftp")]
    registry.register(std::sync::Arc::new(broked_probe_sftp::SftpProbe));
    #[cfg(feature = "s3")]
    registry.register(std::sync::Arc::new(broked_probe_s3::S3Probe));
    #[cfg(feature = "tcp")]
    registry.register(std::sync::Arc::new(broked_probe_tcp::TcpProbe));
    Ok(registry)
}

/// The file side of the policy: `probe_file_roots` (each must be an existing directory), and
/// the key file named in the options, which is never a test target (the sqlite probe also
/// refuses any keyring, any broked store and any database with a `.key` file beside it).
fn file_policy(policy: Policy, options: &Options) -> Result<Policy, Error> {
    let mut policy = policy.protect_files(options.key_file.clone());
    if !options.probe_file_roots.is_empty() {
        let roots = options
            .probe_file_roots
            .iter()
            .map(|dir| match dir.canonicalize() {
                Ok(c) if c.is_dir() => Ok(c),
                _ => Err(Error::Options(format!(
                    "probe file root {} is not a directory",
                    dir.display()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        policy = policy.with_file_roots(roots);
    }
    Ok(policy)
}
