//! Named API tokens with scopes and conn_id globs (issue 16): created once and shown once,
//! stored as their SHA-256, listed without the token, revoked by name, and checked per request
//! by the server ([`Connections::authenticate`] gives a [`Grant`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broked_core::{FieldError, Secret, ValidationErrors};
use broked_store::{Store, StoreError, StoredToken};

use crate::error::{Error, store_err};
use crate::info::{now, rfc3339};

/// What a token may do. `admin` implies every other scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// List and get connections and pipelines (masked), used-by, the type table.
    Read,
    /// Test connections (saved and unsaved).
    Test,
    /// Create, update and delete connections and pipelines.
    Write,
    /// Tokens (and, later, the audit log).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Test, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Test => "test",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s.trim())
            .ok_or_else(|| "scopes are read, test, write and admin".to_owned())
    }
}

/// What one request may do: the scopes and conn_id globs of the token it presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's name (`"bootstrap"` for `--api-token`, `"local"` without any token).
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    /// `None`: every connection.
    pub conns: Option<Vec<String>>,
}

impl Grant {
    /// Everything, on every connection: the bootstrap token, or a server without tokens.
    pub fn all(name: &str) -> Grant {
        Grant {
            name: name.to_owned(),
            scopes: Scope::ALL.into_iter().collect(),
            conns: None,
        }
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// Whether the token may see the connection `conn_id` at all.
    pub fn sees(&self, conn_id: &str) -> bool {
        self.conns
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|g| glob_match(g, conn_id)))
    }

    /// Whether the token is limited to some connections.
    pub fn is_limited(&self) -> bool {
        self.conns.is_some()
    }
}

/// A token as `token list` shows it: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub conns: Option<Vec<String>>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// `*` any run of characters, `?` one character; everything else literal.
pub fn glob_match(glob: &str, text: &str) -> bool {
    fn go(g: &[u8], t: &[u8]) -> bool {
        match (g.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&g[1..], t) || (!t.is_empty() && go(g, &t[1..])),
            (Some(b'?'), Some(_)) => go(&g[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&g[1..], &t[1..]),
            _ => false,
        }
    }
    go(glob.as_bytes(), text.as_bytes())
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-".contains(c))
}

fn valid_glob(glob: &str) -> bool {
    !glob.is_empty()
        && glob.len() <= 128
        && glob
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*?".contains(&c))
}

/// Parses `30d`, `12h`, `90m`, `2w` (a positive whole number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let rule = "a duration like 30d, 12h, 90m or 2w";
    // The unit is the last character, whatever its width (`5é` is refused, not a panic).
    let at = text.char_indices().last().map_or(0, |(i, _)| i);
    let (n, unit) = text.split_at(at);
    let n: u64 = n.parse().map_err(|_| rule.to_owned())?;
    let secs = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(rule.to_owned()),
    };
    if n == 0 || n > 100_000 {
        return Err(rule.to_owned());
    }
    Ok(Duration::from_secs(n * secs))
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn info(t: &StoredToken) -> TokenInfo {
    TokenInfo {
        name: t.name.clone(),
        scopes: split_list(&t.scopes)
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        conns: t.conns.as_deref().map(split_list),
        created_at: t.created_at.clone(),
        expires_at: t.expires_at.clone(),
        last_used_at: t.last_used_at.clone(),
    }
}

/// A token found in the store, with what it grants and when it expires, read once: the
/// cache keeps these, so a request that presents a known token parses nothing and copies
/// only the grant (issue 19: the per-request cost of a named token).
#[derive(Clone)]
struct Known {
    grant: Grant,
    /// `None`: never. An unreadable time is the Unix epoch: expired (fail closed).
    expires: Option<time::OffsetDateTime>,
}

impl Known {
    fn of(t: &StoredToken) -> Known {
        let i = info(t);
        let expires = t.expires_at.as_ref().map(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        });
        Known {
            grant: Grant {
                name: i.name,
                scopes: i.scopes.into_iter().collect(),
                conns: i.conns,
            },
            expires,
        }
    }

    fn expired(&self) -> bool {
        self.expires
            .is_some_and(|at| at <= time::OffsetDateTime::now_utc())
    }
}

/// The named tokens of one store, with a cache of those seen lately. `Connections` delegates
/// its token calls here.
pub(crate) struct Tokens {
    store: Arc<dyn Store>,
    cache: Mutex<TokenCache>,
}

/// What [`Tokens::authorize`] answers: whether named tokens exist, the presented token's
/// grant (if it is a valid one), and the generation the token cache was checked at.
pub(crate) type Authorized = (bool, Option<Grant>, Option<u64>);

/// Authenticated tokens by hash while the store's generation stays the same (a revoke or a
/// new token changes it), and when each was last recorded as used.
#[derive(Default)]
struct TokenCache {
    generation: Option<u64>,
    by_hash: HashMap<String, Known>,
    any: Option<bool>,
    touched: HashMap<String, Instant>,
}

/// How often a token's `last_used_at` is written, at most, per process.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

impl Tokens {
    pub(crate) fn new(store: Arc<dyn Store>) -> Tokens {
        Tokens {
            store,
            cache: Mutex::new(TokenCache::default()),
        }
    }

    /// Creates a token; returns it — the only time it is shown — with what `token list` shows.
    pub(crate) fn create_token(
        &self,
        name: &str,
        scopes: &[Scope],
        conns: Option<Vec<String>>,
        expires_in: Option<Duration>,
    ) -> Result<(TokenInfo, Secret), Error> {
        let mut errors = Vec::new();
        if !valid_name(name) {
            errors.push(FieldError {
                field: "name",
                message: "name: 1 to 64 lowercase letters, digits, '_' or '-', starting with a \
                          letter or digit"
                    .into(),
            });
        }
        if scopes.is_empty() {
            errors.push(FieldError {
                field: "scopes",
                message: "give at least one scope: read, test, write, admin".into(),
            });
        }
        if let Some(globs) = &conns {
            if globs.is_empty() || !globs.iter().all(|g| valid_glob(g)) {
                errors.push(FieldError {
                    field: "conns",
                    message: "conns: conn_id globs of lowercase letters, digits, '_', '-', '*' \
                              and '?', comma-separated (like team-a-*)"
                        .into(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(ValidationErrors(errors)));
        }
        let scopes: BTreeSet<Scope> = scopes.iter().copied().collect();
        let token = broked_crypto::new_token()?;
        let created = time::OffsetDateTime::now_utc();
        let row = StoredToken {
            name: name.to_owned(),
            hash: broked_crypto::token_hash(&token),
            scopes: scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
            conns: conns.map(|g| g.join(",")),
            created_at: rfc3339(created),
            expires_at: expires_in.map(|d| rfc3339(created + d)),
            last_used_at: None,
        };
        match self.store.insert_token(&row) {
            Ok(()) => {}
            Err(StoreError::TokenExists(n)) => return Err(Error::TokenExists(n)),
            Err(e) => return Err(store_err(e)),
        }
        Ok((info(&row), Secret::new(token.as_str())))
    }

    /// Every token, by name; never the token itself.
    pub(crate) fn list_tokens(&self) -> Result<Vec<TokenInfo>, Error> {
        Ok(self
            .store
            .list_tokens()
            .map_err(store_err)?
            .iter()
            .map(info)
            .collect())
    }

    /// Revokes a token: it stops working at once, in every process.
    pub(crate) fn revoke_token(&self, name: &str) -> Result<(), Error> {
        if self.store.delete_token(name).map_err(store_err)? {
            Ok(())
        } else {
            Err(Error::TokenNotFound(name.to_owned()))
        }
    }

    /// Whether any named token exists (then a server requires a token on every request).
    pub(crate) fn tokens_exist(&self) -> Result<bool, Error> {
        let mut cache = self.fresh_token_cache()?;
        if let Some(any) = cache.any {
            return Ok(any);
        }
        let any = self.store.count_tokens().map_err(store_err)? > 0;
        cache.any = Some(any);
        Ok(any)
    }

    /// What `presented` may do, or `None` if it is no valid token (unknown, revoked or
    /// expired — the caller cannot tell which, and neither can the client).
    pub(crate) fn authenticate(&self, presented: &str) -> Result<Option<Grant>, Error> {
        if !presented.starts_with(broked_crypto::TOKEN_PREFIX) || presented.len() > 128 {
            return Ok(None);
        }
        let hash = broked_crypto::token_hash(presented);
        let cached = self.fresh_token_cache()?.by_hash.get(&hash).cloned();
        let token = match cached {
            Some(t) => t,
            None => {
                let Some(t) = self.store.token_by_hash(&hash).map_err(store_err)? else {
                    return Ok(None);
                };
                let known = Known::of(&t);
                self.fresh_token_cache()?
                    .by_hash
                    .insert(hash.clone(), known.clone());
                known
            }
        };
        if token.expired() {
            return Ok(None);
        }
        self.touch(&token.grant.name);
        Ok(Some(token.grant))
    }

    /// [`Tokens::tokens_exist`] and, if a token is presented, [`Tokens::authenticate`] — with
    /// one look at the store's generation for both (a server asks both of every request:
    /// issue 19 measured the second look as a syscall or two per request).
    pub(crate) fn authorize(&self, presented: Option<&str>) -> Result<Authorized, Error> {
        // With the store allowed, every path answers.
        self.authorize_with(presented, true)
            .map(|a| a.unwrap_or((true, None, None)))
    }

    /// [`Tokens::authorize`] if it needs no read or write of the store — the cache holds the
    /// answer and no last use is due to be recorded — else `None` (and nothing done): the
    /// server then asks [`Tokens::authorize`] off its async workers. The generation is still
    /// looked at (cheap: `fresh.rs` of each backend).
    pub(crate) fn authorize_cached(
        &self,
        presented: Option<&str>,
    ) -> Result<Option<Authorized>, Error> {
        self.authorize_with(presented, false)
    }

    fn authorize_with(
        &self,
        presented: Option<&str>,
        may_use_store: bool,
    ) -> Result<Option<Authorized>, Error> {
        let generation = {
            let cache = if may_use_store {
                self.fresh_token_cache()?
            } else {
                match self.fresh_token_cache_cached()? {
                    Some(cache) => cache,
                    None => return Ok(None),
                }
            };
            let generation = cache.generation;
            let any = cache.any;
            drop(cache);
            let any = match any {
                Some(any) => any,
                None if !may_use_store => return Ok(None),
                None => {
                    let any = self.store.count_tokens().map_err(store_err)? > 0;
                    let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    if cache.generation == generation {
                        cache.any = Some(any);
                    }
                    any
                }
            };
            if !any {
                return Ok(Some((false, None, generation)));
            }
            generation
        };
        let Some(presented) = presented else {
            return Ok(Some((true, None, generation)));
        };
        if !presented.starts_with(broked_crypto::TOKEN_PREFIX) || presented.len() > 128 {
            return Ok(Some((true, None, generation)));
        }
        let hash = broked_crypto::token_hash(presented);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            (cache.generation == generation)
                .then(|| cache.by_hash.get(&hash).cloned())
                .flatten()
        };
        let token = match cached {
            Some(t) => t,
            None if !may_use_store => return Ok(None),
            None => {
                // Read outside the cache's lock; kept only while the generation it was read
                // under is still the cache's.
                let Some(t) = self.store.token_by_hash(&hash).map_err(store_err)? else {
                    return Ok(Some((true, None, generation)));
                };
                let known = Known::of(&t);
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.generation == generation {
                    cache.by_hash.insert(hash, known.clone());
                }
                known
            }
        };
        if token.expired() {
            return Ok(Some((true, None, generation)));
        }
        // Recording the use is a write: only when it is due (once a minute), and only where
        // the store may be used.
        if self.touch_due(&token.grant.name) {
            if !may_use_store {
                return Ok(None);
            }
            self.touch(&token.grant.name);
        }
        Ok(Some((true, Some(token.grant), generation)))
    }

    /// [`Tokens::tokens_exist`] if the cache holds the answer, else `None`.
    pub(crate) fn tokens_exist_cached(&self) -> Result<Option<bool>, Error> {
        Ok(self.fresh_token_cache_cached()?.and_then(|cache| cache.any))
    }

    /// Whether [`Tokens::touch`] would record a use of `name` now (a write of the store).
    fn touch_due(&self, name: &str) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .touched
            .get(name)
            .is_none_or(|at| at.elapsed() >= TOUCH_EVERY)
    }

    /// Records a use, at most once a minute per token and process; a failure only logs.
    fn touch(&self, name: &str) {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let now_i = Instant::now();
            match cache.touched.get(name) {
                Some(at) if now_i.duration_since(*at) < TOUCH_EVERY => return,
                _ => {
                    cache.touched.insert(name.to_owned(), now_i);
                }
            }
        }
        if let Err(e) = self.store.touch_token(name, &now()) {
            tracing::warn!(token = name, error = %e, "cannot record the token's last use");
        }
    }

    /// The token cache, emptied first if the store changed since it was filled.
    fn fresh_token_cache(&self) -> Result<std::sync::MutexGuard<'_, TokenCache>, Error> {
        let generation = self.store.generation().map_err(store_err)?;
        Ok(self.token_cache_at(generation))
    }

    /// [`Tokens::fresh_token_cache`] if the store's generation can be had without waiting
    /// for the database ([`Store::generation_cached`]), else `None`.
    fn fresh_token_cache_cached(
        &self,
    ) -> Result<Option<std::sync::MutexGuard<'_, TokenCache>>, Error> {
        let generation = self.store.generation_cached().map_err(store_err)?;
        Ok(generation.map(|g| self.token_cache_at(g)))
    }

    /// The token cache, emptied first if it was filled at another generation than
    /// `generation`.
    fn token_cache_at(&self, generation: u64) -> std::sync::MutexGuard<'_, TokenCache> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.generation != Some(generation) {
            cache.generation = Some(generation);
            cache.by_hash.clear();
            cache.any = None;
        }
        cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (g, t, ok) in [
            ("team-a-*", "team-a-pg", true),
            ("team-a-*", "team-a-", true),
            ("team-a-*", "team-b-pg", false),
            ("*-prod", "pg-prod", true),
            ("pg-?", "pg-1", true),
            ("pg-?", "pg-12", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "anything", true),
        ] {
            assert_eq!(glob_match(g, t), ok, "{g} {t}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(2 * 604_800)));
        // Multi-byte last characters are refused, never a panic (the API passes any text).
        for bad in [
            "",
            "d",
            "0d",
            "30",
            "30s",
            "-1d",
            "1.5d",
            "5é",
            "é",
            "30日",
            "1d\u{301}",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn admin_implies_every_scope_and_globs_limit_what_is_seen() {
        let g = Grant {
            name: "t".into(),
            scopes: [Scope::Admin].into_iter().collect(),
            conns: Some(vec!["a-*".into()]),
        };
        assert!(Scope::ALL.iter().all(|s| g.allows(*s)));
        assert!(g.sees("a-1") && !g.sees("b-1"));
        let r = Grant {
            name: "r".into(),
            scopes: [Scope::Read].into_iter().collect(),
            conns: None,
        };
        assert!(r.allows(Scope::Read) && !r.allows(Scope::Write) && r.sees("x"));
    }
}
