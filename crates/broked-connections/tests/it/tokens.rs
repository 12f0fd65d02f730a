//! Issue 16: named API tokens with scopes and conn_id globs.

use std::time::Duration;

use broked_connections::{Scope, glob_match};

use super::*;

#[test]
fn a_token_is_shown_once_stored_hashed_and_works_until_revoked() {
    let db = Db::new();
    let c = db.open();
    assert!(!c.tokens_exist().unwrap());
    let (info, token) = c
        .create_token(
            "ci",
            &[Scope::Read, Scope::Test],
            Some(vec!["team-a-*".into()]),
            Some(Duration::from_secs(3600)),
        )
        .unwrap();
    let token = token.expose().to_owned();
    assert!(token.starts_with("brk_"));
    assert_eq!(info.scopes, [Scope::Read, Scope::Test]);
    assert!(info.expires_at.is_some());
    assert!(c.tokens_exist().unwrap());
    // Never stored or listed in clear.
    let listed = format!("{:?}", c.list_tokens().unwrap());
    assert!(
        !listed.contains(&token) && listed.contains("\"ci\""),
        "{listed}"
    );
    let dir = db.path.parent().unwrap();
    assert_eq!(files_contain(dir, token.as_bytes()), Vec::<PathBuf>::new());

    let grant = c.authenticate(&token).unwrap().expect("valid token");
    assert_eq!(grant.name, "ci");
    assert!(grant.allows(Scope::Read) && grant.allows(Scope::Test));
    assert!(!grant.allows(Scope::Write) && !grant.allows(Scope::Admin));
    assert!(grant.sees("team-a-pg") && !grant.sees("team-b-pg"));
    // Close misses are not tokens.
    for wrong in [
        &token[..token.len() - 1],
        &format!("{token}x"),
        "brk_",
        "",
        "Bearer x",
    ] {
        assert_eq!(c.authenticate(wrong).unwrap(), None, "{wrong}");
    }
    // The last use is recorded.
    assert!(c.list_tokens().unwrap()[0].last_used_at.is_some());

    // Revoked in another process: refused here at once.
    let other = db.open();
    other.revoke_token("ci").unwrap();
    assert_eq!(c.authenticate(&token).unwrap(), None);
    assert!(matches!(
        other.revoke_token("ci"),
        Err(Error::TokenNotFound(_))
    ));
    assert!(!c.tokens_exist().unwrap());
}

#[test]
fn expired_duplicate_and_invalid_tokens() {
    let db = Db::new();
    let c = db.open();
    let (_, token) = c
        .create_token(
            "short",
            &[Scope::Admin],
            None,
            Some(Duration::from_millis(1)),
        )
        .unwrap();
    assert_eq!(c.authenticate(token.expose()).unwrap(), None, "expired");
    assert!(matches!(
        c.create_token("short", &[Scope::Read], None, None),
        Err(Error::TokenExists(_))
    ));
    for (name, scopes, conns) in [
        ("Bad Name", vec![Scope::Read], None),
        ("ok", vec![], None),
        ("ok", vec![Scope::Read], Some(vec![])),
        ("ok", vec![Scope::Read], Some(vec!["UPPER*".to_owned()])),
    ] {
        assert!(
            matches!(
                c.create_token(name, &scopes, conns, None),
                Err(Error::Invalid(_))
            ),
            "{name}"
        );
    }
    assert!(glob_match("a-*", "a-b"));
}

/// `authorize_cached` answers only from the token cache, exactly as `authorize` would, and
/// says `None` — doing nothing — when the answer needs the store: the first look after any
/// commit (of this or another process), a token not cached yet, a last use due to be recorded.
#[test]
fn a_cached_authorization_answers_like_authorize_or_not_at_all() {
    let db = Db::new();
    let c = db.open();
    // Nothing cached yet.
    assert_eq!(c.authorize_cached(None).unwrap(), None);
    assert_eq!(c.tokens_exist_cached().unwrap(), None);
    let (no_tokens, _, _) = c.authorize(None).unwrap();
    assert!(!no_tokens);
    let cached = c.authorize_cached(None).unwrap().expect("cached now");
    assert!(!cached.0 && cached.1.is_none());
    assert_eq!(c.tokens_exist_cached().unwrap(), Some(false));

    let (_, token) = c.create_token("ci", &[Scope::Read], None, None).unwrap();
    let token = token.expose().to_owned();
    // A commit: the cache is stale until the store is read again.
    assert_eq!(c.authorize_cached(Some(&token)).unwrap(), None);
    let (any, grant, _) = c.authorize(Some(&token)).unwrap();
    assert!(any && grant.as_ref().is_some_and(|g| g.name == "ci"));
    // Recording that use was a commit too: one more look at the store fills the cache.
    assert_eq!(c.authorize_cached(Some(&token)).unwrap(), None);
    assert!(c.authorize(Some(&token)).unwrap().1.is_some());
    // Cached, and its last use recorded within the minute: answered without the store.
    let (any, grant, seen) = c.authorize_cached(Some(&token)).unwrap().expect("cached");
    assert!(any && grant.is_some_and(|g| g.name == "ci") && seen.is_some());
    // A wrong token in a store that has tokens needs no lookup to be refused only when it is
    // not shaped like one.
    let (any, grant, _) = c
        .authorize_cached(Some("not-a-token"))
        .unwrap()
        .expect("shape");
    assert!(any && grant.is_none());
    assert_eq!(c.authorize_cached(Some("brk_unknown")).unwrap(), None);
    // A commit of another process: stale again, and then the revoke is seen.
    db.open().revoke_token("ci").unwrap();
    assert_eq!(c.authorize_cached(Some(&token)).unwrap(), None);
    let (any, grant, _) = c.authorize(Some(&token)).unwrap();
    assert!(!any && grant.is_none());
}
