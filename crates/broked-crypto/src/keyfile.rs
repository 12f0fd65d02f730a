//! The text format of the key file; no IO here.
//!
//! ```text
//! # broked connections keyring ... (comment lines: what the file is, back it up)
//! broked-keyring v1
//! active k2
//! key k1 2026-11-26T10:53:15Z <base64 of the 32 key bytes>
//! key k2 2026-12-01T08:00:00Z <base64 of the 32 key bytes>
//! end
//! ```
//!
//! Blank lines and lines starting with `#` are ignored anywhere. The first other line is the
//! format line; `active` appears exactly once and names one of the keys; `end` is the last
//! line, so that a file cut short anywhere is detected rather than read as fewer keys.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::seal::{KEY_LEN, Key};
use crate::{CryptoError, KeyId};

pub(crate) const FORMAT_LINE: &str = "broked-keyring v1";
const FORMAT_PREFIX: &str = "broked-keyring ";

pub(crate) struct Entry {
    pub(crate) created_at: OffsetDateTime,
    pub(crate) key: Key,
}

pub(crate) struct Contents {
    pub(crate) active: KeyId,
    pub(crate) keys: BTreeMap<KeyId, Entry>,
}

pub(crate) fn parse(path: &Path, text: &[u8]) -> Result<Contents, CryptoError> {
    let malformed = |line: usize, reason: String| CryptoError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    };

    let mut seen_format = false;
    let mut active: Option<(usize, KeyId)> = None;
    let mut keys = BTreeMap::new();
    let mut last_line = 0;
    let mut end_line = None;

    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let lines = body.split(|&b| b == b'\n').take_while(|_| !body.is_empty());
    for (index, raw) in lines.enumerate() {
        let number = index + 1;
        last_line = number;
        let line =
            std::str::from_utf8(raw).map_err(|_| malformed(number, "not UTF-8 text".into()))?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if end_line.is_some() {
            return Err(malformed(number, "a line after `end`".into()));
        }
        if !seen_format {
            if trimmed == FORMAT_LINE {
                seen_format = true;
                continue;
            }
            if let Some(version) = trimmed.strip_prefix(FORMAT_PREFIX) {
                return Err(malformed(
                    number,
                    format!(
                        "format version `{}` is not supported by this version of broked, \
                         which reads `{FORMAT_LINE}`: upgrade broked",
                        version.chars().take(16).collect::<String>()
                    ),
                ));
            }
            return Err(malformed(
                number,
                format!("expected the format line `{FORMAT_LINE}` before anything else"),
            ));
        }
        let fields: Vec<&str> = trimmed.split_ascii_whitespace().collect();
        match fields.as_slice() {
            ["end"] => end_line = Some(number),
            ["active", id] => {
                let id = parse_id(id).ok_or_else(|| {
                    malformed(number, "`active` must name a key id such as `k1`".into())
                })?;
                if active.is_some() {
                    return Err(malformed(number, "a second `active` line".into()));
                }
                active = Some((number, id));
            }
            ["key", id, created, material] => {
                let id = parse_id(id)
                    .ok_or_else(|| malformed(number, "the key id must look like `k1`".into()))?;
                let created_at = OffsetDateTime::parse(created, &Rfc3339).map_err(|_| {
                    malformed(
                        number,
                        format!("the creation time of key {id} is not an RFC 3339 time"),
                    )
                })?;
                let key = decode_key(material).ok_or_else(|| {
                    malformed(
                        number,
                        format!("key {id} is not {KEY_LEN} bytes of standard base64"),
                    )
                })?;
                if keys.insert(id, Entry { created_at, key }).is_some() {
                    return Err(malformed(number, format!("key {id} appears twice")));
                }
            }
            // Never echo the line: it may hold key material.
            _ => {
                return Err(malformed(
                    number,
                    "unrecognised line (expected `active kN`, `key kN CREATED BASE64KEY` or `end`)"
                        .into(),
                ));
            }
        }
    }

    let end = last_line + 1;
    if !seen_format {
        return Err(malformed(
            end,
            format!("the file is empty or truncated: no format line `{FORMAT_LINE}`"),
        ));
    }
    let Some(end) = end_line else {
        return Err(malformed(
            end,
            "the file is truncated: it has no `end` line".into(),
        ));
    };
    if keys.is_empty() {
        return Err(malformed(end, "the file holds no `key` line".into()));
    }
    let Some((active_line, active)) = active else {
        return Err(malformed(end, "the file has no `active` line".into()));
    };
    if !keys.contains_key(&active) {
        return Err(malformed(
            active_line,
            format!("the active key {active} is not in the file"),
        ));
    }
    Ok(Contents { active, keys })
}

fn parse_id(text: &str) -> Option<KeyId> {
    KeyId::parse(text)
}

fn decode_key(text: &str) -> Option<Key> {
    // Room for any valid encoding of 32 bytes, so that decoding never reallocates.
    let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN + 16));
    if text.len() > 2 * KEY_LEN {
        return None;
    }
    BASE64.decode_vec(text, &mut bytes).ok()?;
    Key::from_slice(&bytes)
}

/// The file text, header included. `db_name` is the database file the keyring belongs to.
pub(crate) fn serialize(contents: &Contents, db_name: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(2048 + 128 * contents.keys.len()));
    let _ = write!(
        out,
        "# broked connections keyring for the database `{db_name}` beside this file.\n\
         # It holds the AES-256-GCM keys that encrypt the stored passwords and extras.\n\
         # BACK IT UP together with the database: without this file the stored secrets cannot\n\
         # be decrypted, by anyone. Store the backup apart from database copies you share.\n\
         # Keep it private (chmod 600). Change it only with `broked key rotate` / `broked key prune`.\n\
         {FORMAT_LINE}\n\
         active {}\n",
        contents.active
    );
    for (id, entry) in &contents.keys {
        let created = entry
            .created_at
            .format(&Rfc3339)
            .expect("every OffsetDateTime within years 0..=9999 formats as RFC 3339");
        let _ = write!(out, "key {id} {created} ");
        BASE64.encode_string(entry.key.material(), &mut out);
        out.push('\n');
    }
    out.push_str("end\n");
    out
}

#[cfg(test)]
mod tests;
