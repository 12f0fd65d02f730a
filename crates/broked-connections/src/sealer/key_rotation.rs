//! `broked key rotate` (issue 19): a new active key, then every sealed value — of current rows
//! and of kept versions — re-sealed under it, page by page, in the order of the store's scan
//! ([`Store::sealed_not_under_after`]), one transaction per page
//! ([`Store::reseal_batch`]) that also records how far the rotation got (the `key_rotation`
//! setting of `meta`). So:
//!
//! - **the writer is held one batch at a time**: API writes go in between batches;
//! - **memory is bounded** by one page ([`PAGE_ROWS`] rows), whatever the number of secrets;
//! - **every value stays readable**: the key file holds the new key (atomically written) before
//!   any value is sealed with it and keeps the old ones, so a value opens whether its batch
//!   committed or not;
//! - **a stopped rotation resumes**: killed, crashed or failed midway, the next `key rotate`
//!   finds the setting, keeps its key (no new one) and goes on from the last committed page.
//!
//! The crypto of a page runs on up to [`CRYPTO_THREADS`] threads. Each value is opened and
//! sealed again bound to the target of its own row or kept version, with a fresh random
//! nonce of its own (each thread reads its part's nonces from the OS at once:
//! [`Keyring::nonces`]); a value that does not open is reported and left as it is, under its
//! old key. A value changed meanwhile is skipped by the compare-and-swap of the batch and
//! found again by the next pass: passes over the whole scan repeat until one re-seals nothing
//! (at most [`MAX_PASSES`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use broked_crypto::{Aad, CryptoError, KeyId, Keyring, Nonces};
use broked_store::{Reseal, ResealCursor, ResealRow, Sealed, SecretField, Store};
use serde_json::{Value, json};

use super::{CheckFailure, RotateReport, Sealer, open_bound, read, short_reason, write};
use crate::error::{Error, store_err};

/// Rows per page of the scan, and so per transaction: at most twice as many values (a
/// password and an extra each). A transaction is tens of milliseconds of the writer (API
/// writes wait at most that long) and commits with an `fsync` (fewer, larger batches: fewer
/// of them); a page is a few MB of memory.
pub(crate) const PAGE_ROWS: usize = 16_384;

/// Threads that open and seal the values of a page.
const CRYPTO_THREADS: usize = 2;

/// Passes over the whole scan at most (values written under an old key meanwhile by a process
/// that had not read the new key file yet are found by the next pass).
const MAX_PASSES: u32 = 5;

/// The `meta` setting that records a rotation in progress: its key, its pass, and the last
/// row of the scan whose values it committed.
pub(crate) const KEY_ROTATION: &str = "key_rotation";

/// A rotation in progress, as the `key_rotation` setting holds it (JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    key: u32,
    pass: u32,
    after: Option<ResealCursor>,
}

impl Progress {
    fn encode(&self) -> String {
        let after = self
            .after
            .as_ref()
            .map(|c| json!({"conn_id": c.conn_id, "version": c.version}));
        json!({"key": self.key, "pass": self.pass, "after": after}).to_string()
    }

    fn decode(text: &str) -> Option<Progress> {
        let v: Value = serde_json::from_str(text).ok()?;
        let after = match v.get("after")? {
            Value::Null => None,
            a => Some(ResealCursor {
                conn_id: a.get("conn_id")?.as_str()?.to_owned(),
                version: match a.get("version")? {
                    Value::Null => None,
                    n => Some(n.as_i64()?),
                },
            }),
        };
        Some(Progress {
            key: u32::try_from(v.get("key")?.as_u64()?).ok()?,
            pass: u32::try_from(v.get("pass")?.as_u64()?).ok()?,
            after,
        })
    }
}

/// What a rotation reads and writes of the rows — pages and batches, never every row at once
/// ([`Store::sealed_not_under_after`], [`Store::reseal_batch`]); the tests put a recorder in
/// between.
pub(crate) trait Pages {
    fn page(
        &self,
        key_id: u32,
        after: Option<&ResealCursor>,
        limit: usize,
    ) -> Result<Vec<ResealRow>, Error>;
    fn batch(&self, batch: &[Reseal], progress: &Progress) -> Result<usize, Error>;
}

/// The store itself as [`Pages`].
pub(crate) struct StorePages<'a>(pub(crate) &'a dyn Store);

impl Pages for StorePages<'_> {
    fn page(
        &self,
        key_id: u32,
        after: Option<&ResealCursor>,
        limit: usize,
    ) -> Result<Vec<ResealRow>, Error> {
        self.0
            .sealed_not_under_after(key_id, after, limit)
            .map_err(store_err)
    }

    fn batch(&self, batch: &[Reseal], progress: &Progress) -> Result<usize, Error> {
        self.0
            .reseal_batch(batch, (KEY_ROTATION, Some(&progress.encode())))
            .map_err(store_err)
    }
}

/// Where the time of a rotation went (logged at the end).
#[derive(Default)]
struct Timing {
    read: Duration,
    crypto: Duration,
    write: Duration,
}

impl Sealer {
    /// The rotation in progress recorded in the database, if one stopped midway. A setting
    /// that does not parse is reported and ignored (a new rotation replaces it).
    pub(crate) fn rotation_in_progress(&self) -> Result<Option<(KeyId, u32)>, Error> {
        Ok(self.progress()?.map(|p| (KeyId::new(p.key), p.pass)))
    }

    fn progress(&self) -> Result<Option<Progress>, Error> {
        let Some(text) = self.store.meta(KEY_ROTATION).map_err(store_err)? else {
            return Ok(None);
        };
        let progress = Progress::decode(&text);
        if progress.is_none() {
            tracing::warn!("the key_rotation setting does not parse: a new rotation replaces it");
        }
        Ok(progress)
    }

    /// Adds a new active key and re-seals every secret under it in batches (see the module
    /// docs) — or, if a rotation stopped midway, finishes that one under its key. Keeps the
    /// old keys (until [`Sealer::prune`]). `progress(done, total)` is called once per value
    /// re-sealed or found not to open; `total` is an upper bound (two values per row), never
    /// below `done`.
    pub(crate) fn rotate(&self, progress: impl FnMut(u64, u64)) -> Result<RotateReport, Error> {
        self.rotate_through(&StorePages(self.store.as_ref()), PAGE_ROWS, progress)
    }

    /// [`Sealer::rotate`] with the rows read and written through `pages`, `page_rows` at a
    /// time.
    pub(crate) fn rotate_through(
        &self,
        pages: &dyn Pages,
        page_rows: usize,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<RotateReport, Error> {
        let started = Instant::now();
        // One rotation at a time across every process sharing the database.
        let _lock = self.store.lock_rotation().map_err(store_err)?;
        let stopped = self.progress()?;
        let (active, mut at, resumed) = {
            let mut keyring = write(&self.keyring);
            self.reload_verified(&mut keyring)?;
            match stopped {
                // Its key is still the active one: finish it.
                Some(p) if keyring.active().get() == p.key => (keyring.active(), p, true),
                _ => {
                    let id = keyring.rotate()?;
                    let check = keyring
                        .check_value(id)
                        .expect("the new key has a check value");
                    self.store
                        .add_key_check(id.get(), &check)
                        .map_err(store_err)?;
                    let p = Progress {
                        key: id.get(),
                        pass: 1,
                        after: None,
                    };
                    self.store
                        .set_meta(KEY_ROTATION, &p.encode())
                        .map_err(store_err)?;
                    (id, p, false)
                }
            }
        };
        if resumed {
            tracing::info!(key = %active, pass = at.pass, "finishing a key rotation that stopped midway");
        }
        // An upper bound for `progress` (two values per row), counted cheaply: counting the
        // values themselves would read every row once more.
        let total = self
            .store
            .count_rows()
            .map_err(store_err)?
            .saturating_mul(2);
        let mut run = Run {
            sealer: self,
            pages,
            page_rows: page_rows.max(1),
            active,
            resealed: 0,
            done: 0,
            total,
            failures: Vec::new(),
            failed: HashSet::new(),
            timing: Timing::default(),
        };
        let mut passes = 0;
        loop {
            passes += 1;
            let whole = at.after.is_none();
            let wrote = run.pass(&mut at, &mut progress)?;
            // Done when a pass over the whole scan found nothing left to re-seal.
            if (whole && wrote == 0) || passes >= MAX_PASSES {
                break;
            }
            at = Progress {
                key: at.key,
                pass: at.pass + 1,
                after: None,
            };
        }
        // Under the rotation lock still: the audit secret moves to the new key too. Only
        // then is the rotation done.
        self.reseal_audit_secret()?;
        self.store
            .reseal_batch(&[], (KEY_ROTATION, None))
            .map_err(store_err)?;
        let t = &run.timing;
        tracing::info!(
            key = %active,
            resealed = run.resealed,
            failed = run.failures.len(),
            passes,
            resumed,
            read_ms = t.read.as_millis() as u64,
            crypto_ms = t.crypto.as_millis() as u64,
            write_ms = t.write.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "key rotation done"
        );
        Ok(RotateReport {
            active_key: active.to_string(),
            resealed: run.resealed,
            failures: run.failures,
            resumed,
        })
    }
}

/// One rotation's state across its passes.
struct Run<'s> {
    sealer: &'s Sealer,
    pages: &'s dyn Pages,
    page_rows: usize,
    active: KeyId,
    resealed: u64,
    /// Values handled, for `progress`.
    done: u64,
    total: u64,
    failures: Vec<CheckFailure>,
    /// The values in `failures`, skipped by later passes.
    failed: HashSet<(String, Option<i64>, &'static str)>,
    timing: Timing,
}

/// A value of a page re-sealed, or why it was not.
type Outcome = Result<Reseal, CheckFailure>;

impl Run<'_> {
    /// Re-seals the values of the scan from `at.after` on, a page per transaction, each
    /// transaction recording the page's last row in `at`. Returns how many values it re-sealed
    /// (wrote or found changed meanwhile: either way not skipped as failed).
    fn pass(
        &mut self,
        at: &mut Progress,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<u64, Error> {
        let mut sealed_here = 0;
        loop {
            let t = Instant::now();
            let rows = self
                .pages
                .page(self.active.get(), at.after.as_ref(), self.page_rows)?;
            self.timing.read += t.elapsed();
            let Some(last) = rows.last() else {
                return Ok(sealed_here);
            };
            let full = rows.len() >= self.page_rows;
            at.after = Some(last.cursor());
            let t = Instant::now();
            let outcomes = {
                let keyring = read(&self.sealer.keyring);
                reseal_page(&keyring, self.active, rows, &self.failed)
            };
            self.timing.crypto += t.elapsed();
            let mut batch = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                match outcome {
                    Ok(r) => batch.push(r),
                    Err(f) => {
                        self.failed.insert((f.conn_id.clone(), f.version, f.field));
                        self.failures.push(f);
                    }
                }
                self.done += 1;
                self.total = self.total.max(self.done);
                progress(self.done, self.total);
            }
            let t = Instant::now();
            let written = self.pages.batch(&batch, at)?;
            self.timing.write += t.elapsed();
            self.resealed += written as u64;
            sealed_here += batch.len() as u64;
            if !full {
                return Ok(sealed_here);
            }
        }
    }
}

/// Opens and seals again under `active` every value of `rows` not in `failed`, each bound to
/// its own row's target, on up to [`CRYPTO_THREADS`] threads; in the order of `rows`.
fn reseal_page(
    keyring: &Keyring,
    active: KeyId,
    mut rows: Vec<ResealRow>,
    failed: &HashSet<(String, Option<i64>, &'static str)>,
) -> Vec<Outcome> {
    let threads = CRYPTO_THREADS
        .min(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    // Not worth a thread below a few hundred values.
    if threads == 1 || rows.len() < 256 {
        return reseal_rows(keyring, active, rows, failed);
    }
    let per_thread = rows.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    while rows.len() > per_thread {
        parts.push(rows.split_off(rows.len() - per_thread));
    }
    parts.push(rows);
    parts.reverse();
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| s.spawn(move || reseal_rows(keyring, active, part, failed)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn reseal_rows(
    keyring: &Keyring,
    active: KeyId,
    rows: Vec<ResealRow>,
    failed: &HashSet<(String, Option<i64>, &'static str)>,
) -> Vec<Outcome> {
    let values = rows
        .iter()
        .map(|r| usize::from(r.password.is_some()) + usize::from(r.extra.is_some()))
        .sum();
    // The nonces of the part's seals from one read of the OS random source (a seal whose
    // nonce is missing reads its own: `seal_with`).
    let mut nonces = keyring.nonces(values).ok();
    let mut out = Vec::with_capacity(values);
    for mut row in rows {
        let target = row
            .conn_type
            .parse()
            .map(|t| {
                broked_core::target_binding(t, row.host.as_deref(), row.port, row.login.as_deref())
            })
            .map_err(|_| "invalid conn_type".to_owned());
        for field in SecretField::ALL {
            let taken = match field {
                SecretField::Password => row.password.take(),
                SecretField::Extra => row.extra.take(),
            };
            let Some(sealed) = taken else {
                continue;
            };
            if !failed.is_empty()
                && failed.contains(&(row.conn_id.clone(), row.version, field.name()))
            {
                continue;
            }
            // The row's id moves into its last value.
            let conn_id = if field == SecretField::Password && row.extra.is_some() {
                row.conn_id.clone()
            } else {
                std::mem::take(&mut row.conn_id)
            };
            let fail = |conn_id: String, reason: String| CheckFailure {
                conn_id,
                version: row.version,
                field: field.name(),
                reason,
            };
            let resealed = match &target {
                Ok(target) => reseal_value(
                    keyring,
                    nonces.as_mut(),
                    &conn_id,
                    target,
                    field,
                    &sealed.blob,
                )
                .map_err(|e| short_reason(&e)),
                Err(reason) => Err(reason.clone()),
            };
            out.push(match resealed {
                Ok(blob) => Ok(Reseal {
                    conn_id,
                    version: row.version,
                    field,
                    old: sealed.blob,
                    new: Sealed {
                        key_id: active.get(),
                        blob,
                    },
                }),
                Err(reason) => Err(fail(conn_id, reason)),
            });
        }
    }
    out
}

/// Opens a value bound to `target` and seals it again under the active key, bound to the
/// same, with a fresh random nonce (the next of `nonces`).
fn reseal_value(
    keyring: &Keyring,
    nonces: Option<&mut Nonces>,
    conn_id: &str,
    target: &str,
    field: SecretField,
    blob: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let plain = open_bound(keyring, conn_id, target, field, blob)?;
    let aad = Aad::bound(conn_id, field.name(), target);
    match nonces {
        Some(nonces) => keyring.seal_with(nonces, aad, &plain),
        None => keyring.seal(aad, &plain),
    }
}

#[cfg(test)]
mod tests;
