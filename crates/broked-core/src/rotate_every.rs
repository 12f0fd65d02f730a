//! `extra.rotate_every` (issue 20, `docs/rotation.md`): how often the server rotates a
//! connection's password on the database server. One parser, which validation (every write:
//! the rotation keys' rules in `target.rs`) and the schedule (`broked-connections`) share.
//!
//! Not here: the schedule itself, the due times (`broked-connections`' `rotation_schedule.rs`).

use std::time::Duration;

/// The `extra` key with a connection's rotation interval.
pub const ROTATE_EVERY_KEY: &str = "rotate_every";

/// What `extra.rotate_every` must look like. Names no value.
pub const ROTATE_EVERY_RULE: &str = "extra.rotate_every must be a duration like 30d, 12h, \
                                     90m, 2w or 45s (a whole number, 1 or more, and one of s, \
                                     m, h, d, w)";

/// The largest number of a unit: 100,000 (days, weeks, …; seconds: 100,000 days of them).
const MAX_UNITS: u64 = 100_000;

/// Parses a rotation interval: a whole number from 1 and `s`, `m`, `h`, `d` or `w` (`30d`,
/// `45s`), with white space around it; at most 100,000 of the unit (of seconds, 100,000
/// days). The error is [`ROTATE_EVERY_RULE`].
pub fn parse_rotate_every(text: &str) -> Result<Duration, String> {
    let rule = || ROTATE_EVERY_RULE.to_owned();
    let mut chars = text.trim().chars();
    let unit = chars.next_back().ok_or_else(rule)?;
    let (secs, max) = match unit {
        's' => (1, MAX_UNITS * 86_400),
        'm' => (60, MAX_UNITS),
        'h' => (3_600, MAX_UNITS),
        'd' => (86_400, MAX_UNITS),
        'w' => (604_800, MAX_UNITS),
        _ => return Err(rule()),
    };
    match chars.as_str().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Duration::from_secs(n * secs)),
        _ => Err(rule()),
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
        assert_eq!(d("100000w"), Ok(Duration::from_secs(100_000 * 604_800)));
        assert_eq!(d("8640000000s"), Ok(Duration::from_secs(8_640_000_000)));
        let bad = [
            "",
            " ",
            "0s",
            "0d",
            "30",
            "d",
            "1y",
            "-1d",
            "1.5h",
            "30 d",
            "100001d",
            "8640000001s",
            "5é",
            "é",
            "30D",
            "3０d",
            "99999999999999999999999d",
        ];
        for bad in bad {
            assert_eq!(d(bad), Err(ROTATE_EVERY_RULE.to_owned()), "{bad:?}");
        }
    }
}
