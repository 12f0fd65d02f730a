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
//! Not here: the rotation itself (`rotate_password.rs`), the timer (the server's).

use std::time::Duration;

use broked_core::Connection;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::actor::Actor;
use crate::audit::Event;
use crate::connections::Connections;
use crate::error::{Error, store_err};
use crate::info::rfc3339;
use crate::rotate_password::{RotationReport, extra_map};

/// The `meta` setting with each connection's rotation times and last outcome.
pub const SCHEDULE: &str = "password_rotation.schedule";

/// The named lock around the schedule's read-modify-write.
const SCHEDULE_LOCK: &str = "password-rotation.schedule";

/// The `extra` key with a connection's rotation interval.
pub const ROTATE_EVERY_KEY: &str = "rotate_every";

/// The longest jitter added to a due time.
const MAX_JITTER: Duration = Duration::from_secs(3_600);

/// The longest wait before a failed scheduled rotation is tried again.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// What `rotate_every` must look like (the message names no value).
const RULE: &str = "extra.rotate_every must be a duration like 30d, 12h, 90m, 2w or 45s \
                    (a whole number, 1 or more, and one of s, m, h, d, w)";

/// Parses a rotation interval: a whole number and `s`, `m`, `h`, `d` or `w` (`30d`, `45s`).
pub fn parse_rotate_every(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Some(n) = text.strip_suffix('s') {
        return match n.parse::<u64>() {
            Ok(n) if (1..=100_000 * 86_400).contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(RULE.to_owned()),
        };
    }
    crate::tokens::parse_duration(text).map_err(|_| RULE.to_owned())
}

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
fn schedule_of(conn: &Connection) -> Option<Result<(String, Duration), String>> {
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
    let base = record.last_rotated.or(record.since)?;
    let mut due = base + every + jitter(conn_id, base, every);
    if let (Some(_), Some(attempt)) = (&record.last_error, record.last_attempt) {
        if attempt >= base {
            due = due.max(attempt + every.min(MAX_RETRY));
        }
    }
    Some(due)
}

fn status(
    conn_id: &str,
    schedule: Option<Result<(String, Duration), String>>,
    record: &Record,
    pending: bool,
) -> RotationStatus {
    let (rotate_every, schedule_error, next_due_at) = match schedule {
        None => (None, None, None),
        Some(Err(e)) => (None, Some(e), None),
        Some(Ok((text, every))) => {
            // Not seen by a scheduler yet: due at once.
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

impl Connections {
    /// The rotation schedule and state of `conn_id` ([`Error::NotFound`] if there is none).
    pub fn rotation_status(&self, conn_id: &str) -> Result<RotationStatus, Error> {
        let conn = self.decrypt_some(&self.stored(conn_id)?, false, true)?;
        let schedule = self.schedule_records()?;
        let pending = self.pending_rotations()?.iter().any(|p| p == conn_id);
        Ok(status(
            conn_id,
            schedule_of(&conn),
            &Record::read(schedule.get(conn_id)),
            pending,
        ))
    }

    /// [`Connections::rotation_status`] of every connection that has a schedule, was
    /// rotated, or has a rotation in the journal; sorted by conn_id. A connection whose
    /// extra cannot be opened is left out (and logged).
    pub fn rotation_statuses(&self) -> Result<Vec<RotationStatus>, Error> {
        let schedule = self.schedule_records()?;
        let pending = self.pending_rotations()?;
        let mut out = Vec::new();
        for row in self.stored_all()? {
            let conn = match self.decrypt_some(&row, false, true) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(conn_id = %row.conn_id, error = %e,
                        "cannot read the rotation schedule of a connection");
                    continue;
                }
            };
            let id = conn.conn_id.as_str();
            let sched = schedule_of(&conn);
            let is_pending = pending.iter().any(|p| p == id);
            if sched.is_none() && !schedule.contains_key(id) && !is_pending {
                continue;
            }
            out.push(status(
                id,
                sched,
                &Record::read(schedule.get(id)),
                is_pending,
            ));
        }
        out.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
        Ok(out)
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
    fn intervals() {
        let d = |s| parse_rotate_every(s);
        assert_eq!(d("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(d(" 2s "), Ok(Duration::from_secs(2)));
        assert_eq!(d("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(d("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "0s", "0d", "30", "d", "1y", "-1d", "1.5h", "30 d"] {
            assert_eq!(d(bad), Err(RULE.to_owned()), "{bad:?}");
        }
    }

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
    }
}
