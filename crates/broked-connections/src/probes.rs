//! The probes built into this build, one cargo feature per connection type.

use broked_probe::{Policy, Registry};

use crate::{Error, Options};

pub(crate) fn registry(options: &Options) -> Result<Registry, Error> {
    let policy = Policy::new(
        options.probe_timeout,
        options.probe_disabled,
        &options.probe_deny,
    )
    .map_err(Error::Options)?;
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
