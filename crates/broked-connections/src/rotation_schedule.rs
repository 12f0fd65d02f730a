//! Scheduled password rotation (issue 20, `docs/rotation.md`): `extra.rotate_every` (`30d`,
//! `12h`, `90m`, `2w`, `45s`) asks for a rotation every so long; [`Connections::rotate_due`]
//! (the server calls it in a background task) rotates each connection that is due.
//!
//! **Bookkeeping.** Every rotation — asked for or scheduled — leaves its time and outcome in
//! the store's `meta` setting [`SCHEDULE`] (a JSON object by conn_id: `last_rotated_at`,
//! `last_attempt_at`, `last_error`, `failures`, `since`; never a value), so that every
//! replica computes the same due time: the last rotation (or the time the schedule was first
//! seen) plus the interval plus a jitter that is fixed per connection and rotation (up to a
//! tenth of the interval, at most an hour), so that connections created together do not
//! rotate together. After a failure the next attempt is one interval, at most 5 minutes,
//! after the failed one.
//!
//! **One rotation per due time.** A due connection is rotated under its per-connection lock,
//! taken without waiting (a rotation in progress elsewhere is left alone), and only if it is
//! still due once the lock is held: several replicas running the schedule rotate it once.
//!
//! **Opened once per version.** A connection's `rotate_every` is in its sealed extra; the
//! parsed schedule is kept by the row's version (`schedule_cache.rs`), so a scan of the
//! schedules, and a list that shows them, open only rows written since they were last read.
//!
//! Not here: the rotation itself (`rotate_password.rs`), the timer (the server's).

use std::time::Duration;

use broked_core::{Connection, Secret};
use broked_store::StoredConnection;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::actor::Actor;
use crate::audit::Event;
use crate::connections::Connections;
use crate::error::{Error, store_err};
use crate::info::{ConnectionInfo, rfc3339};
use crate::listing::ListQuery;
use crate::rotate_password::{RotationReport, extra_map};
use crate::schedule_cache::{Facts, Schedule};

/// The `meta` setting with each connection's rotation times and last outcome.
pub const SCHEDULE: &str = "password_rotation.schedule";

/// The named lock around the schedule's read-modify-write.
const SCHEDULE_LOCK: &str = "password-rotation.schedule";

pub use broked_core::{ROTATE_EVERY_KEY, parse_rotate_every};

/// The longest jitter added to a due time.
const MAX_JITTER: Duration = Duration::from_secs(3_600);

/// The longest wait before a failed scheduled rotation is tried again.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// What `rotate_every` must look like (the message names no value).
const RULE: &str = broked_core::ROTATE_EVERY_RULE;

/// A connection's rotation schedule and the state of its rotations. No secret in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationStatus {
    pub conn_id: String,
    /// `extra.rotate_every` as written, when it is valid.
    pub rotate_every: Option<String>,
    /// Why `extra.rotate_every` is not a valid interval (nothing is scheduled then).
    pub schedule_error: Option<String>,
    /// RFC 3339: the last successful rotation, asked for or scheduled.
    pub last_rotated_at: Option<String>,
    /// RFC 3339: when the next scheduled rotation is due (with its jitter).
    pub next_due_at: Option<String>,
    /// RFC 3339: the last attempt, successful or not.
    pub last_attempt_at: Option<String>,
    /// Why the last attempt failed (none after a success). No secret in it.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// An unfinished rotation is in the journal (settled by the next rotation or recovery).
    pub pending: bool,
}

impl RotationStatus {
    /// The last attempt failed, or the schedule is invalid: what `/healthz` and the UI show.
    pub fn failing(&self) -> bool {
        self.last_error.is_some() || self.schedule_error.is_some()
    }

    /// How long until the next scheduled rotation is due (zero when it is due now); `None`
    /// without a schedule.
    pub fn due_in(&self) -> Option<Duration> {
        let due = self.next_due_at.as_deref().and_then(parse_time)?;
        Some(
            (due - OffsetDateTime::now_utc())
                .try_into()
                .unwrap_or_default(),
        )
    }
}

/// A connection's rotation as a list shows it (`GET /api/connections`): when it was last
/// rotated, when it is next due, and why its last rotation failed. No secret in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationSummary {
    /// RFC 3339: the last successful rotation, asked for or scheduled.
    pub last_rotated_at: Option<String>,
    /// RFC 3339: when the next scheduled rotation is due; `None` without a valid schedule.
    pub next_due_at: Option<String>,
    /// Why the last attempt failed, or why `extra.rotate_every` is invalid (as
    /// [`RotationStatus::last_error`] and [`RotationStatus::schedule_error`]).
    pub error: Option<String>,
}

impl RotationSummary {
    /// As [`RotationStatus::failing`].
    pub fn failing(&self) -> bool {
        self.error.is_some()
    }
}

/// One connection's record in [`SCHEDULE`], read.
#[derive(Default)]
struct Record {
    since: Option<OffsetDateTime>,
    last_rotated: Option<OffsetDateTime>,
    last_attempt: Option<OffsetDateTime>,
    last_error: Option<String>,
    failures: u32,
}

impl Record {
    fn read(v: Option<&Value>) -> Record {
        let Some(v) = v else {
            return Record::default();
        };
        let time = |k: &str| v.get(k).and_then(Value::as_str).and_then(parse_time);
        Record {
            since: time("since"),
            last_rotated: time("last_rotated_at"),
            last_attempt: time("last_attempt_at"),
            last_error: v
                .get("last_error")
                .and_then(Value::as_str)
                .map(str::to_owned),
            failures: v
                .get("failures")
                .and_then(Value::as_u64)
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// `extra.rotate_every` of `conn` (any spelling drivers would accept): `None` when absent.
fn schedule_of(conn: &Connection) -> Schedule {
    let extra = extra_map(conn);
    let (_, value) = extra
        .iter()
        .find(|(k, _)| k.trim().to_ascii_lowercase().replace('-', "_") == ROTATE_EVERY_KEY)?;
    Some(match value {
        Value::String(text) => parse_rotate_every(text).map(|d| (text.trim().to_owned(), d)),
        _ => Err(RULE.to_owned()),
    })
}

/// A jitter for the rotation of `conn_id` after `base`: fixed for the pair, so that every
/// replica computes the same due time; up to a tenth of `every`, at most [`MAX_JITTER`].
fn jitter(conn_id: &str, base: OffsetDateTime, every: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let max = (every / 10).min(MAX_JITTER).as_millis() as u64;
    if max == 0 {
        return Duration::ZERO;
    }
    // FNV-1a: stable across builds (std's hasher is not promised to be).
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    conn_id.hash(&mut h);
    base.unix_timestamp().hash(&mut h);
    Duration::from_millis(h.finish() % max)
}

struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// When the next scheduled rotation of `conn_id` is due.
fn next_due(conn_id: &str, every: Duration, record: &Record) -> Option<OffsetDateTime> {
    let (base, mut due) = match (record.last_rotated, record.since) {
        (Some(last), _) => (last, last + every + jitter(conn_id, last, every)),
        // Never rotated: at once (plus the jitter) from when a scheduler first saw the
        // schedule, so a schedule that cannot work shows at once, not one interval later.
        (None, Some(since)) => (since, since + jitter(conn_id, since, every)),
        (None, None) => return None,
    };
    if let (Some(_), Some(attempt)) = (&record.last_error, record.last_attempt) {
        if attempt >= base {
            due = due.max(attempt + every.min(MAX_RETRY));
        }
    }
    Some(due)
}

fn status(conn_id: &str, schedule: Schedule, record: &Record, pending: bool) -> RotationStatus {
    let (rotate_every, schedule_error, next_due_at) = match schedule {
        None => (None, None, None),
        Some(Err(e)) => (None, Some(e), None),
        Some(Ok((text, every))) => {
            // Not seen by a scheduler yet: due at once (its jitter is added when it is).
            let due = next_due(conn_id, every, record).unwrap_or_else(OffsetDateTime::now_utc);
            (Some(text), None, Some(rfc3339(due)))
        }
    };
    RotationStatus {
        conn_id: conn_id.to_owned(),
        rotate_every,
        schedule_error,
        last_rotated_at: record.last_rotated.map(rfc3339),
        next_due_at,
        last_attempt_at: record.last_attempt.map(rfc3339),
        last_error: record.last_error.clone(),
        failures: record.failures,
        pending,
    }
}

/// Connections per page of the schedule's scan ([`Connections::rotation_statuses`]); a few in
/// the unit tests, whose scans so cross pages.
const SCAN_PAGE: usize = if cfg!(test) { 2 } else { 4_096 };

impl Connections {
    /// The rotation schedule and state of `conn_id` ([`Error::NotFound`] if there is none).
    pub fn rotation_status(&self, conn_id: &str) -> Result<RotationStatus, Error> {
        let row = self.stored(conn_id)?;
        let (sched, _) = self.facts_of_row(&row)?;
        let schedule = self.schedule_records()?;
        let pending = self.pending_rotations()?.iter().any(|p| p == conn_id);
        Ok(status(
            conn_id,
            sched,
            &Record::read(schedule.get(conn_id)),
            pending,
        ))
    }

    /// [`Connections::rotation_status`] of every connection that has a schedule, was
    /// rotated, or has a rotation in the journal; sorted by conn_id. A connection whose
    /// extra cannot be opened is left out (and logged). Only rows written since the last
    /// call are opened (`schedule_cache.rs`).
    pub fn rotation_statuses(&self) -> Result<Vec<RotationStatus>, Error> {
        // Nothing committed since the last whole scan (the generation is read before
        // anything else): the same rows, with their times computed again — no page is read
        // (issue 19: a scan of a million connections every 30 s took a core for a second).
        let generation = self.store.generation().map_err(store_err)?;
        if let Some(rows) = self.schedules.scanned(generation) {
            let schedule = self.schedule_records()?;
            return Ok(rows
                .into_iter()
                .map(|(id, sched, pending)| {
                    status(&id, sched, &Record::read(schedule.get(&id)), pending)
                })
                .collect());
        }
        let schedule = self.schedule_records()?;
        let pending = self.pending_rotations()?;
        // The connections in pages, without their sealed values (issue 19: with a million
        // connections, reading every row with its blobs at once held a gigabyte every scan);
        // a row's extra is read and opened only when its schedule is not kept.
        let scan = self.schedules.begin_scan();
        let mut out = Vec::new();
        let mut rows = Vec::new();
        self.each_listed(|id, facts| {
            // Left out: deleted since the page was read, or an extra that does not open.
            let Some((sched, _)) = facts else { return };
            let is_pending = pending.iter().any(|p| p == id);
            if sched.is_none() && !schedule.contains_key(id) && !is_pending {
                return;
            }
            rows.push((id.to_owned(), sched.clone(), is_pending));
            out.push(status(
                id,
                sched,
                &Record::read(schedule.get(id)),
                is_pending,
            ));
        })?;
        // Schedules of connections this scan did not meet (deleted, or without an extra now).
        self.schedules.end_scan(scan);
        self.schedules.keep_scanned((generation, rows));
        Ok(out)
    }

    /// The rotation of each of `items` as a list shows it ([`RotationSummary`]; the default
    /// for a connection never rotated and without a schedule). Reads the schedule's `meta`
    /// once; a connection's extra is opened only when it changed since its schedule was
    /// last read (by this call, a scan or a status). A connection whose extra cannot be
    /// opened (or that was deleted meanwhile) shows no schedule.
    pub fn rotation_summaries(
        &self,
        items: &[ConnectionInfo],
    ) -> Result<Vec<RotationSummary>, Error> {
        let records = self.schedule_records()?;
        let mut out = Vec::with_capacity(items.len());
        for (info, sched) in items.iter().zip(self.listed_schedules(items)) {
            let id = info.conn_id.as_str();
            // No schedule shown for one deleted meanwhile or whose extra does not open.
            let sched = sched.flatten();
            let record = records.get(id);
            if sched.is_none() && record.is_none() {
                out.push(RotationSummary::default());
                continue;
            }
            let s = status(id, sched, &Record::read(record), false);
            out.push(RotationSummary {
                last_rotated_at: s.last_rotated_at,
                next_due_at: s.next_due_at,
                error: s.last_error.or(s.schedule_error),
            });
        }
        Ok(out)
    }

    /// The schedule of each of `items` (listed connections, without their sealed values):
    /// the one kept for its version, none without an extra, else its extra read and opened
    /// (and kept). `None` for a connection deleted since it was listed, or whose extra
    /// cannot be read or opened (logged).
    fn listed_schedules(&self, items: &[ConnectionInfo]) -> Vec<Option<Schedule>> {
        self.listed_facts(items)
            .into_iter()
            .map(|f| f.map(|(schedule, _)| schedule))
            .collect()
    }

    /// [`Connections::listed_schedules`] with the bastions each names (`Facts`).
    fn listed_facts(&self, items: &[ConnectionInfo]) -> Vec<Option<Facts>> {
        let kept = self.schedules.lookup(
            items
                .iter()
                .map(|i| (i.conn_id.as_str(), i.version, i.updated_at.as_str())),
        );
        items
            .iter()
            .zip(kept)
            .map(|(info, kept)| match kept {
                Some(f) => Some(f),
                None if !info.has_extra => Some((None, Vec::new())),
                None => match self
                    .stored(info.conn_id.as_str())
                    .and_then(|row| self.facts_of_row(&row))
                {
                    Ok(f) => Some(f),
                    Err(Error::NotFound(_)) => None,
                    Err(e) => {
                        tracing::warn!(conn_id = %info.conn_id, error = %e,
                            "cannot read the extra of a connection");
                        None
                    }
                },
            })
            .collect()
    }

    /// What `row`'s extra says of its schedule and bastions: kept for its version, or its
    /// extra opened, parsed and kept.
    fn facts_of_row(&self, row: &StoredConnection) -> Result<Facts, Error> {
        if row.extra.is_none() {
            return Ok((None, Vec::new()));
        }
        if let Some(Some(f)) = self
            .schedules
            .lookup(std::iter::once((
                row.conn_id.as_str(),
                row.version,
                row.updated_at.as_str(),
            )))
            .pop()
        {
            return Ok(f);
        }
        self.schedules.count_open();
        let conn = self.decrypt_some(row, false, true)?;
        let tunnel = crate::tunnel::ssh_tunnel_refs(conn.extra.as_ref().map(Secret::expose))
            .unwrap_or_default();
        let facts = (schedule_of(&conn), tunnel);
        self.schedules.put(row, &facts);
        Ok(facts)
    }

    /// The connections whose `extra.ssh_tunnel` names `conn_id` (`tunnel.rs`), sorted: every
    /// connection in pages without its sealed values, an extra opened only when its row
    /// changed since it was last read (issue 19: the check of a bastion's users before a
    /// delete read and opened every row at once — 1.1 GB and seconds at a million). A
    /// connection whose extra does not open is skipped.
    pub(crate) fn tunnel_users(&self, conn_id: &str) -> Result<Vec<String>, Error> {
        let mut users = Vec::new();
        self.each_listed(|id, facts| {
            if id != conn_id && facts.is_some_and(|(_, tunnel)| tunnel.iter().any(|b| b == conn_id))
            {
                users.push(id.to_owned());
            }
        })?;
        users.sort();
        Ok(users)
    }

    /// Every connection, in pages of [`SCAN_PAGE`] without their sealed values, with what its
    /// extra says ([`Connections::listed_facts`]; `None`: deleted meanwhile, or an extra that
    /// does not open).
    fn each_listed(&self, mut f: impl FnMut(&str, Option<Facts>)) -> Result<(), Error> {
        let mut query = ListQuery {
            limit: Some(SCAN_PAGE),
            ..ListQuery::default()
        };
        loop {
            let page = self.list_page(&query)?;
            for (info, facts) in page.items.iter().zip(self.listed_facts(&page.items)) {
                f(info.conn_id.as_str(), facts);
            }
            match page.next_after {
                Some(after) => query.after = Some(after),
                None => return Ok(()),
            }
        }
    }

    /// Rotates every connection whose `extra.rotate_every` is due (one at a time, each under
    /// its lock, only if still due once the lock is held), then returns every connection's
    /// [`RotationStatus`] as [`Connections::rotation_statuses`]. A failed rotation is in its
    /// status (`last_error`), not an error of this call; the server calls it in a loop.
    pub async fn rotate_due(&self) -> Result<Vec<RotationStatus>, Error> {
        let actor = Actor::named("rotation-scheduler");
        let statuses = self.rotation_statuses()?;
        // A schedule seen for the first time starts now (due at once, plus its jitter).
        let unseen: Vec<&str> = statuses
            .iter()
            .filter(|s| s.rotate_every.is_some() && s.last_rotated_at.is_none())
            .map(|s| s.conn_id.as_str())
            .collect();
        if !unseen.is_empty() {
            self.update_schedule(|records| {
                let now = rfc3339(OffsetDateTime::now_utc());
                let mut changed = false;
                for id in &unseen {
                    let entry = records.entry((*id).to_owned()).or_insert_with(|| json!({}));
                    if entry.get("since").is_none() {
                        entry["since"] = Value::String(now.clone());
                        changed = true;
                    }
                }
                changed
            })?;
        }
        let now = OffsetDateTime::now_utc();
        for s in &statuses {
            let Some(due) = s.next_due_at.as_deref().and_then(parse_time) else {
                continue;
            };
            if due > now {
                continue;
            }
            // Being rotated elsewhere: that rotation is the one due.
            let Some(_lock) = self.lock_connection(&s.conn_id, false).await? else {
                continue;
            };
            // Another replica may have rotated it between the read and the lock.
            let still_due = match self.rotation_status(&s.conn_id) {
                Ok(now_status) => now_status
                    .next_due_at
                    .as_deref()
                    .and_then(parse_time)
                    .is_some_and(|d| d <= OffsetDateTime::now_utc()),
                Err(Error::NotFound(_)) => false,
                Err(e) => return Err(e),
            };
            if !still_due {
                continue;
            }
            tracing::info!(conn_id = %s.conn_id, "scheduled password rotation is due");
            let result = self.rotate_locked(&actor, &s.conn_id).await;
            if let Err(e) = &result {
                tracing::warn!(conn_id = %s.conn_id, error = %e, "scheduled password rotation failed");
            }
            self.after_rotation(&actor, &s.conn_id, true, &result);
        }
        self.rotation_statuses()
    }

    /// After a rotation of `conn_id`, asked for or `scheduled`: its time and outcome into
    /// [`SCHEDULE`], and the audit record `rotate_password`. A failure to write either is
    /// logged; the rotation's result stands.
    pub(crate) fn after_rotation(
        &self,
        actor: &Actor,
        conn_id: &str,
        scheduled: bool,
        result: &Result<RotationReport, Error>,
    ) {
        let now = rfc3339(OffsetDateTime::now_utc());
        let noted = self.update_schedule(|records| match result {
            Ok(_) => {
                records.insert(
                    conn_id.to_owned(),
                    json!({"last_rotated_at": now, "last_attempt_at": now, "failures": 0}),
                );
                true
            }
            Err(Error::NotFound(_)) => records.remove(conn_id).is_some(),
            Err(e) => {
                let entry = records
                    .entry(conn_id.to_owned())
                    .or_insert_with(|| json!({}));
                let failures = entry.get("failures").and_then(Value::as_u64).unwrap_or(0);
                entry["last_attempt_at"] = Value::String(now.clone());
                entry["last_error"] = Value::String(e.to_string());
                entry["failures"] = json!(failures.saturating_add(1));
                true
            }
        });
        if let Err(e) = noted {
            tracing::warn!(conn_id, error = %e, "cannot note the rotation in the schedule");
        }
        let mut detail = format!("scheduled={scheduled}");
        if let Ok(r) = result {
            detail.push_str(&format!(" role={} sent_as={}", r.role, r.sent_as.as_str()));
            if let Some(via) = &r.via {
                detail.push_str(&format!(" via={via}"));
            }
        }
        let event = Event::new("rotate_password")
            .conn(conn_id)
            .fields(vec!["password"])
            .detail(detail);
        self.record(actor, event, result);
    }

    fn schedule_records(&self) -> Result<Map<String, Value>, Error> {
        let text = self.store.meta(SCHEDULE).map_err(store_err)?;
        Ok(match text.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(map))) => map,
            Some(_) => {
                tracing::error!("the password rotation schedule is not a JSON object: ignored");
                Map::new()
            }
            None => Map::new(),
        })
    }

    /// A read-modify-write of [`SCHEDULE`] under its lock; `f` says whether it changed it.
    fn update_schedule(
        &self,
        f: impl FnOnce(&mut Map<String, Value>) -> bool,
    ) -> Result<(), Error> {
        let _lock = self.store.lock_named(SCHEDULE_LOCK).map_err(store_err)?;
        let mut records = self.schedule_records()?;
        if !f(&mut records) {
            return Ok(());
        }
        self.store
            .set_meta(SCHEDULE, &Value::Object(records).to_string())
            .map_err(store_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_have_a_fixed_bounded_jitter_and_back_off_after_a_failure() {
        let base = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let every = Duration::from_secs(30 * 86_400);
        let record = Record {
            last_rotated: Some(base),
            ..Record::default()
        };
        let due = next_due("prod-pg", every, &record).unwrap();
        assert!(due >= base + every && due <= base + every + MAX_JITTER);
        assert_eq!(Some(due), next_due("prod-pg", every, &record), "fixed");
        // Connections rotated together spread out.
        let spread: std::collections::BTreeSet<_> = (0..20)
            .map(|i| next_due(&format!("pg-{i}"), every, &record).unwrap())
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
        // A tenth of a short interval at most.
        let short = Duration::from_secs(2);
        let due = next_due("c", short, &record).unwrap();
        assert!(due >= base + short && due <= base + short + Duration::from_millis(200));
        // After a failure: one interval later, at most 5 minutes.
        let failed = Record {
            last_rotated: Some(base),
            last_attempt: Some(base + every + Duration::from_secs(10)),
            last_error: Some("refused".into()),
            failures: 1,
            ..Record::default()
        };
        assert_eq!(
            next_due("prod-pg", every, &failed),
            Some(base + every + Duration::from_secs(10) + MAX_RETRY)
        );
        // Never rotated, never seen: no base.
        assert_eq!(next_due("c", every, &Record::default()), None);
        // Never rotated, seen: at once from then, plus the jitter (so a schedule that cannot
        // work fails at once); after a failure, the retry as above.
        let seen = Record {
            since: Some(base),
            ..Record::default()
        };
        let due = next_due("prod-pg", every, &seen).unwrap();
        assert!(due >= base && due <= base + MAX_JITTER, "{due}");
        let failed = Record {
            since: Some(base),
            last_attempt: Some(base + Duration::from_secs(10)),
            last_error: Some("refused".into()),
            failures: 1,
            ..Record::default()
        };
        assert_eq!(
            next_due("prod-pg", every, &failed),
            Some(due.max(base + Duration::from_secs(10) + MAX_RETRY))
        );
    }

    fn open(dir: &std::path::Path) -> Connections {
        Connections::open(dir.join("broked.db")).unwrap()
    }

    fn create(c: &Connections, id: &str, extra: Option<&str>) {
        c.create(broked_core::ConnectionInput {
            conn_id: Some(id.into()),
            conn_type: Some("postgres".into()),
            host: Some("db.example.com".into()),
            login: Some("etl".into()),
            password: Some("sched-pw-4c1f".into()),
            extra: extra.map(Into::into),
            ..Default::default()
        })
        .unwrap();
    }

    fn set_extra(c: &Connections, id: &str, extra: &str) {
        let update = crate::ConnectionUpdate {
            extra: crate::SecretUpdate::Set(extra.into()),
            ..Default::default()
        };
        c.update(id, update, crate::UpdateMode::Merge).unwrap();
    }

    #[test]
    fn a_scan_opens_only_the_rows_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        create(&c, "every-30d", Some(r#"{"rotate_every": "30d"}"#));
        create(&c, "no-schedule", Some(r#"{"application_name": "etl"}"#));
        create(&c, "no-extra", None);
        let every = |statuses: &[RotationStatus], id: &str| {
            statuses
                .iter()
                .find(|s| s.conn_id == id)
                .and_then(|s| s.rotate_every.clone())
        };

        let first = c.rotation_statuses().unwrap();
        assert_eq!(every(&first, "every-30d").as_deref(), Some("30d"));
        // Both rows with extra were opened; the one without has nothing to open.
        assert_eq!(c.schedules.opens(), 2);
        // Before a scheduler has seen it, a schedule is due "now" plus its jitter: that moves
        // with the clock, so compare the statuses without it.
        let steady = |mut statuses: Vec<RotationStatus>| {
            for s in &mut statuses {
                s.next_due_at = None;
            }
            statuses
        };
        for _ in 0..3 {
            assert_eq!(
                steady(c.rotation_statuses().unwrap()),
                steady(first.clone())
            );
        }
        assert_eq!(
            c.schedules.opens(),
            2,
            "a scan of unchanged rows opens nothing"
        );

        // A list of them, and one status, open nothing either.
        let page = c.list_page(&crate::ListQuery::default()).unwrap();
        let summaries = c.rotation_summaries(&page.items).unwrap();
        assert_eq!(summaries.len(), 3);
        assert!(summaries[0].next_due_at.is_some(), "{summaries:?}");
        assert_eq!(summaries[1], RotationSummary::default());
        assert_eq!(summaries[2], RotationSummary::default());
        c.rotation_status("every-30d").unwrap();
        assert_eq!(c.schedules.opens(), 2);

        // A changed rotate_every is seen by the next scan, which opens only that row.
        set_extra(&c, "every-30d", r#"{"rotate_every": "12h"}"#);
        let after = c.rotation_statuses().unwrap();
        assert_eq!(every(&after, "every-30d").as_deref(), Some("12h"));
        assert_eq!(c.schedules.opens(), 3);
        // So is a schedule added to a row that had none.
        set_extra(&c, "no-schedule", r#"{"rotate_every": "2w"}"#);
        let after = c.rotation_statuses().unwrap();
        assert_eq!(every(&after, "no-schedule").as_deref(), Some("2w"));
        assert_eq!(c.schedules.opens(), 4);
        c.rotation_statuses().unwrap();
        assert_eq!(c.schedules.opens(), 4);

        // Another handle on the same database (another process) has its own view: it opens
        // each row once, and sees a change this handle made.
        let other = open(dir.path());
        assert_eq!(
            every(&other.rotation_statuses().unwrap(), "no-schedule").as_deref(),
            Some("2w")
        );
        set_extra(&c, "no-schedule", r#"{"rotate_every": "3w"}"#);
        assert_eq!(
            every(&other.rotation_statuses().unwrap(), "no-schedule").as_deref(),
            Some("3w")
        );
        assert_eq!(other.schedules.opens(), 3);

        // A deleted connection leaves the cache, with a schedule or without; so does the
        // former version of a changed row.
        assert_eq!(c.schedules.len(), 2);
        c.delete("every-30d", false).unwrap();
        c.rotation_statuses().unwrap();
        assert!(!c.schedules.holds("every-30d"));
        assert_eq!(c.schedules.len(), 1);
        set_extra(&c, "no-schedule", r#"{"application_name": "x"}"#);
        c.rotation_statuses().unwrap();
        assert!(!c.schedules.holds("no-schedule"), "its schedule is gone");
        set_extra(&c, "no-schedule", r#"{"application_name": "y"}"#);
        c.rotation_statuses().unwrap();
        assert_eq!(c.schedules.len(), 1, "only the current version is kept");
        c.delete("no-schedule", false).unwrap();
        c.rotation_statuses().unwrap();
        assert_eq!(c.schedules.len(), 0);
    }

    #[test]
    fn a_scan_with_nothing_committed_since_reads_no_page() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        create(&c, "every-30d", Some(r#"{"rotate_every": "30d"}"#));
        create(&c, "plain", None);
        let steady = |mut statuses: Vec<RotationStatus>| {
            for s in &mut statuses {
                s.next_due_at = None;
            }
            statuses
        };
        let first = c.rotation_statuses().unwrap();
        assert_eq!(c.schedules.scans(), 1);
        for _ in 0..3 {
            assert_eq!(
                steady(c.rotation_statuses().unwrap()),
                steady(first.clone())
            );
        }
        assert_eq!(c.schedules.scans(), 1, "nothing committed: no page read");

        // A commit of another handle (another process) is seen by the next call.
        let other = open(dir.path());
        set_extra(&other, "plain", r#"{"rotate_every": "1d"}"#);
        let after = c.rotation_statuses().unwrap();
        assert_eq!(c.schedules.scans(), 2);
        let ids: Vec<&str> = after.iter().map(|s| s.conn_id.as_str()).collect();
        assert_eq!(ids, ["every-30d", "plain"]);
        assert_eq!(after[1].rotate_every.as_deref(), Some("1d"));
        other.delete("every-30d", false).unwrap();
        let after = c.rotation_statuses().unwrap();
        assert_eq!(c.schedules.scans(), 3);
        assert_eq!(after.len(), 1);
        c.rotation_statuses().unwrap();
        assert_eq!(c.schedules.scans(), 3);
    }

    #[test]
    fn the_users_of_a_bastion_are_found_opening_only_changed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        c.create(broked_core::ConnectionInput {
            conn_id: Some("jump".into()),
            conn_type: Some("sftp".into()),
            host: Some("bastion.example.com".into()),
            login: Some("jump".into()),
            password: Some("jump-pw-77aa".into()),
            extra: Some(
                r#"{"host_key": "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}"#.into(),
            ),
            ..Default::default()
        })
        .unwrap();
        create(&c, "behind", Some(r#"{"ssh_tunnel": "jump"}"#));
        create(
            &c,
            "behind-too",
            Some(r#"{"ssh_tunnel": ["jump"], "rotate_every": "1d"}"#),
        );
        create(&c, "plain", Some(r#"{"application_name": "etl"}"#));
        create(&c, "bare", None);
        assert_eq!(
            c.tunneled_through("jump").unwrap(),
            ["behind", "behind-too"]
        );
        assert_eq!(c.schedules.opens(), 4, "each row with an extra opened once");
        assert_eq!(
            c.tunneled_through("jump").unwrap(),
            ["behind", "behind-too"]
        );
        assert!(c.tunneled_through("plain").unwrap().is_empty());
        assert_eq!(
            c.schedules.opens(),
            4,
            "unchanged rows are not opened again"
        );
        // A changed extra is read again; the delete check sees it. (A changed tunnel takes
        // the password again.)
        let untunnel = |id: &str, extra: &str| {
            let update = crate::ConnectionUpdate {
                extra: crate::SecretUpdate::Set(extra.into()),
                password: crate::SecretUpdate::Set("sched-pw-4c1f".into()),
                ..Default::default()
            };
            c.update(id, update, crate::UpdateMode::Merge).unwrap();
        };
        untunnel("behind", r#"{"application_name": "moved"}"#);
        assert_eq!(c.tunneled_through("jump").unwrap(), ["behind-too"]);
        assert_eq!(c.schedules.opens(), 5);
        assert!(
            c.delete("jump", false).is_err(),
            "still the bastion of behind-too"
        );
        untunnel("behind-too", r#"{"rotate_every": "1d"}"#);
        c.delete("jump", false).unwrap();
    }

    #[test]
    fn a_delete_of_a_connection_that_cannot_be_a_bastion_reads_no_other_row() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        create(&c, "plain", Some(r#"{"application_name": "etl"}"#));
        create(&c, "other", Some(r#"{"application_name": "other"}"#));
        create(&c, "gone", None);
        // A postgres connection is no bastion: its delete opens no other row's extra (a walk
        // would open `plain` and `other`, neither read yet).
        c.delete("gone", false).unwrap();
        assert_eq!(c.schedules.opens(), 0);
        c.create(broked_core::ConnectionInput {
            conn_id: Some("jump".into()),
            conn_type: Some("sftp".into()),
            host: Some("bastion.example.com".into()),
            login: Some("jump".into()),
            password: Some("jump-pw-91bd".into()),
            ..Default::default()
        })
        .unwrap();
        // An sftp one may be: the others are read.
        c.delete("jump", false).unwrap();
        assert_eq!(c.schedules.opens(), 2);
        c.delete("plain", false).unwrap();
        assert_eq!(c.schedules.opens(), 2);
    }

    #[test]
    fn list_rows_show_the_last_rotation_the_due_time_and_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        create(&c, "a-rotated", Some(r#"{"rotate_every": "30d"}"#));
        create(&c, "b-failing", Some(r#"{"rotate_every": "12h"}"#));
        create(&c, "c-plain", None);
        create(&c, "d-once", None);
        let actor = Actor::named("test");
        let report = |id: &str| RotationReport {
            conn_id: id.into(),
            role: "etl".into(),
            previous_role: None,
            via: None,
            sent_as: crate::SentAs::ScramVerifier,
            rotated_at: rfc3339(OffsetDateTime::now_utc()),
            recovered: Vec::new(),
        };
        c.after_rotation(&actor, "a-rotated", true, &Ok(report("a-rotated")));
        c.after_rotation(&actor, "d-once", false, &Ok(report("d-once")));
        let refused = Error::Rotation {
            conn_id: "b-failing".into(),
            reason: "the server refused the login".into(),
        };
        c.after_rotation(&actor, "b-failing", true, &Err(refused));

        let page = c.list_page(&crate::ListQuery::default()).unwrap();
        let rows = c.rotation_summaries(&page.items).unwrap();
        let statuses = c.rotation_statuses().unwrap();
        let status = |id: &str| statuses.iter().find(|s| s.conn_id == id).unwrap();

        // Rotated, with a schedule: both times, as the status has them.
        let a = status("a-rotated");
        assert!(a.last_rotated_at.is_some() && a.next_due_at.is_some());
        assert_eq!(rows[0].last_rotated_at, a.last_rotated_at);
        assert_eq!(rows[0].next_due_at, a.next_due_at);
        assert!(!rows[0].failing());
        // Failing: why, and the retry time.
        assert!(rows[1].failing());
        assert_eq!(rows[1].error, status("b-failing").last_error);
        assert!(
            rows[1]
                .error
                .as_deref()
                .unwrap()
                .contains("refused the login")
        );
        assert_eq!(rows[1].next_due_at, status("b-failing").next_due_at);
        // Never rotated, no schedule: nothing.
        assert_eq!(rows[2], RotationSummary::default());
        // Rotated once by hand, no schedule: when, and nothing due.
        assert!(rows[3].last_rotated_at.is_some());
        assert_eq!(rows[3].next_due_at, None);
        assert!(!rows[3].failing());
        // No password anywhere in them.
        assert!(!format!("{rows:?}").contains("sched-pw-4c1f"));
    }

    /// Writes `extra` into the row of `id` without validation: a row saved before an invalid
    /// `rotate_every` was refused on save.
    fn write_unchecked(c: &Connections, id: &str, extra: &str) {
        let row = c.stored(id).unwrap();
        let mut conn = c.decrypt(&row).unwrap();
        conn.extra = Some(extra.into());
        let now = rfc3339(OffsetDateTime::now_utc());
        let sealed = c
            .sealer
            .seal_row(
                &c.sealer.key_checked().unwrap(),
                &conn,
                None,
                &row.created_at,
                &now,
                row.version,
            )
            .unwrap();
        c.store.update_connection(&sealed, 10).unwrap();
    }

    #[test]
    fn a_row_saved_with_an_invalid_rotate_every_shows_it_and_schedules_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        create(&c, "legacy", Some(r#"{"rotate_every": "30d"}"#));
        // Refused on save, by every path (validation: broked-core's target.rs).
        let update = crate::ConnectionUpdate {
            extra: crate::SecretUpdate::Set(r#"{"rotate_every": "soon-Kp2"}"#.into()),
            ..Default::default()
        };
        let e = c
            .update("legacy", update, crate::UpdateMode::Merge)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("extra.rotate_every") && !e.contains("Kp2"),
            "{e}"
        );

        write_unchecked(&c, "legacy", r#"{"rotate_every": "soon-Kp2"}"#);
        let status = c.rotation_status("legacy").unwrap();
        assert_eq!(status.schedule_error.as_deref(), Some(RULE));
        assert!(status.failing());
        assert_eq!((status.rotate_every, status.next_due_at), (None, None));
        let page = c.list_page(&crate::ListQuery::default()).unwrap();
        let row = &c.rotation_summaries(&page.items).unwrap()[0];
        assert_eq!(row.error.as_deref(), Some(RULE));
        assert_eq!(row.next_due_at, None);
        assert!(row.failing());
        // Asked for, its rotation is refused before the server is changed: the new password
        // could not be stored (the row no longer passes validation).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match rt.block_on(c.rotate_password("legacy")) {
            Err(Error::Invalid(e)) => {
                assert!(e.to_string().contains("extra.rotate_every"), "{e}")
            }
            other => panic!("refused as invalid before anything changed: {other:?}"),
        }
    }
}
