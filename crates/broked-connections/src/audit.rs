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
//! Reveals fail closed: if their record cannot be written, the secret is not handed out.
//! Other calls log a warning and count `audit_failures` when their record cannot be written
//! (the change itself is already committed).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use broked_core::{Connection, ConnectionInput, Secret};
use broked_crypto::{AuditFields, AuditKeys, VALUE_HASH_PREFIX};
use broked_store::{AUDIT_CUT_SEQ, AuditCut, AuditFilter, AuditRecord, Store};

use crate::TestOutcome;
use crate::actor::Actor;
use crate::connections::Connections;
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

/// One record of the audit log as [`Connections::audit_list`] shows it.
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
    /// `hmac-sha256:…` of values the call involved (see [`Connections::audit_hash`]).
    pub value_hashes: Vec<String>,
    pub detail: String,
}

/// Which records [`Connections::audit_list`] returns, newest first.
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

/// What [`Connections::audit_verify`] found.
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

/// What [`Connections::audit_prune`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPruned {
    /// Records removed.
    pub removed: u64,
    /// The `seq` of the last removed record (the signed cut), if any was removed.
    pub cut_seq: Option<i64>,
}

/// The per-process audit state of a [`Connections`]: the keys, the checkpoint file, the
/// resolve counters and their flushing thread.
pub(crate) struct Audit {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    keys: OnceLock<Arc<AuditKeys>>,
    checkpoint_file: PathBuf,
    interval: Duration,
    /// The last record this process appended (seq, mac), not yet in a checkpoint.
    unsigned: Mutex<Option<(i64, String)>>,
    since_checkpoint: AtomicU64,
    resolves: Mutex<HashMap<String, Slot>>,
    /// Set to stop the flusher; it is woken by `wake`.
    stop: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<bool>,
    failures: AtomicU64,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Resolves of one conn_id in this process.
struct Slot {
    count: Arc<AtomicU64>,
    /// The first resolve is not recorded yet.
    first_pending: bool,
}

/// The counter a cache entry holds: a resolve hit adds one to it.
pub(crate) type ResolveCounter = Arc<AtomicU64>;

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
    fn resolve_counter(self: &Arc<Shared>, conn_id: &str) -> ResolveCounter {
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

    fn keys(&self) -> Result<Arc<AuditKeys>, Error> {
        if let Some(k) = self.keys.get() {
            return Ok(k.clone());
        }
        let keys = Arc::new(self.sealer.audit_keys()?);
        Ok(self.keys.get_or_init(|| keys).clone())
    }

    /// Appends records (in one transaction), chained with the audit key.
    fn append(&self, records: Vec<AuditRecord>) -> Result<Vec<AuditRecord>, Error> {
        let keys = self.keys()?;
        let mac_keys = keys.clone();
        let stored = self
            .store
            .append_audit(
                records,
                Arc::new(move |prev: &str, r: &AuditRecord| {
                    mac_keys.record_mac(prev, &fields_of(r))
                }),
            )
            .map_err(store_err)?;
        if let Some(last) = stored.last() {
            *lock(&self.unsigned) = Some((last.seq, last.mac.clone()));
            let n = self
                .since_checkpoint
                .fetch_add(stored.len() as u64, Ordering::AcqRel)
                + stored.len() as u64;
            if n >= CHECKPOINT_EVERY {
                self.checkpoint_now();
            }
        }
        Ok(stored)
    }

    /// Signs the last record this process appended into the checkpoint file, if it is not
    /// there yet. Errors are logged: a checkpoint is evidence, not a condition of work.
    fn checkpoint_now(&self) {
        let Some((seq, mac)) = lock(&self.unsigned).take() else {
            return;
        };
        self.since_checkpoint.store(0, Ordering::Release);
        if let Err(e) = self.write_checkpoint("head", seq, &mac) {
            tracing::warn!(error = %e, file = %self.checkpoint_file.display(),
                "cannot write an audit checkpoint");
        }
    }

    fn write_checkpoint(&self, kind: &str, seq: i64, mac: &str) -> Result<(), Error> {
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
    fn flush_resolves(&self) {
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
fn new_record(
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
fn fields_of(r: &AuditRecord) -> AuditFields<'_> {
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

impl Connections {
    fn audit_record<T>(
        &self,
        actor: &Actor,
        event: Event,
        result: &Result<T, Error>,
    ) -> Result<(), Error> {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => error_class(e),
        };
        self.append_event(actor, event, outcome)
    }

    fn append_event(&self, actor: &Actor, event: Event, outcome: &str) -> Result<(), Error> {
        let shared = &self.audit.shared;
        let keys = shared.keys()?;
        let hashes = event
            .values
            .iter()
            .map(|v| keys.value_hash(v.expose().as_bytes()))
            .collect();
        let record = new_record(
            actor,
            event.action,
            event.conn_id,
            event.fields,
            outcome,
            hashes,
            event.detail,
        );
        shared.append(vec![record]).map(|_| ())
    }

    /// Records `event` done by `actor` with the outcome of `result`. A record that cannot be
    /// written is logged and counted; the call's result stands.
    pub(crate) fn record<T>(&self, actor: &Actor, event: Event, result: &Result<T, Error>) {
        let action = event.action;
        if let Err(e) = self.audit_record(actor, event, result) {
            self.audit.shared.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, action, "cannot write the audit record");
        }
    }

    /// [`Connections::record`] for a reveal: if the record cannot be written, the secret is
    /// not handed out (the error is returned instead).
    pub(crate) fn record_reveal<T>(
        &self,
        actor: &Actor,
        event: Event,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        let action = event.action;
        match self.audit_record(actor, event, &result) {
            Ok(()) => result,
            Err(e) => {
                self.audit.shared.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, action, "cannot write the audit record: the reveal is refused");
                result.and(Err(e))
            }
        }
    }

    /// Records a refused authentication (the server calls it): `actor` is
    /// [`Actor::anonymous`] or the presented token's name when known, `detail` says from
    /// where (e.g. `client=192.0.2.1`). Never the presented token.
    pub fn record_refused(&self, actor: &Actor, detail: &str) -> Result<(), Error> {
        let event = Event::new("auth").detail(printable_detail(detail));
        self.append_event(actor, event, "denied")
    }

    /// Records pending resolve counts and first resolves now, and signs the head this
    /// process wrote into the checkpoint file (what the background thread does every
    /// [`Options::audit_interval`](crate::Options)).
    pub fn flush_audit(&self) {
        self.audit.shared.flush_resolves();
        self.audit.shared.checkpoint_now();
    }

    /// Audit records written that failed in this process (see the module docs).
    pub fn audit_failures(&self) -> u64 {
        self.audit.failures()
    }

    /// The checkpoint file (`{key_file}.audit`).
    pub fn audit_checkpoint_path(&self) -> PathBuf {
        self.audit.shared.checkpoint_file.clone()
    }

    /// `hmac-sha256:<hex>` of `value` with the audit value key: what records that mention
    /// the value hold (`broked audit hash VALUE`).
    pub fn audit_hash(&self, value: &Secret) -> Result<String, Error> {
        Ok(self
            .audit
            .shared
            .keys()?
            .value_hash(value.expose().as_bytes()))
    }

    /// Audit records, newest first (see [`AuditQuery`]).
    pub fn audit_list(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, Error> {
        let since = query.since.as_deref().map(parse_since).transpose()?;
        if let Some(h) = &query.value_hash {
            if !h.starts_with(VALUE_HASH_PREFIX) {
                return Err(invalid(
                    "value_hash",
                    format!(
                        "value_hash must start with {VALUE_HASH_PREFIX} (see `broked audit hash`)"
                    ),
                ));
            }
        }
        let limit = match query.limit {
            0 => AuditQuery::DEFAULT_LIMIT,
            n if n > AuditQuery::MAX_LIMIT => {
                return Err(invalid(
                    "limit",
                    format!("limit must be between 1 and {}", AuditQuery::MAX_LIMIT),
                ));
            }
            n => n,
        };
        let records = self
            .store
            .list_audit(&AuditFilter {
                conn_id: query.conn_id.clone(),
                action: query.action.clone(),
                since,
                value_hash: query.value_hash.clone(),
                before_seq: query.cursor,
                limit,
            })
            .map_err(store_err)?;
        Ok(records.into_iter().map(entry).collect())
    }

    /// Walks the chain and the checkpoint file; every finding names its `seq`.
    pub fn audit_verify(&self) -> Result<AuditReport, Error> {
        let shared = &self.audit.shared;
        let keys = shared.keys()?;
        let cut = self.audit_cut()?;
        let mut report = AuditReport {
            cut_seq: cut.as_ref().map_or(0, |c| c.seq),
            checkpoint_file: shared.checkpoint_file.clone(),
            ..AuditReport::default()
        };
        let (checkpoints, bad_lines) = read_checkpoints(&keys, &shared.checkpoint_file)?;
        report.checkpoints = checkpoints.len() as u64;
        report.findings.extend(bad_lines);
        // The cut must be one a prune signed.
        let signed_cut = checkpoints
            .iter()
            .filter(|c| c.kind == "cut")
            .max_by_key(|c| c.seq);
        match (&cut, signed_cut) {
            (Some(cut), Some(s)) if s.seq == cut.seq && s.mac == cut.mac => {}
            (Some(cut), _) => report.findings.push(AuditFinding {
                seq: cut.seq,
                kind: FindingKind::Cut,
                message: format!(
                    "records up to seq {} are gone, but no signed prune cut the log there: \
                     deleted from the database",
                    cut.seq
                ),
            }),
            (None, Some(s)) => report.findings.push(AuditFinding {
                seq: s.seq,
                kind: FindingKind::Cut,
                message: format!(
                    "a prune cut the log at seq {}, but the database does not say so: its \
                     audit state was rewritten or restored",
                    s.seq
                ),
            }),
            (None, None) => {}
        }
        let (mut prev_seq, mut prev_mac) = cut.map_or((0, String::new()), |c| (c.seq, c.mac));
        let mut by_seq: HashMap<i64, Vec<&Checkpoint>> = HashMap::new();
        for c in checkpoints.iter().filter(|c| c.kind == "head") {
            by_seq.entry(c.seq).or_default().push(c);
        }
        loop {
            let batch = self
                .store
                .audit_range(prev_seq + 1, 1000)
                .map_err(store_err)?;
            let Some(last) = batch.last() else { break };
            let last_seq = last.seq;
            for r in &batch {
                report.first_seq.get_or_insert(r.seq);
                report.checked += 1;
                if r.seq != prev_seq + 1 {
                    let (from, to) = (prev_seq + 1, r.seq - 1);
                    report.findings.push(AuditFinding {
                        seq: from,
                        kind: FindingKind::Deleted,
                        message: if from == to {
                            format!("record {from} is missing (deleted)")
                        } else {
                            format!("records {from} to {to} are missing (deleted)")
                        },
                    });
                } else if !keys.verify_record(&prev_mac, &fields_of(r), &r.mac) {
                    report.findings.push(AuditFinding {
                        seq: r.seq,
                        kind: FindingKind::Edited,
                        message: format!(
                            "record {} does not match its MAC: edited (or forged)",
                            r.seq
                        ),
                    });
                }
                for c in by_seq.get(&r.seq).into_iter().flatten() {
                    if c.mac != r.mac {
                        report.findings.push(AuditFinding {
                            seq: r.seq,
                            kind: FindingKind::Checkpoint,
                            message: format!(
                                "record {} is not the one a checkpoint signed (line {}): \
                                 the chain was rewritten from there",
                                r.seq, c.line
                            ),
                        });
                    }
                }
                prev_seq = r.seq;
                prev_mac.clone_from(&r.mac);
            }
            if last_seq < prev_seq {
                break;
            }
        }
        report.head_seq = (report.checked > 0).then_some(prev_seq);
        if let Some(newest) = checkpoints
            .iter()
            .filter(|c| c.kind == "head")
            .map(|c| c.seq)
            .max()
        {
            if newest > prev_seq {
                report.findings.push(AuditFinding {
                    seq: prev_seq + 1,
                    kind: FindingKind::Truncated,
                    message: format!(
                        "the log ends at seq {prev_seq}, but a checkpoint signed seq {newest}: \
                         records {} to {newest} (at least) were removed from the end",
                        prev_seq + 1
                    ),
                });
            }
        }
        report.findings.sort_by_key(|f| f.seq);
        Ok(report)
    }

    fn audit_cut(&self) -> Result<Option<AuditCut>, Error> {
        let seq = self.store.meta(AUDIT_CUT_SEQ).map_err(store_err)?;
        let mac = self
            .store
            .meta(broked_store::AUDIT_CUT_MAC)
            .map_err(store_err)?;
        Ok(match (seq, mac) {
            (Some(seq), Some(mac)) => Some(AuditCut {
                seq: seq.parse().map_err(|_| {
                    Error::Store(broked_store::StoreError::Corrupt {
                        table: "meta",
                        reason: format!("{AUDIT_CUT_SEQ} is not a number"),
                    })
                })?,
                mac,
            }),
            _ => None,
        })
    }

    /// Removes the records older than `older_than` (never the newest) and signs the cut
    /// into the checkpoint file, so `verify` still accepts the chain.
    pub fn audit_prune(&self, older_than: Duration) -> Result<AuditPruned, Error> {
        self.audit_prune_as(&Actor::library(), older_than)
    }

    pub(crate) fn audit_prune_as(
        &self,
        actor: &Actor,
        older_than: Duration,
    ) -> Result<AuditPruned, Error> {
        let result = self.audit_prune_recorded(older_than);
        let detail = match &result {
            Ok(p) => format!(
                "older_than={}s removed={} cut={}",
                older_than.as_secs(),
                p.removed,
                p.cut_seq.unwrap_or(0)
            ),
            Err(_) => format!("older_than={}s", older_than.as_secs()),
        };
        self.record(actor, Event::new("audit_prune").detail(detail), &result);
        result
    }

    fn audit_prune_recorded(&self, older_than: Duration) -> Result<AuditPruned, Error> {
        let shared = &self.audit.shared;
        shared.keys()?;
        let before = time::OffsetDateTime::now_utc() - older_than;
        let before = crate::info::rfc3339(before);
        // The first record at or after the time: everything before it goes.
        let first_kept = self
            .store
            .list_audit(&AuditFilter {
                since: Some(before),
                limit: usize::MAX,
                ..AuditFilter::default()
            })
            .map_err(store_err)?
            .last()
            .map(|r| r.seq);
        let before_seq = match first_kept {
            Some(seq) => seq,
            None => self
                .store
                .audit_head()
                .map_err(store_err)?
                .map_or(0, |h| h.seq + 1),
        };
        let old_cut = self.audit_cut()?.map_or(0, |c| c.seq);
        let Some(cut) = self.store.prune_audit(before_seq).map_err(store_err)? else {
            return Ok(AuditPruned {
                removed: 0,
                cut_seq: None,
            });
        };
        shared.write_checkpoint("cut", cut.seq, &cut.mac)?;
        Ok(AuditPruned {
            removed: u64::try_from(cut.seq - old_cut).unwrap_or(0),
            cut_seq: Some(cut.seq),
        })
    }
}

/// A checkpoint line with a valid signature.
struct Checkpoint {
    line: usize,
    kind: String,
    seq: i64,
    mac: String,
}

/// The validly signed lines of the checkpoint file, and a finding for each other line. A
/// missing file has no checkpoints.
fn read_checkpoints(
    keys: &AuditKeys,
    path: &Path,
) -> Result<(Vec<Checkpoint>, Vec<AuditFinding>), Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => {
            return Err(Error::Options(format!(
                "cannot read the audit checkpoint file {}: {e}",
                path.display()
            )));
        }
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        let parsed = match parts.as_slice() {
            ["v1", kind @ ("head" | "cut"), seq, mac, at, sig] => seq
                .parse::<i64>()
                .ok()
                .filter(|s| *s > 0)
                .filter(|s| {
                    keys.verify_checkpoint(
                        u64::try_from(*s).unwrap_or(0),
                        &format!("{kind}:{mac}"),
                        at,
                        sig,
                    )
                })
                .map(|seq| Checkpoint {
                    line: i + 1,
                    kind: (*kind).to_owned(),
                    seq,
                    mac: (*mac).to_owned(),
                }),
            _ => None,
        };
        match parsed {
            Some(c) => good.push(c),
            None => bad.push(AuditFinding {
                seq: parts.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
                kind: FindingKind::Checkpoint,
                message: format!(
                    "line {} of {} is not a validly signed checkpoint",
                    i + 1,
                    path.display()
                ),
            }),
        }
    }
    Ok((good, bad))
}

fn entry(r: AuditRecord) -> AuditEntry {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    AuditEntry {
        seq: r.seq,
        fields: split(&r.fields),
        value_hashes: split(&r.value_hashes),
        at: r.at,
        actor: r.actor,
        action: r.action,
        conn_id: r.conn_id,
        outcome: r.outcome,
        request_id: r.request_id,
        detail: r.detail,
    }
}

fn invalid(field: &'static str, message: String) -> Error {
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

fn printable_detail(text: &str) -> String {
    text.chars()
        .take(256)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Lower-case hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
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
