//! Issue 20, dual-role rotation (`extra.rotation_roles`, docs/rotation.md) against the real
//! PostgreSQL and MariaDB of the test suite, with two roles of each test's own (distinctive
//! passwords, dropped afterwards) changed through an admin connection that lists them in its
//! `extra.rotation_allowed_roles`: URIs resolved before each switch keep working, the role just
//! switched away from keeps its password until its own next rotation, a crash after the change
//! leaves a stored login and password that log in, and an admin changes no role it does not
//! list (docs/security.md).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use broked_connections::{
    ConnectionInput, ConnectionUpdate, Connections, Error, RecoveryOutcome, Secret, SecretUpdate,
    UpdateMode,
};
use serde_json::json;

use crate::rotation::{
    MyUser, PgRole, StopOnDrop, query_once, rotation_child, rt, run_rotation_child, stored_password,
};

const PW_A: &str = "Dual-A-Initial-Pw-5kQz";
const PW_B: &str = "Dual-B-Initial-Pw-8nRw";
const PW_VICTIM: &str = "Dual-Victim-Pw-2hJc";
const PW_MADE_UP: &str = "Dual-MadeUp-Pw-6tLp";

/// The stored login of `conn_id`.
fn stored_login(c: &Connections, conn_id: &str) -> String {
    c.resolve_fresh(conn_id)
        .unwrap()
        .connection
        .login
        .clone()
        .unwrap()
}

/// The admin connection `pg-admin`: the test suite's PostgreSQL user (CREATEROLE), listing
/// `allowed` in its `extra.rotation_allowed_roles` (none: no list).
fn pg_admin(c: &Connections, role: &PgRole, allowed: &[&str]) {
    let pg = broked_testenv::postgres().unwrap();
    let mut extra = json!({"sslmode": "disable"});
    if !allowed.is_empty() {
        extra["rotation_allowed_roles"] = json!(allowed);
    }
    c.create(ConnectionInput {
        conn_id: Some("pg-admin".into()),
        conn_type: Some("postgres".into()),
        host: Some(role.host.clone()),
        port: Some(i64::from(role.port)),
        schema: Some(role.db.clone()),
        login: Some(pg.get("USER").into()),
        password: Some(pg.get("PASSWORD").into()),
        extra: Some(extra.to_string().into()),
        ..Default::default()
    })
    .unwrap();
}

/// `pg-dual`: logs in as `a` with `PW_A`, alternates with `b` through `pg-admin`.
fn pg_dual(c: &Connections, a: &PgRole, b: &PgRole) {
    let mut input = a.input("pg-dual");
    input.password = Some(PW_A.into());
    input.extra = Some(
        json!({"sslmode": "disable", "rotation_conn_id": "pg-admin",
               "rotation_roles": [a.name, b.name]})
        .to_string()
        .into(),
    );
    c.create(input).unwrap();
}

/// The password a URI carries (`scheme://login:PASSWORD@…`; rotated ones are `[A-Za-z0-9]`).
fn uri_password(uri: &str) -> String {
    let rest = uri.split_once("://").unwrap().1;
    let userinfo = rest.split_once('@').unwrap().0;
    userinfo.split_once(':').unwrap().1.to_owned()
}

fn uri_login(uri: &str) -> String {
    let rest = uri.split_once("://").unwrap().1;
    rest.split_once('@')
        .unwrap()
        .0
        .split_once(':')
        .unwrap()
        .0
        .to_owned()
}

/// One query on a new connection to `uri`; `Err(code)` on failure.
fn query(uri: &str) -> Result<(), Option<String>> {
    rt().block_on(query_once(uri))
}

/// `rotations` dual-role rotations of `conn_id` (first login `first`, other role `second`)
/// while a pipeline loop on another handle resolves the URI and connects up to 150 ms later —
/// **without** any retry: zero failed queries. After each rotation: the report names the role
/// rotated and the one switched from; a URI resolved just before the switch still connects;
/// the stored login is the other role, whose new password logs in; the previous role still
/// logs in with its password; and the URI resolved before the rotation before (the role just
/// rotated, with its old password) no longer does.
fn dual_rotations_under_load(
    db: &std::path::Path,
    conn_id: &str,
    rotations: usize,
    (first, second): (&str, &str),
) {
    let rotator = Connections::open(db).unwrap();
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            let pipeline = Connections::open(db).unwrap();
            let rt = rt();
            let mut delay = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A pipeline resolves, then connects a little later — across a switch now
                // and then.
                let resolved = pipeline.resolve(conn_id).unwrap();
                delay = (delay + 37) % 150;
                std::thread::sleep(Duration::from_millis(delay));
                match rt.block_on(query_once(resolved.uri.expose())) {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(code) => {
                        eprintln!("a pipeline query failed: {code:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
        // A failed assertion below must stop the pipeline loop too, or the scope never ends.
        let _stop = StopOnDrop(&stop);
        let rt = rt();
        let mut before_previous: Option<String> = None;
        for i in 0..rotations {
            let held = rotator
                .resolve_fresh(conn_id)
                .unwrap()
                .uri
                .expose()
                .to_owned();
            let login = uri_login(&held);
            let want = if login == first { second } else { first };
            assert_eq!(
                login,
                if i % 2 == 0 { first } else { second },
                "rotation {i}"
            );
            let report = rt
                .block_on(rotator.rotate_password(conn_id))
                .unwrap_or_else(|e| panic!("rotation {i}: {e}"));
            assert_eq!(report.role, want, "rotation {i}: the role rotated");
            assert_eq!(report.previous_role.as_deref(), Some(login.as_str()));
            assert!(
                report.via.is_some(),
                "rotation {i}: through the admin connection"
            );
            assert_eq!(
                stored_login(&rotator, conn_id),
                want,
                "rotation {i}: switched"
            );
            let now = rotator
                .resolve_fresh(conn_id)
                .unwrap()
                .uri
                .expose()
                .to_owned();
            assert_eq!(
                query(&now),
                Ok(()),
                "rotation {i}: the stored login logs in"
            );
            assert_eq!(uri_password(&now).len(), 32);
            assert_eq!(
                query(&held),
                Ok(()),
                "rotation {i}: the URI resolved just before the switch still logs in"
            );
            if let Some(old) = &before_previous {
                // The role rotated now had the password of the URI from before the rotation
                // before: that one no longer logs in.
                assert_eq!(uri_login(old), want);
                let code = query(old).unwrap_err();
                assert!(
                    code.as_deref()
                        .is_some_and(broked_connections::is_auth_failure_code),
                    "rotation {i}: {code:?}"
                );
            }
            before_previous = Some(held);
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    eprintln!("pipeline: {ok} queries without a retry, {failed} failed");
    assert_eq!(failed, 0, "no pipeline query may fail");
    assert!(ok >= rotations, "the pipeline ran ({ok} queries)");
    assert!(rotator.pending_rotations().unwrap().is_empty());
}

#[test]
fn postgres_dual_role_rotations_keep_resolved_uris_working() {
    let (Some(a), Some(b)) = (PgRole::named("duala", PW_A), PgRole::named("dualb", PW_B)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    pg_admin(&c, &a, &[&a.name, &b.name]);
    pg_dual(&c, &a, &b);
    // The resolved URI carries neither rotation key.
    let uri = c.resolve("pg-dual").unwrap().uri.expose().to_owned();
    assert!(!uri.contains("rotation") && !uri.contains(&b.name));
    dual_rotations_under_load(&db, "pg-dual", 6, (&a.name, &b.name));
    // Six rotations: each role rotated three times; the first role is the login again, and
    // the second still logs in with the password of the version before.
    assert_eq!(stored_login(&c, "pg-dual"), a.name);
    assert!(!a.logs_in(PW_A) && !b.logs_in(PW_B));
    let versions = c.versions("pg-dual").unwrap();
    assert!(versions.len() >= 7, "one version per rotation");
    // The admin's own password is unchanged.
    let pg = broked_testenv::postgres().unwrap();
    assert_eq!(stored_password(&c, "pg-admin"), pg.get("PASSWORD"));
}

#[test]
fn mariadb_dual_role_rotations_keep_resolved_uris_working() {
    let (Some(a), Some(b)) = (MyUser::named("duala", PW_A), MyUser::named("dualb", PW_B)) else {
        return;
    };
    let my = broked_testenv::mysql().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    let admin_extra = json!({"ssl_mode": "disabled", "rotation_allowed_roles": [a.name, b.name]});
    c.create(ConnectionInput {
        conn_id: Some("my-admin".into()),
        conn_type: Some("mysql".into()),
        host: Some(a.host.clone()),
        port: Some(i64::from(a.port)),
        login: Some(my.get("USER").into()),
        password: Some(my.get("PASSWORD").into()),
        extra: Some(admin_extra.to_string().into()),
        ..Default::default()
    })
    .unwrap();
    let mut input = a.input("my-dual");
    input.password = Some(PW_A.into());
    input.extra = Some(
        json!({"ssl_mode": "disabled", "rotation_conn_id": "my-admin",
               "rotation_account_host": "127.0.0.1", "rotation_roles": [a.name, b.name]})
        .to_string()
        .into(),
    );
    c.create(input).unwrap();
    dual_rotations_under_load(&db, "my-dual", 4, (&a.name, &b.name));
    assert_eq!(stored_login(&c, "my-dual"), a.name);
    assert!(!a.logs_in(PW_A) && !b.logs_in(PW_B));
}

/// Killed after the server took the new password of the role not in use, before the store
/// write: the stored login and password still log in (the role in use was not touched), and
/// recovery keeps them; the next rotation switches as usual.
#[test]
fn a_dual_role_rotation_killed_after_alter_role_leaves_the_stored_login_working() {
    if run_rotation_child() {
        return;
    }
    let (Some(a), Some(b)) = (PgRole::named("killa", PW_A), PgRole::named("killb", PW_B)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    pg_admin(&c, &a, &[&a.name, &b.name]);
    pg_dual(&c, &a, &b);
    let test = "rotation_roles::a_dual_role_rotation_killed_after_alter_role_leaves_the_stored_login_working";
    let mut child = rotation_child(test, &db, "pg-dual")
        .env(broked_connections::FAULT_VAR, "hold-after-alter")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the child ended before the fault point: {seen}");
        seen.push_str(&line);
        if line.contains(broked_connections::FAULT_POINT) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL, between ALTER ROLE and the store write
    child.wait().unwrap();
    assert!(!b.logs_in(PW_B), "the role not in use has its new password");
    assert!(a.logs_in(PW_A), "no change on the role in use");
    assert_eq!(stored_login(&c, "pg-dual"), a.name);
    assert_eq!(
        stored_password(&c, "pg-dual"),
        PW_A,
        "the stored login logs in"
    );
    assert_eq!(c.pending_rotations().unwrap(), vec!["pg-dual".to_owned()]);
    // The journal holds neither the new password nor the role in the clear.
    let text = String::from_utf8_lossy(&std::fs::read(&db).unwrap()).into_owned()
        + &String::from_utf8_lossy(
            &std::fs::read(dir.path().join("broked.db-wal")).unwrap_or_default(),
        );
    assert!(!text.contains(PW_A) && !text.contains(PW_B));
    let after = Connections::open(&db).unwrap();
    let recovered = rt().block_on(after.recover_rotations()).unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].outcome, RecoveryOutcome::Kept);
    assert!(after.pending_rotations().unwrap().is_empty());
    assert_eq!(stored_password(&after, "pg-dual"), PW_A);
    assert!(a.logs_in(PW_A));
    // The next rotation switches to the other role as usual.
    let report = rt().block_on(after.rotate_password("pg-dual")).unwrap();
    assert_eq!(report.role, b.name);
    assert!(b.logs_in(&stored_password(&after, "pg-dual")));
    assert!(a.logs_in(PW_A));
}

/// The store write fails three times after the server took the new password: nothing to set
/// back (the role in use was not touched), the stored login and password log in.
#[test]
fn a_failed_store_write_in_dual_role_mode_keeps_the_stored_login() {
    if run_rotation_child() {
        return;
    }
    let (Some(a), Some(b)) = (PgRole::named("storea", PW_A), PgRole::named("storeb", PW_B)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    pg_admin(&c, &a, &[&a.name, &b.name]);
    pg_dual(&c, &a, &b);
    let (status, out) = broked_testenv::run_output(
        rotation_child(
            "rotation_roles::a_failed_store_write_in_dual_role_mode_keeps_the_stored_login",
            &db,
            "pg-dual",
        )
        .env(broked_connections::FAULT_VAR, "fail-store"),
    );
    assert!(status.success(), "{out}");
    assert!(
        out.contains("failed: password rotation of \"pg-dual\" failed"),
        "{out}"
    );
    assert!(
        out.contains("the stored password is unchanged and logs in"),
        "{out}"
    );
    assert_eq!(stored_login(&c, "pg-dual"), a.name);
    assert_eq!(stored_password(&c, "pg-dual"), PW_A);
    assert!(a.logs_in(PW_A));
    assert!(c.pending_rotations().unwrap().is_empty());
    for secret in [PW_A, PW_B] {
        assert!(!out.contains(secret), "{out}");
    }
}

/// What a rotation through an admin connection refuses, each before any change
/// (docs/security.md): dual-role mode without an admin, an admin that does not list the role
/// not in use, an admin asked to change its own login, and — one role, through an admin that
/// does not list it — a stored password that does not log in as the role (a connection made
/// with any login and a made-up password). And the admin's allow-list is bound to the admin's
/// password: changing it while the password is kept is refused.
#[test]
fn an_admin_changes_only_the_roles_it_lists_or_that_the_connection_proves() {
    let (Some(a), Some(b), Some(victim)) = (
        PgRole::named("refa", PW_A),
        PgRole::named("refb", PW_B),
        PgRole::named("victim", PW_VICTIM),
    ) else {
        return;
    };
    let pg = broked_testenv::postgres().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = Connections::open(dir.path().join("broked.db")).unwrap();
    pg_admin(&c, &a, &[&a.name, &b.name]);
    let unchanged = || {
        assert!(a.logs_in(PW_A) && b.logs_in(PW_B) && victim.logs_in(PW_VICTIM));
    };
    let invalid = |conn_id: &str, field: &str| {
        let err = rt().block_on(c.rotate_password(conn_id)).unwrap_err();
        let Error::Invalid(v) = &err else {
            panic!("{conn_id}: {err}")
        };
        assert!(v.0.iter().any(|e| e.field == field), "{conn_id}: {err}");
        for secret in [PW_A, PW_B, PW_VICTIM, PW_MADE_UP, pg.get("PASSWORD")] {
            assert!(!err.to_string().contains(secret), "{err}");
        }
        err.to_string()
    };
    let dual = |id: &str, login: &PgRole, extra: serde_json::Value| {
        let mut input = login.input(id);
        input.password = Some(if login.name == a.name { PW_A } else { PW_B }.into());
        input.extra = Some(extra.to_string().into());
        c.create(input).unwrap();
    };

    // Dual-role mode without an admin connection.
    dual(
        "no-admin",
        &a,
        json!({"sslmode": "disable", "rotation_roles": [a.name, b.name]}),
    );
    let e = invalid("no-admin", "extra");
    assert!(e.contains("rotation_conn_id"), "{e}");
    unchanged();

    // The attack: the role not in use is one the admin does not list (a superuser, say).
    dual(
        "to-victim",
        &a,
        json!({"sslmode": "disable", "rotation_conn_id": "pg-admin",
               "rotation_roles": [a.name, victim.name]}),
    );
    let e = invalid("to-victim", "extra");
    assert!(
        e.contains("rotation_allowed_roles") && !e.contains(&victim.name),
        "{e}"
    );
    unchanged();
    assert_eq!(stored_login(&c, "to-victim"), a.name);

    // The same through a merge patch of an existing dual-role connection, its password kept:
    // the patch is taken (rotation_roles binds nothing), the rotation is not.
    dual(
        "legit",
        &a,
        json!({"sslmode": "disable", "rotation_conn_id": "pg-admin",
               "rotation_roles": [a.name, b.name]}),
    );
    c.update(
        "legit",
        ConnectionUpdate {
            extra: SecretUpdate::Merge(Secret::new(
                json!({"rotation_roles": [a.name, victim.name]}).to_string(),
            )),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
    invalid("legit", "extra");
    unchanged();

    // One role through the admin, not listed, with a made-up password: refused before any
    // change, naming the password.
    let mut made_up = victim.input("made-up");
    made_up.password = Some(PW_MADE_UP.into());
    made_up.extra = Some(
        json!({"sslmode": "disable", "rotation_conn_id": "pg-admin"})
            .to_string()
            .into(),
    );
    c.create(made_up).unwrap();
    let e = invalid("made-up", "password");
    assert!(e.contains("does not log in"), "{e}");
    unchanged();
    assert_eq!(stored_password(&c, "made-up"), PW_MADE_UP);
    assert!(c.pending_rotations().unwrap().is_empty());

    // The admin's own login, even when listed.
    let mut own = a.input("own");
    own.login = Some(pg.get("USER").into());
    own.password = Some(PW_MADE_UP.into());
    own.extra = Some(
        json!({"sslmode": "disable", "rotation_conn_id": "pg-admin"})
            .to_string()
            .into(),
    );
    c.create(own).unwrap();
    let e = invalid("own", "extra");
    assert!(e.contains("its own login"), "{e}");
    assert_eq!(stored_password(&c, "pg-admin"), pg.get("PASSWORD"));

    // Widening the admin's list needs the admin's password: with it kept, refused naming the
    // password (as a change of a securing key); the stored list is unchanged.
    for extra in [
        SecretUpdate::Merge(Secret::new(
            json!({"rotation_allowed_roles": [a.name, b.name, victim.name]}).to_string(),
        )),
        SecretUpdate::Set(Secret::new(
            json!({"sslmode": "disable", "rotation_allowed_roles": [victim.name]}).to_string(),
        )),
    ] {
        let err = c
            .update(
                "pg-admin",
                ConnectionUpdate {
                    extra,
                    ..Default::default()
                },
                UpdateMode::Merge,
            )
            .unwrap_err();
        let Error::Invalid(v) = &err else {
            panic!("{err}")
        };
        assert_eq!(v.0[0].field, "password", "{err}");
        assert!(err.to_string().contains("rotation_allowed_roles"), "{err}");
    }
    invalid("to-victim", "extra");
    unchanged();

    // With a made-up admin password the list may change — and the admin no longer logs in:
    // the rotation fails, nothing changes on the server.
    c.update(
        "pg-admin",
        ConnectionUpdate {
            password: SecretUpdate::Set(Secret::new(PW_MADE_UP)),
            extra: SecretUpdate::Merge(Secret::new(
                json!({"rotation_allowed_roles": [a.name, b.name, victim.name]}).to_string(),
            )),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
    let err = rt().block_on(c.rotate_password("to-victim")).unwrap_err();
    assert!(matches!(err, Error::Rotation { .. }), "{err}");
    assert!(!err.to_string().contains(PW_MADE_UP), "{err}");
    unchanged();
    assert_eq!(stored_login(&c, "to-victim"), a.name);
    assert_eq!(stored_password(&c, "to-victim"), PW_A);
}

/// Through an admin that does not list the role, the connection's own role is still rotated
/// when its stored password logs in (it proves the connection holds the role).
#[test]
fn an_admin_rotates_an_unlisted_role_whose_stored_password_logs_in() {
    let Some(a) = PgRole::named("proof", PW_A) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = Connections::open(dir.path().join("broked.db")).unwrap();
    pg_admin(&c, &a, &[]);
    let mut input = a.input("proved");
    input.password = Some(PW_A.into());
    input.extra = Some(
        json!({"sslmode": "disable", "rotation_conn_id": "pg-admin"})
            .to_string()
            .into(),
    );
    c.create(input).unwrap();
    let report = rt().block_on(c.rotate_password("proved")).unwrap();
    assert_eq!(
        (report.role.as_str(), report.previous_role),
        (a.name.as_str(), None)
    );
    let new = stored_password(&c, "proved");
    assert!(a.logs_in(&new) && !a.logs_in(PW_A));
}
