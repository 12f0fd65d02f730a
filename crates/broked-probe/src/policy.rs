//! The probe policy: timeout, the off switch, and the deny list (the SSRF guard).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Failure, ProbeError};

/// What [`Policy::default`] denies: link-local networks (where cloud instance metadata lives),
/// the metadata services' other addresses (AWS IMDS and its Amazon DNS resolver over IPv6,
/// `fd00:ec2::254` and `fd00:ec2::23`; GCP's IPv6 metadata server `fd20:ce::254`; Alibaba
/// Cloud's `100.100.100.200`) and their host names. Loopback is NOT denied: a
/// database on the same machine is the common case.
pub const DEFAULT_DENY: &[&str] = &[
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "fd00:ec2::23/128",
    "fd20:ce::254/128",
    "100.100.100.200/32",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data.ec2.internal",
    "metadata",
];

/// The default overall timeout of a test.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, PartialEq, Eq)]
enum Rule {
    Net {
        addr: IpAddr,
        prefix: u8,
    },
    /// A lower-case host name without trailing dot; matches itself and its subdomains.
    Name(String),
}

impl Rule {
    fn parse(entry: &str) -> Result<Rule, String> {
        let e = entry.trim();
        let bad = |why: &str| format!("invalid deny entry {entry:?}: {why}");
        if e.is_empty() {
            return Err(bad("empty"));
        }
        if let Some((addr, prefix)) = e.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP network"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("prefix length out of range"))?;
            // `::ffff:10.0.0.0/104` is the IPv4 network 10.0.0.0/8 written as IPv4-mapped
            // IPv6: addresses are checked as IPv4 (see `canonical_ip`), so the rule must be
            // too, with the prefix counted from the IPv4 part. A shorter prefix reaches past
            // the mapped range and stays an IPv6 rule (it also matches mapped IPv4).
            if let IpAddr::V6(v6) = addr
                && let Some(v4) = v6.to_ipv4_mapped()
                && prefix >= 96
            {
                return Ok(Rule::Net {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
            return Ok(Rule::Net { addr, prefix });
        }
        if let Ok(addr) = e
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            let addr = canonical_ip(addr);
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Rule::Net { addr, prefix });
        }
        let name = normalize_name(e.trim_start_matches("*."));
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ok {
            return Err(bad("not a CIDR network, IP address or host name"));
        }
        Ok(Rule::Name(name))
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        let Rule::Net { addr, prefix } = self else {
            return false;
        };
        match (addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(ip) & mask
            }
            // An IPv6 network wider than the mapped range (`::/0`, `::ffff:0:0/95`) also
            // holds every IPv4 address in its mapped form.
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(ip.to_ipv6_mapped()) & mask
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }

    fn matches_name(&self, name: &str) -> bool {
        let Rule::Name(rule) = self else { return false };
        name == rule
            || name
                .strip_suffix(rule.as_str())
                .is_some_and(|p| p.ends_with('.'))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Net { addr, prefix } => write!(f, "{addr}/{prefix}"),
            Rule::Name(n) => f.write_str(n),
        }
    }
}

/// An IPv4 address however it is spelled in IPv6 (`::ffff:a.b.c.d`) is checked as IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// `path` made absolute against the working directory, without touching the file system.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Whether a regular file reads like a keyring file: after blank and `#` comment lines, its
/// first line starts with [`KEYRING_MAGIC`]. Only regular files are read (a FIFO would block),
/// and only their first 64 KiB; an unreadable file is not a keyring as far as this check knows.
fn is_keyring(path: &Path) -> bool {
    use std::io::Read;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
    if read.is_err() {
        return false;
    }
    head.split(|&b| b == b'\n')
        .map(|l| l.trim_ascii())
        .find(|l| !l.is_empty() && !l.starts_with(b"#"))
        .is_some_and(|l| l.starts_with(KEYRING_MAGIC))
}

fn normalize_name(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Parses the spellings of an IPv4 address that `inet_aton` (and so the system resolver)
/// accepts besides dotted decimal: `2130706434`, `0x7f000002`, `127.1`, `0177.0.0.2`.
fn parse_ipv4_loose(host: &str) -> Option<Ipv4Addr> {
    fn num(s: &str) -> Option<u64> {
        if s.is_empty() {
            return None;
        }
        if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            return u64::from_str_radix(h, 16).ok();
        }
        if s.len() > 1 && s.starts_with('0') {
            return u64::from_str_radix(&s[1..], 8).ok();
        }
        s.parse().ok()
    }
    let parts: Vec<u64> = host.split('.').map(num).collect::<Option<_>>()?;
    let value = match parts.as_slice() {
        [a] => *a,
        [a, b] if *a < 256 && *b < 1 << 24 => a << 24 | b,
        [a, b, c] if *a < 256 && *b < 256 && *c < 1 << 16 => a << 24 | b << 16 | c,
        [a, b, c, d] if [a, b, c, d].iter().all(|x| **x < 256) => a << 24 | b << 16 | c << 8 | d,
        _ => return None,
    };
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// What connection tests may do: the overall timeout, whether testing is on, which networks
/// and host names are denied, and (optionally) the directories the sqlite probe may open.
#[derive(Clone)]
pub struct Policy {
    timeout: Duration,
    disabled: bool,
    deny: Vec<Rule>,
    file_roots: Option<Vec<PathBuf>>,
    /// Files the sqlite probe never opens (canonical paths), with their SQLite side files.
    protected: Vec<PathBuf>,
}

/// How the format line of a keyring file (`broked-crypto`) begins, after its comment lines:
/// such a file is never a test target.
pub const KEYRING_MAGIC: &[u8] = b"broked-keyring ";

/// The side files SQLite keeps beside a database: never a database of their own.
const SIDE_FILE_SUFFIXES: &[&str] = &["-wal", "-shm", "-journal"];

impl Default for Policy {
    /// 10 s, enabled, denying [`DEFAULT_DENY`].
    fn default() -> Policy {
        Policy::new(DEFAULT_TIMEOUT, false, &[]).expect("the default deny list parses")
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("timeout", &self.timeout)
            .field("disabled", &self.disabled)
            .field(
                "deny",
                &self
                    .deny
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .field("file_roots", &self.file_roots)
            .field("protected", &self.protected)
            .finish()
    }
}

impl Policy {
    /// A policy denying [`DEFAULT_DENY`] plus `deny`: each entry a CIDR network (`10.0.0.0/8`),
    /// an IP address, or a host name (which also denies its subdomains; `*.x` means the same).
    /// An entry that is none of these is an error naming it. A zero timeout is an error.
    pub fn new(timeout: Duration, disabled: bool, deny: &[String]) -> Result<Policy, String> {
        let mut policy = Policy::without_defaults(timeout, disabled, deny)?;
        for d in DEFAULT_DENY {
            policy.deny.push(Rule::parse(d)?);
        }
        Ok(policy)
    }

    /// Like [`Policy::new`] but denying only `deny`, not [`DEFAULT_DENY`].
    pub fn without_defaults(
        timeout: Duration,
        disabled: bool,
        deny: &[String],
    ) -> Result<Policy, String> {
        if timeout.is_zero() {
            return Err("probe timeout must be more than zero".to_owned());
        }
        let deny = deny
            .iter()
            .map(|e| Rule::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            timeout,
            disabled,
            deny,
            file_roots: None,
            protected: Vec::new(),
        })
    }

    /// Limits the files the sqlite probe may open to those inside `dirs` (after resolving
    /// symbolic links). Without it, any file the server process can read may be tested.
    pub fn with_file_roots(mut self, dirs: Vec<PathBuf>) -> Policy {
        self.file_roots = Some(dirs);
        self
    }

    /// Files the sqlite probe must never open — the store's database and its key file —
    /// together with their `-wal`, `-shm` and `-journal` files. Compared after resolving `..`
    /// and symbolic links; a path that does not exist (yet) is compared as written.
    pub fn protect_files(mut self, files: impl IntoIterator<Item = PathBuf>) -> Policy {
        for f in files {
            let f = absolute(&f);
            let canonical = f.canonicalize().unwrap_or_else(|_| f.clone());
            for base in [f, canonical] {
                for suffix in [""].iter().chain(SIDE_FILE_SUFFIXES) {
                    let mut name = base.clone().into_os_string();
                    name.push(suffix);
                    let path = PathBuf::from(name);
                    if !self.protected.contains(&path) {
                        self.protected.push(path);
                    }
                }
            }
        }
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// The deny rules as text (`169.254.0.0/16`, `metadata.google.internal`, …).
    pub fn deny_rules(&self) -> Vec<String> {
        self.deny.iter().map(ToString::to_string).collect()
    }

    /// Checks a host as written in a connection, before resolution: a denied name, or an IP
    /// address (in any spelling the system resolver accepts) in a denied network.
    pub fn check_host(&self, host: &str) -> Result<(), ProbeError> {
        let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        if let Some(ip) = parse_ipv4_loose(bare) {
            return self.check_ip(IpAddr::V4(ip));
        }
        let name = normalize_name(bare);
        if self.deny.iter().any(|r| r.matches_name(&name)) {
            tracing::info!(host = %name, "probe target denied by policy (host name)");
            return Err(ProbeError::blocked());
        }
        Ok(())
    }

    /// Checks one address. IPv4-mapped IPv6 addresses are checked as the IPv4 address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ProbeError> {
        let ip = canonical_ip(ip);
        if self.deny.iter().any(|r| r.matches_ip(ip)) {
            tracing::info!(%ip, "probe target denied by policy (address)");
            return Err(ProbeError::blocked());
        }
        // 0.0.0.0 and :: reach this machine; check them as loopback would be checked.
        if ip.is_unspecified() {
            let lo = match ip {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            if self.deny.iter().any(|r| r.matches_ip(lo)) {
                return Err(ProbeError::blocked());
            }
        }
        Ok(())
    }

    /// Checks a file path for the sqlite probe against [`Policy::with_file_roots`]; returns
    /// the canonical path to open. A missing file is [`Failure::NotFound`].
    pub fn check_path(&self, path: &Path) -> Result<PathBuf, ProbeError> {
        let canonical = path.canonicalize().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ProbeError::new(
                    Failure::NotFound,
                    format!(
                        "database file {} not found: check host (the path on the server)",
                        path.display()
                    ),
                )
            } else {
                crate::io_error(&e, &path.display().to_string())
            }
        })?;
        if let Some(roots) = &self.file_roots {
            let inside = roots
                .iter()
                .filter_map(|r| r.canonicalize().ok())
                .any(|r| canonical.starts_with(r));
            if !inside {
                tracing::info!(path = %canonical.display(), "probe file outside the file roots");
                return Err(ProbeError::blocked());
            }
        }
        if let Some(why) = self.protected_file(&canonical) {
            tracing::info!(path = %canonical.display(), why, "probe file denied by policy");
            return Err(ProbeError::blocked());
        }
        Ok(canonical)
    }

    /// Why `canonical` is never a test target, if it is not: a protected file, a SQLite side
    /// file, a database with a key file beside it (`{db}.key`: a broked store), or a keyring.
    fn protected_file(&self, canonical: &Path) -> Option<&'static str> {
        if self.protected.iter().any(|p| p == canonical) {
            return Some("the store's own database or key file");
        }
        let name = canonical.as_os_str().to_string_lossy();
        for suffix in SIDE_FILE_SUFFIXES {
            if let Some(base) = name.strip_suffix(suffix)
                && Path::new(base).exists()
            {
                return Some("a SQLite side file");
            }
        }
        let mut key = canonical.as_os_str().to_owned();
        key.push(".key");
        if Path::new(&key).exists() {
            return Some("a database with a key file beside it");
        }
        if is_keyring(canonical) {
            return Some("a keyring file");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(entries: &[&str]) -> Policy {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        Policy::new(Duration::from_secs(1), false, &entries).unwrap()
    }

    #[test]
    fn default_denies_link_local_and_metadata_not_loopback() {
        let p = Policy::default();
        assert_eq!(p.timeout(), Duration::from_secs(10));
        assert!(!p.is_disabled());
        for host in [
            "169.254.169.254",
            "fe80::1",
            "[fe80::1]",
            "::ffff:169.254.169.254",
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata",
            "2852039166", // 169.254.169.254 in decimal
            "fd00:ec2::254",
            "fd00:ec2::23",
            "[fd00:ec2::23]",
            "fd20:ce::254",
            "FD20:CE:0::254",
        ] {
            assert_eq!(
                p.check_host(host).unwrap_err().kind,
                Failure::Blocked,
                "{host}"
            );
        }
        for host in [
            "127.0.0.1",
            "::1",
            "localhost",
            "db.example",
            "metadata-db.example",
        ] {
            assert!(p.check_host(host).is_ok(), "{host}");
        }
    }

    #[test]
    fn deny_entry_forms() {
        let p = deny(&["127.0.0.2/32", "blocked.test", "::2"]);
        for host in [
            "127.0.0.2",
            "2130706434",
            "0x7f000002",
            "127.2",
            "0177.0.0.2",
            "::ffff:127.0.0.2",
            "[::ffff:127.0.0.2]",
            "blocked.test",
            "api.blocked.test",
            "::2",
        ] {
            let e = p.check_host(host).unwrap_err();
            assert_eq!(e, ProbeError::blocked(), "{host}");
            assert_eq!(e.message, "blocked by probe policy");
        }
        for host in ["127.0.0.1", "127.0.0.3", "notblocked.test", "2130706433"] {
            assert!(p.check_host(host).is_ok(), "{host}");
        }
        assert!(p.check_ip("127.0.0.2".parse().unwrap()).is_err());
        assert!(p.check_ip("::ffff:127.0.0.2".parse().unwrap()).is_err());
    }

    #[test]
    fn networks_and_unspecified() {
        let p = deny(&["127.0.0.0/8", "fd00::/8"]);
        assert!(p.check_ip("127.255.1.2".parse().unwrap()).is_err());
        assert!(p.check_ip("0.0.0.0".parse().unwrap()).is_err());
        assert!(p.check_ip("fdab::1".parse().unwrap()).is_err());
        let all = deny(&["0.0.0.0/0"]);
        assert!(all.check_ip("127.0.0.1".parse().unwrap()).is_err());
        assert!(all.check_ip("::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn ipv4_mapped_networks_mean_the_ipv4_network() {
        // Issue 13: `::ffff:10.0.0.0/104` underflowed (a panic in debug builds; a mask of
        // zero, denying every IPv4 address, in release builds).
        let p = deny(&["::ffff:10.0.0.0/104", "::ffff:192.168.1.7/128"]);
        for ip in [
            "10.0.0.1",
            "10.255.255.255",
            "::ffff:10.1.2.3",
            "192.168.1.7",
        ] {
            assert!(p.check_ip(ip.parse().unwrap()).is_err(), "{ip}");
        }
        for host in ["10.9.8.7", "012.1", "[::ffff:10.0.0.9]", "167772161"] {
            assert!(p.check_host(host).is_err(), "{host}");
        }
        for ip in ["11.0.0.1", "127.0.0.1", "192.168.1.8", "::1", "fd00::1"] {
            assert!(p.check_ip(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        assert!(
            p.deny_rules().iter().any(|r| r == "10.0.0.0/8"),
            "{:?}",
            p.deny_rules()
        );
        // Every prefix of the mapped range parses and never denies more than it says.
        for prefix in 104..=128u8 {
            let p = Policy::without_defaults(
                Duration::from_secs(1),
                false,
                &[format!("::ffff:10.0.0.0/{prefix}")],
            )
            .unwrap();
            assert!(
                p.check_ip("10.0.0.0".parse().unwrap()).is_err(),
                "/{prefix}"
            );
            assert!(p.check_ip("11.0.0.0".parse().unwrap()).is_ok(), "/{prefix}");
            assert!(
                p.check_ip("127.0.0.1".parse().unwrap()).is_ok(),
                "/{prefix}"
            );
        }
        let all_v4 = deny(&["::ffff:0.0.0.0/96"]);
        assert!(all_v4.check_ip("8.8.8.8".parse().unwrap()).is_err());
        assert!(all_v4.check_ip("::1".parse().unwrap()).is_ok());
        // A network wider than the mapped range holds every IPv4 address too.
        let wide = deny(&["::ffff:0.0.0.0/95"]);
        assert!(wide.check_ip("8.8.8.8".parse().unwrap()).is_err());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["10.0.0.0/33", "not a host", "1.2.3.4/x", "", "a..b"] {
            let e = Policy::new(Duration::from_secs(1), false, &[bad.to_string()]).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(Policy::new(Duration::ZERO, false, &[]).is_err());
    }

    #[test]
    fn without_defaults_allows_link_local() {
        let p = Policy::without_defaults(Duration::from_secs(1), false, &[]).unwrap();
        assert!(p.check_host("169.254.169.254").is_ok());
    }

    #[test]
    fn file_roots() {
        let dir = std::env::temp_dir().join(format!("broked-probe-roots-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ok")).unwrap();
        std::fs::write(dir.join("ok/a.db"), b"x").unwrap();
        std::fs::write(dir.join("b.db"), b"x").unwrap();
        let p = Policy::default().with_file_roots(vec![dir.join("ok")]);
        assert!(p.check_path(&dir.join("ok/a.db")).is_ok());
        assert_eq!(
            p.check_path(&dir.join("b.db")).unwrap_err().kind,
            Failure::Blocked
        );
        assert_eq!(
            p.check_path(&dir.join("ok/../b.db")).unwrap_err().kind,
            Failure::Blocked
        );
        assert_eq!(
            p.check_path(&dir.join("ok/none.db")).unwrap_err().kind,
            Failure::NotFound
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
