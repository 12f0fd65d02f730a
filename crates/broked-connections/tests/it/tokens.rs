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
