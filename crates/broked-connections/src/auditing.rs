//! The audit log's side of [`Connections`]: each call recorded with its actor and outcome
//! ([`Connections::record`], reveals failing closed), refused authentications, flushing, and
//! the log's own calls — hash, list, verify (the chain and the checkpoint file), prune.
//! The records, the chain's keys and the background flusher are in `audit.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use broked_core::Secret;
use broked_crypto::{AuditKeys, VALUE_HASH_PREFIX};
use broked_store::{AUDIT_CUT_SEQ, AuditCut, AuditFilter, AuditRecord, Logged, WriteLog};

use crate::actor::Actor;
use crate::audit::{
    AuditEntry, AuditFinding, AuditPruned, AuditQuery, AuditReport, Event, FindingKind,
    error_class, fields_of, invalid, new_record, parse_since, printable_detail,
};
use crate::connections::Connections;
use crate::error::{Error, store_err};

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
        let record = self.event_record(actor, &event, outcome)?;
        self.audit.shared.append(vec![record]).map(|_| ())
    }

    /// The record of `event` (before the store gives it `seq` and MAC).
    fn event_record(
        &self,
        actor: &Actor,
        event: &Event,
        outcome: &str,
    ) -> Result<AuditRecord, Error> {
        let keys = self.audit.shared.keys()?;
        let hashes = event
            .values
            .iter()
            .map(|v| keys.value_hash(v.expose().as_bytes()))
            .collect();
        Ok(new_record(
            actor,
            event.action,
            event.conn_id.clone(),
            event.fields.clone(),
            outcome,
            hashes,
            event.detail.clone(),
        ))
    }

    /// What a change carries into its own transaction: the record of `event` done by
    /// `actor` with outcome `ok` — appended only if the write changes data. An error if the
    /// record cannot be made (the audit keys cannot be had): the change is then not made
    /// either, and [`Connections::settle_write`] records the failure as it can.
    pub(crate) fn audit_log(&self, actor: &Actor, event: &Event) -> Result<WriteLog, Error> {
        Ok(WriteLog {
            audit: vec![self.event_record(actor, event, "ok")?],
            mac: Some(self.audit.shared.mac()?),
            ..WriteLog::none()
        })
    }

    /// The end of an audited change whose write carried its record ([`Connections::audit_log`]):
    /// if the write stored it, it is counted toward the next checkpoint; otherwise (the call
    /// failed or changed nothing) `event` is recorded now with the call's outcome, as
    /// [`Connections::record`] does.
    pub(crate) fn settle_write<T>(
        &self,
        actor: &Actor,
        event: Event,
        result: Result<(T, Logged), Error>,
    ) -> Result<T, Error> {
        match result {
            Ok((value, logged)) if !logged.audit.is_empty() => {
                self.audit.shared.appended(&logged.audit);
                Ok(value)
            }
            other => {
                let result = other.map(|(value, _)| value);
                self.record(actor, event, &result);
                result
            }
        }
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
