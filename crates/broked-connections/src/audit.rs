//! The audit log: who did what to which connection, when, and how it ended — a tamper-evident
//! chain of records in the store, with signed checkpoints of its head beside the key file.
//!
//! **What is recorded.** Every change (create, update, delete, import, pipeline put and
//! delete), every reveal (a decrypted connection, `get --uri`, a decrypted export in any
//! format, an SSH tunnel's URI), every test (saved and unsaved), every key operation (rotate,
//! prune, check), every token operation, audit pruning, and every refused authentication the
//! server reports ([`Connections::record_refused`]). Each record: `seq`, time, actor, action,
//! conn_id, the *names* of the fields involved, the outcome (`ok`, or the class of the error
//! — never its message), the request id, the HMACs of values (`hmac-sha256:…`, never the
//! value: the new password of a create or update, the password a reveal hands out) and a
//! detail of plain words. Failed calls are recorded too.
//!
//! **Resolves** are not recorded one by one (a warm resolve stays well under a microsecond):
//! the first resolve of each conn_id in a process is recorded (`resolve`, `first=true`), and
//! a background thread records how many resolves each conn_id had per interval
//! ([`Options::audit_interval`](crate::Options), 60 s by default; `count=N`). The hot path
//! adds one relaxed atomic increment on a counter the cache entry holds.
//!
//! **Tamper evidence.** Record `n`'s MAC is HMAC-SHA256 over record `n-1`'s MAC and record
//! `n`'s canonical encoding, keyed by a key derived from the audit secret, which the keyring
//! seals (`broked_crypto::AuditKeys`). A database-only attacker can read the records but can
//! neither forge a MAC nor compute a value HMAC. Signed checkpoints of the head — lines
//! `v1 head|cut SEQ MAC TIME SIGNATURE` in `{key_file}.audit` — let `verify` see a truncated
//! tail, and a prune the database alone cannot fake. Written by each process every
//! [`CHECKPOINT_EVERY`] records it appends, on each flush that appended, on drop, and at
//! every prune (a `cut` line).
//!
//! **One transaction with the change.** A change that writes (create, update, delete,
//! rollback, import, pipeline put and delete) carries its record — outcome `ok` — into its
//! own write transaction ([`broked_store::WriteLog`], with the count of the seals it made):
//! the change and its record commit together or not at all, so a crash can never leave a
//! change without its record, and a change whose record cannot be stored is not made. A call
//! that changes nothing (refused, stale, not found, failed) is recorded afterwards in a
//! transaction of its own, as are reveals, tests, key and token operations.
//!
//! Reveals fail closed: if their record cannot be written, the secret is not handed out.
//! Other calls log a warning and count `audit_failures` when a record of their own cannot be
//! written (the audit keys cannot be had, or the store refuses it); a change whose record
//! cannot be made is refused.
//!
//! The calls on [`Connections`] that record and read the log are in `auditing.rs`.
//!
//! [`Connections`]: crate::Connections
//! [`Connections::record_refused`]: crate::Connections::record_refused

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use broked_core::{Connection, ConnectionInput, Secret};
use broked_crypto::{AuditFields, AuditKeys};
use broked_store::{AuditMac, AuditRecord, Store};

use crate::TestOutcome;
use crate::actor::Actor;
use crate::error::{Error, store_err};
use crate::pipeline::PipelineDef;
use crate::sealer::{RotateReport, Sealer};
use crate::tokens::Scope;
use crate::update::ConnectionUpdate;

/// A process writes a checkpoint after appending this many records (and on flush and drop).
pub const CHECKPOINT_EVERY: u64 = 100;

/// The checkpoint file of a key file: `{key_file}.audit`.
pub fn checkpoint_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".audit");
    PathBuf::from(name)
}

/// One audited call, before its outcome is known. Never a value: `fields` are names, and
/// `values` are only ever stored as their HMAC.
#[derive(Debug, Default)]
pub(crate) struct Event {
    pub(crate) action: &'static str,
    pub(crate) conn_id: Option<String>,
    pub(crate) fields: Vec<&'static str>,
    /// Values the record should be findable by (`broked audit hash VALUE`): HMAC'd.
    pub(crate) values: Vec<Secret>,
    /// Free text without values (`decrypted=true`, a client address, a count).
    pub(crate) detail: String,
}

impl Event {
    pub(crate) fn new(action: &'static str) -> Event {
        Event {
            action,
            ..Event::default()
        }
    }

    pub(crate) fn conn(mut self, conn_id: impl Into<String>) -> Event {
        self.conn_id = Some(conn_id.into());
        self
    }

    pub(crate) fn fields(mut self, fields: Vec<&'static str>) -> Event {
        self.fields = fields;
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = detail.into();
        self
    }

    pub(crate) fn value(mut self, value: Option<&Secret>) -> Event {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.values.push(v.clone());
        }
        self
    }
}

/// One record of the audit log as
/// [`Connections::audit_list`](crate::Connections::audit_list) shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub conn_id: Option<String>,
    /// Field names.
    pub fields: Vec<String>,
    /// `ok`, `denied`, or the class of the error (`not_found`, `invalid`, …).
    pub outcome: String,
    pub request_id: Option<String>,
    /// `hmac-sha256:…` of values the call involved (see
    /// [`Connections::audit_hash`](crate::Connections::audit_hash)).
    pub value_hashes: Vec<String>,
    pub detail: String,
}

/// Which records [`Connections::audit_list`](crate::Connections::audit_list) returns, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub conn_id: Option<String>,
    pub action: Option<String>,
    /// An RFC 3339 time, a date (`2025-01-31`), or a duration back from now (`24h`, `7d`).
    pub since: Option<String>,
    /// `hmac-sha256:…`: the records that mention that value.
    pub value_hash: Option<String>,
    /// Records before this `seq` (the `next_cursor` of the previous page).
    pub cursor: Option<i64>,
    /// At most this many; 0 means [`AuditQuery::DEFAULT_LIMIT`].
    pub limit: usize,
}

impl AuditQuery {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 1000;
}

/// What [`Connections::audit_verify`](crate::Connections::audit_verify) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Records whose MAC was checked.
    pub checked: u64,
    /// The first and last `seq` in the database (`None` if empty).
    pub first_seq: Option<i64>,
    pub head_seq: Option<i64>,
    /// Where the log was pruned (`seq` of the last removed record; 0: never).
    pub cut_seq: i64,
    /// Signed checkpoints read from the checkpoint file.
    pub checkpoints: u64,
    pub checkpoint_file: PathBuf,
    /// Each by `seq`, in order; empty: the chain is intact.
    pub findings: Vec<AuditFinding>,
}

/// One problem `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditFinding {
    pub seq: i64,
    pub kind: FindingKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// The record's MAC does not match its content: it was edited (or forged).
    Edited,
    /// Records are missing in the middle of the chain.
    Deleted,
    /// The newest records are gone: a signed checkpoint names a later head.
    Truncated,
    /// The database's cut (a prune) is not one a prune signed.
    Cut,
    /// A line of the checkpoint file is not validly signed, or disagrees with its record.
    Checkpoint,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Edited => "edited",
            FindingKind::Deleted => "deleted",
            FindingKind::Truncated => "truncated",
            FindingKind::Cut => "cut",
            FindingKind::Checkpoint => "checkpoint",
        }
    }
}

/// What [`Connections::audit_prune`](crate::Connections::audit_prune) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPruned {
    /// Records removed.
    pub removed: u64,
    /// The `seq` of the last removed record (the signed cut), if any was removed.
    pub cut_seq: Option<i64>,
}

/// The per-process audit state of a [`Connections`](crate::Connections): the keys, the
/// checkpoint file, the resolve counters and their flushing thread.
pub(crate) struct Audit {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    keys: OnceLock<Arc<AuditKeys>>,
    pub(crate) checkpoint_file: PathBuf,
    interval: Duration,
    /// The last record this process appended (seq, mac), not yet in a checkpoint.
    unsigned: Mutex<Option<(i64, String)>>,
    since_checkpoint: AtomicU64,
    resolves: Mutex<HashMap<String, Slot>>,
    /// Set to stop the flusher; it is woken by `wake`.
    stop: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<bool>,
    pub(crate) failures: AtomicU64,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Resolves of one conn_id in this process.
struct Slot {
    count: Arc<AtomicU64>,
    /// The first resolve is not recorded yet.
    first_pending: bool,
}

impl Audit {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        key_file: &Path,
        interval: Duration,
    ) -> Audit {
        Audit {
            shared: Arc::new(Shared {
                store,
                sealer,
                keys: OnceLock::new(),
                checkpoint_file: checkpoint_path(key_file),
                interval,
                unsigned: Mutex::new(None),
                since_checkpoint: AtomicU64::new(0),
                resolves: Mutex::new(HashMap::new()),
                stop: AtomicBool::new(false),
                wake: Condvar::new(),
                wake_lock: Mutex::new(false),
                failures: AtomicU64::new(0),
                flusher: Mutex::new(None),
            }),
        }
    }

    /// What the resolve cache asks for the counter of a conn_id on a miss (hits use the
    /// counter the entry holds).
    pub(crate) fn resolve_counters(&self) -> crate::resolve::Counters {
        let shared = self.shared.clone();
        Arc::new(move |conn_id: &str| shared.resolve_counter(conn_id))
    }

    pub(crate) fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.notify();
        let handle = lock(&self.shared.flusher).take();
        if let Some(h) = handle {
            let _ = h.join();
        } else {
            self.shared.flush_resolves();
        }
        self.shared.checkpoint_now();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The counter of `conn_id`'s resolves. The first time in this process, the flusher is
    /// woken to record the first resolve.
    fn resolve_counter(self: &Arc<Shared>, conn_id: &str) -> crate::resolve::ResolveCounter {
        let mut map = lock(&self.resolves);
        if let Some(slot) = map.get(conn_id) {
            return slot.count.clone();
        }
        let count = Arc::new(AtomicU64::new(0));
        map.insert(
            conn_id.to_owned(),
            Slot {
                count: count.clone(),
                first_pending: true,
            },
        );
        drop(map);
        self.start_flusher();
        self.notify();
        count
    }

    fn start_flusher(self: &Arc<Shared>) {
        let mut flusher = lock(&self.flusher);
        if flusher.is_some() || self.stop.load(Ordering::Acquire) {
            return;
        }
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("broked-audit".into())
            .spawn(move || shared.run_flusher());
        match spawned {
            Ok(handle) => *flusher = Some(handle),
            Err(e) => tracing::warn!(error = %e, "cannot start the audit flusher thread"),
        }
    }

    fn notify(&self) {
        *lock(&self.wake_lock) = true;
        self.wake.notify_all();
    }

    pub(crate) fn keys(&self) -> Result<Arc<AuditKeys>, Error> {
        if let Some(k) = self.keys.get() {
            return Ok(k.clone());
        }
        let keys = Arc::new(self.sealer.audit_keys()?);
        Ok(self.keys.get_or_init(|| keys).clone())
    }

    /// Appends records (in one transaction), chained with the audit key.
    pub(crate) fn append(&self, records: Vec<AuditRecord>) -> Result<Vec<AuditRecord>, Error> {
        let mac = self.mac()?;
        let stored = self.store.append_audit(records, mac).map_err(store_err)?;
        self.appended(&stored);
        Ok(stored)
    }

    /// The MAC of a record after `prev`'s, as [`Store::append_audit`] and a
    /// [`broked_store::WriteLog`] take it.
    pub(crate) fn mac(&self) -> Result<AuditMac, Error> {
        let keys = self.keys()?;
        Ok(Arc::new(move |prev: &str, r: &AuditRecord| {
            keys.record_mac(prev, &fields_of(r))
        }))
    }

    /// Records that this process appended (alone, or with a write that carried them): the
    /// newest waits for the next checkpoint, which is due every [`CHECKPOINT_EVERY`].
    pub(crate) fn appended(&self, stored: &[AuditRecord]) {
        let Some(last) = stored.last() else { return };
        *lock(&self.unsigned) = Some((last.seq, last.mac.clone()));
        let n = self
            .since_checkpoint
            .fetch_add(stored.len() as u64, Ordering::AcqRel)
            + stored.len() as u64;
        if n >= CHECKPOINT_EVERY {
            self.checkpoint_now();
        }
    }

    /// Signs the last record this process appended into the checkpoint file, if it is not
    /// there yet. Errors are logged: a checkpoint is evidence, not a condition of work.
    pub(crate) fn checkpoint_now(&self) {
        let Some((seq, mac)) = lock(&self.unsigned).take() else {
            return;
        };
        self.since_checkpoint.store(0, Ordering::Release);
        if let Err(e) = self.write_checkpoint("head", seq, &mac) {
            tracing::warn!(error = %e, file = %self.checkpoint_file.display(),
                "cannot write an audit checkpoint");
        }
    }

    pub(crate) fn write_checkpoint(&self, kind: &str, seq: i64, mac: &str) -> Result<(), Error> {
        let keys = self.keys()?;
        let at = crate::info::now();
        let seq_u = u64::try_from(seq).unwrap_or(0);
        let sig = keys.checkpoint_mac(seq_u, &format!("{kind}:{mac}"), &at);
        let line = format!("v1 {kind} {seq} {mac} {at} {sig}\n");
        let io = |e: std::io::Error| {
            Error::Options(format!(
                "cannot append to the audit checkpoint file {}: {e}",
                self.checkpoint_file.display()
            ))
        };
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.checkpoint_file).map_err(io)?;
        // One write of a short line: appends of several processes do not interleave.
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)
    }

    fn run_flusher(self: Arc<Shared>) {
        loop {
            {
                let mut woken = lock(&self.wake_lock);
                if !*woken && !self.stop.load(Ordering::Acquire) {
                    woken = self
                        .wake
                        .wait_timeout(woken, self.interval)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                *woken = false;
            }
            self.flush_resolves();
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            self.checkpoint_now();
        }
    }

    /// Records first resolves and the counts since the last flush (`resolve` records).
    pub(crate) fn flush_resolves(&self) {
        let mut records = Vec::new();
        let mut taken = Vec::new();
        {
            let mut map = lock(&self.resolves);
            let mut ids: Vec<&String> = map.keys().collect();
            ids.sort();
            let ids: Vec<String> = ids.into_iter().cloned().collect();
            for id in ids {
                let Some(slot) = map.get_mut(&id) else {
                    continue;
                };
                let n = slot.count.swap(0, Ordering::AcqRel);
                let first = std::mem::take(&mut slot.first_pending);
                if n == 0 && !first {
                    continue;
                }
                taken.push((id.clone(), n, first));
                let detail = if first {
                    format!("first=true count={n}")
                } else {
                    format!("count={n} interval={}s", self.interval.as_secs())
                };
                records.push(new_record(
                    &Actor::library(),
                    "resolve",
                    Some(id),
                    Vec::new(),
                    "ok",
                    Vec::new(),
                    detail,
                ));
            }
        }
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.append(records) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot record resolve counts in the audit log; kept for the next flush");
            // Put the counts back, so the next flush records them.
            let mut map = lock(&self.resolves);
            for (id, n, first) in taken {
                if let Some(slot) = map.get_mut(&id) {
                    slot.count.fetch_add(n, Ordering::AcqRel);
                    slot.first_pending |= first;
                }
            }
        }
    }
}

/// A record to append (its `seq` and `mac` come from the store).
pub(crate) fn new_record(
    actor: &Actor,
    action: &str,
    conn_id: Option<String>,
    fields: Vec<&str>,
    outcome: &str,
    value_hashes: Vec<String>,
    detail: String,
) -> AuditRecord {
    AuditRecord {
        seq: 0,
        at: crate::info::now(),
        actor: actor.name().to_owned(),
        action: action.to_owned(),
        conn_id,
        fields: fields.join(","),
        outcome: outcome.to_owned(),
        request_id: actor.request_id().map(str::to_owned),
        value_hashes: value_hashes.join(","),
        detail,
        mac: String::new(),
    }
}

/// What a record's MAC covers.
pub(crate) fn fields_of(r: &AuditRecord) -> AuditFields<'_> {
    AuditFields {
        seq: u64::try_from(r.seq).unwrap_or(0),
        at: &r.at,
        actor: &r.actor,
        action: &r.action,
        conn_id: r.conn_id.as_deref(),
        fields: &r.fields,
        outcome: &r.outcome,
        request_id: r.request_id.as_deref(),
        value_hashes: &r.value_hashes,
        detail: &r.detail,
    }
}

/// The class of an error, for a record's outcome: the variant, never the message (which
/// can name values).
pub(crate) fn error_class(e: &Error) -> &'static str {
    match e {
        Error::Invalid(_) => "invalid",
        Error::InvalidPipeline(_) => "invalid_pipeline",
        Error::NotFound(_) => "not_found",
        Error::PipelineNotFound(_) => "pipeline_not_found",
        Error::AlreadyExists(_) => "already_exists",
        Error::TokenExists(_) => "token_exists",
        Error::TokenNotFound(_) => "token_not_found",
        Error::InUse { .. } => "in_use",
        Error::BastionInUse { .. } => "bastion_in_use",
        Error::Tunnel(_) => "tunnel",
        Error::UnknownConnIds(_) => "unknown_conn_ids",
        Error::Env(_) => "env",
        Error::KeyMissing { .. } => "key_missing",
        Error::KeyMismatch { .. } => "key_mismatch",
        Error::Decrypt { .. } => "decrypt",
        Error::Options(_) => "options",
        Error::Busy => "busy",
        Error::Crypto(_) => "crypto",
        Error::Store(e) if e.is_unavailable() => "unavailable",
        Error::Store(_) => "store",
        Error::Import(_) => "import",
        Error::Dialect(_) => "dialect",
        Error::Stale { .. } => "stale",
        Error::PurgeLive(_) => "purge_live",
        Error::VersionNotFound { .. } => "version_not_found",
        Error::Rotation { .. } => "rotation",
    }
}

pub(crate) fn invalid(field: &'static str, message: String) -> Error {
    Error::Invalid(broked_core::ValidationErrors(vec![
        broked_core::FieldError { field, message },
    ]))
}

/// `since` as the store compares it: RFC 3339 in UTC to the second.
pub fn parse_since(text: &str) -> Result<String, Error> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    if let Ok(d) = crate::tokens::parse_duration(text) {
        return Ok(crate::info::rfc3339(time::OffsetDateTime::now_utc() - d));
    }
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        // 9999-12-31 with a negative offset is past the last UTC time there is: no record
        // is later than that one either.
        let utc = t
            .checked_to_offset(time::UtcOffset::UTC)
            .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
        return Ok(crate::info::rfc3339(utc));
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &date) {
        return Ok(crate::info::rfc3339(d.midnight().assume_utc()));
    }
    Err(invalid(
        "since",
        "since must be an RFC 3339 time (2025-01-31T12:00:00Z), a date (2025-01-31) or a \
         duration back from now (24h, 7d)"
            .into(),
    ))
}

pub(crate) fn printable_detail(text: &str) -> String {
    text.chars()
        .take(256)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `text` as a detail may hold it: printable, bounded, without separators that would make a
/// detail ambiguous.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .take(128)
        .map(|c| {
            if c.is_control() || c == ' ' || c == ',' || c == '=' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// The names of the fields a new connection sets.
pub(crate) fn input_fields(input: &ConnectionInput) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut set = |name: &'static str, present: bool| {
        if present {
            fields.push(name);
        }
    };
    set("type", input.conn_type.is_some());
    set("host", input.host.as_deref().is_some_and(|v| !v.is_empty()));
    set("port", input.port.is_some());
    set(
        "schema",
        input.schema.as_deref().is_some_and(|v| !v.is_empty()),
    );
    set(
        "login",
        input.login.as_deref().is_some_and(|v| !v.is_empty()),
    );
    set(
        "password",
        input.password.as_ref().is_some_and(|v| !v.is_empty()),
    );
    set("extra", input.extra.as_ref().is_some_and(|v| !v.is_empty()));
    set(
        "description",
        input.description.as_deref().is_some_and(|v| !v.is_empty()),
    );
    fields
}

/// The names of the fields an update or an unsaved test gives.
pub(crate) fn update_fields(update: &ConnectionUpdate) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut set = |name: &'static str, present: bool| {
        if present {
            fields.push(name);
        }
    };
    set("type", update.conn_type.is_some());
    set("host", update.host.is_some());
    set("port", update.port.is_some());
    set("schema", update.schema.is_some());
    set("login", update.login.is_some());
    set("password", !update.password.keeps());
    set("extra", !update.extra.keeps());
    set("description", update.description.is_some());
    fields
}

/// The names of the fields whose values differ between `old` and `new`. A secret counts as
/// changed when the update sets or clears it and the stored value differs (a secret kept is
/// not compared: it may not even have been decrypted).
pub(crate) fn changed_fields(
    old: &Connection,
    new: &Connection,
    update: &ConnectionUpdate,
) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut set = |name: &'static str, changed: bool| {
        if changed {
            fields.push(name);
        }
    };
    set("type", old.conn_type != new.conn_type);
    set("host", old.host != new.host);
    set("port", old.port != new.port);
    set("schema", old.schema != new.schema);
    set("login", old.login != new.login);
    set(
        "password",
        !update.password.keeps() && old.password != new.password,
    );
    set("extra", !update.extra.keeps() && old.extra != new.extra);
    set("description", old.description != new.description);
    fields
}

/// The names of the secret fields a revealed connection has.
pub(crate) fn secret_fields(c: &Connection) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if c.password.is_some() {
        fields.push("password");
    }
    if c.extra.is_some() {
        fields.push("extra");
    }
    fields
}

/// `success=true|false driver=…`: never the probe's message (it may quote the server).
pub(crate) fn test_detail(result: &Result<TestOutcome, Error>) -> String {
    match result {
        Ok(o) => {
            let mut d = format!("success={} driver={}", o.success, printable(o.driver));
            if let Some(f) = o.failure {
                d.push_str(&format!(" failure={}", f.as_str()));
            }
            d
        }
        Err(_) => String::new(),
    }
}

pub(crate) fn pipeline_detail(pipeline_id: &str, def: &PipelineDef) -> String {
    let mut conns: Vec<String> = def
        .references()
        .into_iter()
        .map(|(_, c)| c.as_str().to_owned())
        .collect();
    conns.sort();
    conns.dedup();
    format!(
        "pipeline={} conns={}",
        printable(pipeline_id),
        conns.join(",")
    )
}

pub(crate) fn rotate_detail(r: &RotateReport) -> String {
    format!(
        "key={} resealed={} failures={}",
        printable(&r.active_key),
        r.resealed,
        r.failures.len()
    )
}

pub(crate) fn token_detail(
    name: &str,
    scopes: &[Scope],
    conns: Option<&[String]>,
    expires_in: Option<std::time::Duration>,
) -> String {
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let mut d = format!("token={} scopes={}", printable(name), scopes.join(","));
    if let Some(globs) = conns {
        let globs: Vec<String> = globs.iter().map(|g| printable(g)).collect();
        d.push_str(&format!(" conns={}", globs.join(",")));
    }
    if let Some(e) = expires_in {
        d.push_str(&format!(" expires_in={}s", e.as_secs()));
    }
    d
}

#[cfg(test)]
mod tests {
    /// Every form `since` takes, to UTC; a time past the last UTC second is no panic.
    #[test]
    fn since_forms_in_utc() {
        let since = |t: &str| super::parse_since(t).unwrap();
        assert_eq!(since("2025-01-31"), "2025-01-31T00:00:00Z");
        assert_eq!(since(" 2025-01-31T12:00:00+02:00 "), "2025-01-31T10:00:00Z");
        assert_eq!(since("9999-12-31T23:59:59-23:59"), "9999-12-31T23:59:59Z");
        assert!(since("7d") < crate::info::now());
        for bad in ["", "2025-02-30", "0d", "yesterday"] {
            assert!(super::parse_since(bad).is_err(), "{bad:?}");
        }
    }
}
