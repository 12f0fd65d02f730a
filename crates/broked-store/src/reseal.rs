//! Key rotation in batches (issue 19), what both backends share: the keyset scan of the rows
//! whose values a rotation still has to re-seal ([`crate::Store::sealed_not_under_after`]),
//! the reader of its rows, and the grouping of a batch of [`Reseal`]s by row, so that a row's
//! password and extra are re-sealed by one statement ([`crate::Store::reseal_batch`]).
//! Statements are written with `{prefix}n` parameters (`?` for SQLite, `$` for PostgreSQL).

use std::collections::{BTreeMap, HashSet};

use crate::rows::{self, Columns};
use crate::{Reseal, ResealCursor, ResealRow, Result, Sealed, SecretField, StoreError};

/// The columns of a row of the scan: where it is, what its values are bound to, its values.
const SCAN_COLUMNS: &str = "conn_id, conn_type, host, port, login, password, password_key, \
     extra, extra_key";

/// Current rows after the conn_id `{prefix}2` (`''` for the first page) with a value not
/// sealed by key `{prefix}1`, in conn_id order, at most `{prefix}3`: a range scan of the
/// primary key (a `NULL` key column compares as unknown, so a row without values is left
/// out).
pub(crate) fn current_after_sql(prefix: &str) -> String {
    format!(
        "SELECT {SCAN_COLUMNS}, CAST(NULL AS BIGINT) AS version FROM connections
         WHERE conn_id > {prefix}2 AND (password_key <> {prefix}1 OR extra_key <> {prefix}1)
         ORDER BY conn_id LIMIT {prefix}3"
    )
}

/// Kept versions after (`{prefix}2`, `{prefix}3`) in (conn_id, version) order with a value
/// not sealed by key `{prefix}1`, at most `{prefix}4` (deleted markers hold no value).
pub(crate) fn kept_after_sql(prefix: &str) -> String {
    format!(
        "SELECT {SCAN_COLUMNS}, version FROM connection_versions
         WHERE conn_id >= {prefix}2 AND (conn_id > {prefix}2 OR version > {prefix}3)
           AND (password_key <> {prefix}1 OR extra_key <> {prefix}1)
         ORDER BY conn_id, version LIMIT {prefix}4"
    )
}

/// The current rows and the kept versions (`n`).
pub(crate) const COUNT_ROWS: &str = "SELECT (SELECT count(*) FROM connections) \
     + (SELECT count(*) FROM connection_versions) AS n";

/// Where the scan goes next: the current rows after a conn_id, or the kept versions after a
/// (conn_id, version).
pub(crate) enum Next<'a> {
    Current(&'a str),
    Kept(&'a str, i64),
}

/// The first query of a page after `after`.
pub(crate) fn next(after: Option<&ResealCursor>) -> Next<'_> {
    match after {
        None => Next::Current(""),
        Some(ResealCursor {
            conn_id,
            version: None,
        }) => Next::Current(conn_id),
        Some(ResealCursor {
            conn_id,
            version: Some(v),
        }) => Next::Kept(conn_id, *v),
    }
}

/// The first kept version of the scan: before every conn_id and version.
pub(crate) const KEPT_START: Next<'static> = Next::Kept("", i64::MIN);

/// A row of [`current_after_sql`] or [`kept_after_sql`]; values sealed by `key_id` are left
/// out (`None`).
pub(crate) fn scan_row(row: &dyn Columns, key_id: u32) -> Result<ResealRow> {
    let table = "connections";
    let text = |c: &str| -> Result<String> {
        row.text(table, c)?.ok_or_else(|| StoreError::Corrupt {
            table,
            reason: format!("{c} is NULL"),
        })
    };
    let value = |blob: &str, key: &str| -> Result<Option<Sealed>> {
        Ok(rows::sealed(row.blob(table, blob)?, row.int(table, key)?)?
            .filter(|s| s.key_id != key_id))
    };
    Ok(ResealRow {
        conn_id: text("conn_id")?,
        version: row.int(table, "version")?,
        conn_type: text("conn_type")?,
        host: row.text(table, "host")?,
        port: row.int(table, "port")?.and_then(|p| u16::try_from(p).ok()),
        login: row.text(table, "login")?,
        password: value("password", "password_key")?,
        extra: value("extra", "extra_key")?,
    })
}

/// The re-seal of one row (current or kept): each field `Some((old, new))` to write only if
/// it still holds `old`.
#[derive(Debug)]
pub(crate) struct RowReseal<'a> {
    pub(crate) conn_id: &'a str,
    pub(crate) version: Option<i64>,
    pub(crate) password: Option<(&'a [u8], &'a Sealed)>,
    pub(crate) extra: Option<(&'a [u8], &'a Sealed)>,
}

/// `batch` grouped by row, in the order given: consecutive values of one row and version (a
/// password and an extra, as a rotation lists them) go into one [`RowReseal`].
pub(crate) fn by_row(batch: &[Reseal]) -> Vec<RowReseal<'_>> {
    let mut rows: Vec<RowReseal<'_>> = Vec::with_capacity(batch.len());
    for r in batch {
        let value = Some((r.old.as_slice(), &r.new));
        let same = rows.last_mut().filter(|row| {
            row.conn_id == r.conn_id
                && row.version == r.version
                && match r.field {
                    SecretField::Password => row.password.is_none(),
                    SecretField::Extra => row.extra.is_none(),
                }
        });
        let row = match same {
            Some(row) => row,
            None => {
                rows.push(RowReseal {
                    conn_id: &r.conn_id,
                    version: r.version,
                    password: None,
                    extra: None,
                });
                rows.last_mut().expect("just pushed")
            }
        };
        match r.field {
            SecretField::Password => row.password = value,
            SecretField::Extra => row.extra = value,
        }
    }
    rows
}

/// `rows` in rounds in which each row (conn_id and version) appears once, for a statement
/// that writes many rows at once; a row named again goes into a later round, so each row's
/// values are still written in the order given.
pub(crate) fn rounds(rows: Vec<RowReseal<'_>>) -> Vec<Vec<RowReseal<'_>>> {
    type Round<'a> = (HashSet<(&'a str, Option<i64>)>, Vec<RowReseal<'a>>);
    let mut rounds: Vec<Round<'_>> = Vec::new();
    for row in rows {
        let key = (row.conn_id, row.version);
        let i = match rounds.iter().rposition(|(seen, _)| seen.contains(&key)) {
            Some(i) => i + 1,
            None => 0,
        };
        if i == rounds.len() {
            rounds.push(Default::default());
        }
        rounds[i].0.insert(key);
        rounds[i].1.push(row);
    }
    rounds.into_iter().map(|(_, rows)| rows).collect()
}

/// The seals a batch made, per key: every value of it, written or not (a nonce was used).
pub(crate) fn seals_per_key(batch: &[Reseal]) -> Vec<(u32, u64)> {
    let mut per_key: BTreeMap<u32, u64> = BTreeMap::new();
    for r in batch {
        *per_key.entry(r.new.key_id).or_default() += 1;
    }
    per_key.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reseal(conn_id: &str, version: Option<i64>, field: SecretField, old: &[u8]) -> Reseal {
        Reseal {
            conn_id: conn_id.into(),
            version,
            field,
            old: old.to_vec(),
            new: Sealed {
                key_id: 2,
                blob: [b"new-", old].concat(),
            },
        }
    }

    #[test]
    fn a_batch_is_grouped_by_row_and_a_row_named_again_waits_for_a_later_round() {
        use SecretField::{Extra, Password};
        let batch = [
            reseal("a", None, Password, b"ap"),
            reseal("a", None, Extra, b"ae"),
            reseal("a", Some(1), Password, b"a1p"),
            reseal("b", None, Extra, b"be"),
            reseal("a", None, Password, b"ap-again"),
            reseal("a", None, Password, b"ap-third"),
        ];
        type Shape<'a> = (&'a str, Option<i64>, Option<&'a [u8]>, Option<&'a [u8]>);
        fn shape<'a>(rows: &[RowReseal<'a>]) -> Vec<Shape<'a>> {
            rows.iter()
                .map(|r| {
                    (
                        r.conn_id,
                        r.version,
                        r.password.map(|(old, _)| old),
                        r.extra.map(|(old, _)| old),
                    )
                })
                .collect()
        }
        let rows = by_row(&batch);
        assert_eq!(
            shape(&rows),
            [
                ("a", None, Some(&b"ap"[..]), Some(&b"ae"[..])),
                ("a", Some(1), Some(&b"a1p"[..]), None),
                ("b", None, None, Some(&b"be"[..])),
                ("a", None, Some(&b"ap-again"[..]), None),
                ("a", None, Some(&b"ap-third"[..]), None),
            ]
        );
        let rounds: Vec<_> = rounds(rows).iter().map(|r| shape(r)).collect();
        assert_eq!(
            rounds,
            [
                vec![
                    ("a", None, Some(&b"ap"[..]), Some(&b"ae"[..])),
                    ("a", Some(1), Some(&b"a1p"[..]), None),
                    ("b", None, None, Some(&b"be"[..])),
                ],
                vec![("a", None, Some(&b"ap-again"[..]), None)],
                vec![("a", None, Some(&b"ap-third"[..]), None)],
            ]
        );
        assert_eq!(seals_per_key(&batch), [(2, 6)]);
        assert!(by_row(&[]).is_empty());
    }
}
