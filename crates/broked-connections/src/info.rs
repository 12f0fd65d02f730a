//! What the library shows of connections and pipelines: never a secret, only whether it is set.

use broked_core::{ConnId, ConnType};

use crate::pipeline::{PipelineDef, PipelineId};

/// A stored connection with its secrets masked: `has_password` and `has_extra` say whether
/// they are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub conn_id: ConnId,
    pub conn_type: ConnType,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub schema: Option<String>,
    pub login: Option<String>,
    pub has_password: bool,
    pub has_extra: bool,
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The version: 1 when created, one more with every update (the HTTP `ETag`). Kept
    /// previous versions: [`Connections::versions`](crate::Connections::versions).
    pub version: i64,
    /// Who wrote this version (`library`, `cli:<user>`, a token name); `None` for rows
    /// written before versions were recorded.
    pub updated_by: Option<String>,
    /// The last test of this version (`None`: not tested since created or updated).
    pub last_test: Option<crate::LastTest>,
}

/// One version of a connection in its history: never a value, only which fields changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: i64,
    /// RFC 3339: when this version was written (for a deleted marker: when it was deleted).
    pub updated_at: String,
    pub updated_by: Option<String>,
    /// The names of the fields this version changed from the one before (empty for the
    /// first version and for the deleted marker).
    pub changed: Vec<String>,
    /// The marker a delete leaves: the connection was deleted at `updated_at`.
    pub deleted: bool,
    /// The connection's current version.
    pub current: bool,
}

/// One version of a connection, masked as [`ConnectionInfo`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionVersion {
    pub summary: VersionInfo,
    pub connection: ConnectionInfo,
}

/// A stored pipeline definition.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineInfo {
    pub pipeline_id: PipelineId,
    pub definition: PipelineDef,
    pub created_at: String,
    pub updated_at: String,
}

/// One pipeline that uses a connection, and the nodes that reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineUsage {
    pub pipeline_id: PipelineId,
    pub name: String,
    /// Node ids, sorted.
    pub nodes: Vec<String>,
}

/// RFC 3339 in UTC, to the second (`2026-11-26T10:00:00Z`).
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Now, in the form [`rfc3339`] writes.
pub(crate) fn now() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}
