//! The target of a connection: everything a driver uses to decide where the secret goes.
//!
//! A stored password or extra is only ever sent to the target it was saved for. The target is
//! the type, host, port (the effective one: an empty port is the type's default) and login,
//! plus, per type, the `extra` keys that **secure** the connection to it (TLS mode, trusted
//! certificates, the SSH host key...). Changing or removing one of those while a stored secret
//! is kept would send the secret over a weaker channel, so it counts as a change of target.
//!
//! Keys that **name** a target (`host`, `port`, `user`, `dbname`, `endpoint_url`, a proxy...)
//! are refused in `extra` altogether: drivers such as libpq and sqlx let them override the
//! authority of the URI, so the password would go to wherever they say. Each has a field to
//! use instead. The table is documented in `docs/uri.md` and `docs/security.md`.
//!
//! Keys are compared case-insensitively with `-` and `_` alike (`ssl-mode` = `SSL_MODE`), since
//! drivers disagree on those spellings.

use serde_json::{Map, Value};

use crate::ConnType;

/// How an `extra` key relates to the target of a connection of some type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraKeyRole {
    /// The key names (part of) the target: refused in extra. `use_instead` says where the
    /// value belongs (`"host"`, `"port"`, `"login"`, `"password"`, `"schema"`), or is `None`
    /// when broked has no such setting (a proxy, a service file).
    Names { use_instead: Option<&'static str> },
    /// The key secures the connection to the target (TLS, host keys): part of the target.
    /// Also [`ROTATION_ALLOWED_ROLES_KEY`] of postgres and mysql, which secures what an admin
    /// password may be used for: changing it is refused while the password is kept.
    Secures,
}

/// The extra key that routes a connection through SSH bastions (`docs/tunnels.md`): the conn_id
/// of an sftp connection, or a list of them. It decides where the secret travels, so it secures
/// the target of every network type (changing it while a password is kept is refused like a
/// change of host), and it is broked's own setting, never a driver's: the URI builder leaves it
/// out.
pub const SSH_TUNNEL_KEY: &str = "ssh_tunnel";

/// Whether `key` is [`SSH_TUNNEL_KEY`] in any spelling drivers would accept (case, `-`).
pub fn is_tunnel_key(key: &str) -> bool {
    normalize(key) == SSH_TUNNEL_KEY
}

/// The `extra` keys of password rotation (`docs/rotation.md`): broked's own settings, never a
/// driver's, so the URI builder leaves them out like [`SSH_TUNNEL_KEY`].
pub const ROTATION_KEYS: &[&str] = &[
    "rotation_conn_id",
    "rotation_account_host",
    ROTATION_ROLES_KEY,
    ROTATION_ALLOWED_ROLES_KEY,
    crate::ROTATE_EVERY_KEY,
];

/// Dual-role rotation (`docs/rotation.md`): the two roles a connection's login alternates
/// between; a rotation sets a new password on the one not in use and switches the login to it.
pub const ROTATION_ROLES_KEY: &str = "rotation_roles";

/// On an admin connection (one that others name in `extra.rotation_conn_id`): the roles it
/// may change the password of for another connection without proof that the connection holds
/// the role's password (`docs/rotation.md`, `docs/security.md`). What the admin password may
/// be used for, so it is bound to that password like a securing key: changing it while the
/// password is kept is refused.
pub const ROTATION_ALLOWED_ROLES_KEY: &str = "rotation_allowed_roles";

/// The longest role name a rotation key may hold, in bytes: PostgreSQL's (NAMEDATALEN − 1),
/// beyond which it would silently truncate the name and change another role.
pub const MAX_ROLE_NAME: usize = 63;

/// Whether `key` is one of [`ROTATION_KEYS`] in any spelling drivers would accept (case, `-`).
pub fn is_rotation_key(key: &str) -> bool {
    let key = normalize(key);
    ROTATION_KEYS.contains(&key.as_str())
}

/// The value of the rotation key `name` (one of [`ROTATION_KEYS`]) in an extra object, in any
/// spelling drivers would accept; an error (naming no value) when it is there more than once.
pub fn rotation_key<'a>(
    map: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a Value>, String> {
    let mut found = map.iter().filter(|(k, _)| normalize(k) == name);
    let first = found.next().map(|(_, v)| v);
    if found.next().is_some() {
        return Err(format!(
            "extra has {name} more than once (spellings that differ only in case, '-' or '_'): \
             keep one"
        ));
    }
    Ok(first)
}

/// Whether `name` can be a role name in a rotation key (the message names no value).
fn role_name_rule(key: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.trim() != name || name.len() > MAX_ROLE_NAME || name.contains('\0') {
        return Err(format!(
            "extra.{key}: a role name must be 1 to {MAX_ROLE_NAME} bytes, without NUL and \
             without spaces around it"
        ));
    }
    Ok(())
}

/// `extra.rotation_roles` of an extra object: `None` when absent; exactly two distinct role
/// names, or an error that names no value.
pub fn rotation_roles(map: &Map<String, Value>) -> Result<Option<[String; 2]>, String> {
    let Some(value) = rotation_key(map, ROTATION_ROLES_KEY)? else {
        return Ok(None);
    };
    let rule = || {
        format!(
            "extra.{ROTATION_ROLES_KEY} must be a list of exactly two different role names, \
             like [\"etl_a\", \"etl_b\"]"
        )
    };
    let Some([Value::String(a), Value::String(b)]) = value.as_array().map(Vec::as_slice) else {
        return Err(rule());
    };
    role_name_rule(ROTATION_ROLES_KEY, a)?;
    role_name_rule(ROTATION_ROLES_KEY, b)?;
    if a == b {
        return Err(rule());
    }
    Ok(Some([a.clone(), b.clone()]))
}

/// `extra.rotation_allowed_roles` of an extra object: `None` when absent; one or more role
/// names, or an error that names no value.
pub fn rotation_allowed_roles(map: &Map<String, Value>) -> Result<Option<Vec<String>>, String> {
    let Some(value) = rotation_key(map, ROTATION_ALLOWED_ROLES_KEY)? else {
        return Ok(None);
    };
    let rule = format!(
        "extra.{ROTATION_ALLOWED_ROLES_KEY} must be a list of one or more role names, like \
         [\"etl_a\", \"etl_b\"]"
    );
    let items = value.as_array().filter(|a| !a.is_empty()).ok_or(&rule)?;
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        let name = item.as_str().ok_or(&rule)?;
        role_name_rule(ROTATION_ALLOWED_ROLES_KEY, name)?;
        names.push(name.to_owned());
    }
    Ok(Some(names))
}

/// The rules of the rotation keys that every write path checks (`Connection` validation), as
/// `(field, message)`; no message names a value. Each rotation key at most once in any
/// spelling; [`rotation_roles`] and [`rotation_allowed_roles`] well formed; and with
/// `rotation_roles`, the login one of the two roles (dual-role rotation switches it between
/// them); `rotate_every` an interval [`crate::parse_rotate_every`] reads (issue 20: refused
/// on save, so the schedule never meets a bad one but in a row saved before).
pub(crate) fn rotation_errors(
    login: Option<&str>,
    map: &Map<String, Value>,
) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut push = |field: &'static str, message: String| {
        // A key given twice is reported once, not again by the parse of its value.
        if !out.iter().any(|(f, m)| *f == field && *m == message) {
            out.push((field, message));
        }
    };
    for key in ROTATION_KEYS {
        if let Err(e) = rotation_key(map, key) {
            push("extra", e);
        }
    }
    match rotation_roles(map) {
        Err(e) => push("extra", e),
        Ok(Some(roles)) if !login.is_some_and(|l| roles.iter().any(|r| r == l)) => {
            let message = format!(
                "with extra.{ROTATION_ROLES_KEY} the login must be one of its two roles (the \
                 role in use; a rotation switches the login to the other)"
            );
            push("login", message.clone());
            push("extra", message);
        }
        Ok(_) => {}
    }
    if let Err(e) = rotation_allowed_roles(map) {
        push("extra", e);
    }
    // Absent, or there twice (reported above): nothing more to say.
    if let Ok(Some(every)) = rotation_key(map, crate::ROTATE_EVERY_KEY) {
        if every
            .as_str()
            .is_none_or(|t| crate::parse_rotate_every(t).is_err())
        {
            push("extra", crate::ROTATE_EVERY_RULE.to_owned());
        }
    }
    out
}

/// Keys that name a target for every network type.
/// A key that names a target, and the field to use instead (`None`: no such setting).
type Naming = (&'static str, Option<&'static str>);

const NAMES_COMMON: &[Naming] = &[
    ("host", Some("host")),
    ("hostname", Some("host")),
    ("hostaddr", Some("host")),
    ("server", Some("host")),
    ("address", Some("host")),
    ("addr", Some("host")),
    ("url", Some("host")),
    ("uri", Some("host")),
    ("dsn", Some("host")),
    ("endpoint", Some("host")),
    ("endpoint_url", Some("host")),
    ("base_url", Some("host")),
    ("connection_string", Some("host")),
    ("port", Some("port")),
    ("user", Some("login")),
    ("username", Some("login")),
    ("login", Some("login")),
    ("uid", Some("login")),
    ("password", Some("password")),
    ("passwd", Some("password")),
    ("pass", Some("password")),
    ("pwd", Some("password")),
    ("proxy", None),
    ("proxies", None),
    ("proxy_url", None),
    ("http_proxy", None),
    ("https_proxy", None),
    ("all_proxy", None),
    ("socks_proxy", None),
    ("proxy_command", None),
    ("proxycommand", None),
    ("proxy_jump", None),
    ("proxyjump", None),
];

const NAMES_POSTGRES: &[Naming] = &[
    ("dbname", Some("schema")),
    ("database", Some("schema")),
    ("db", Some("schema")),
    ("service", None),
    ("servicefile", None),
    ("passfile", Some("password")),
    ("socket", Some("host")),
    ("unix_socket", Some("host")),
];

const NAMES_MYSQL: &[Naming] = &[
    ("socket", Some("host")),
    ("unix_socket", Some("host")),
    ("database", Some("schema")),
    ("dbname", Some("schema")),
    ("db", Some("schema")),
    ("read_default_file", None),
    ("read_default_group", None),
    ("defaults_file", None),
    ("defaults_extra_file", None),
];

const NAMES_S3: &[Naming] = &[
    ("aws_access_key_id", Some("login")),
    ("access_key", Some("login")),
    ("access_key_id", Some("login")),
    ("aws_secret_access_key", Some("password")),
    ("secret_key", Some("password")),
    ("secret_access_key", Some("password")),
    ("endpoint_override", Some("host")),
];

const SECURES_POSTGRES: &[&str] = &[
    "sslmode",
    "ssl_mode",
    "sslrootcert",
    "ssl_root_cert",
    "ssl_ca",
    "sslcert",
    "ssl_cert",
    "sslkey",
    "ssl_key",
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "sslsni",
    "sslnegotiation",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "channel_binding",
    "require_auth",
    "requirepeer",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    SSH_TUNNEL_KEY,
    ROTATION_ALLOWED_ROLES_KEY,
];

const SECURES_MYSQL: &[&str] = &[
    "ssl",
    "tls",
    "sslmode",
    "ssl_mode",
    "ssl_ca",
    "sslca",
    "ssl_capath",
    "ssl_cert",
    "sslcert",
    "ssl_key",
    "sslkey",
    "ssl_cipher",
    "ssl_verify_cert",
    "ssl_verify_identity",
    "ssl_disabled",
    "tls_version",
    "enable_cleartext_plugin",
    "allowcleartextpasswords",
    SSH_TUNNEL_KEY,
    ROTATION_ALLOWED_ROLES_KEY,
];

const SECURES_HTTP: &[&str] = &[
    "verify_tls",
    "verify",
    "ca_cert",
    "ca_bundle",
    "tls",
    "insecure",
    SSH_TUNNEL_KEY,
];

const SECURES_SFTP: &[&str] = &[
    "host_key",
    "known_hosts",
    "no_host_key_check",
    "allow_host_key_change",
    "strict_host_key_checking",
    "host_key_algorithms",
    "disabled_algorithms",
    "ciphers",
    SSH_TUNNEL_KEY,
];

const SECURES_S3: &[&str] = &[
    "verify",
    "verify_tls",
    "use_ssl",
    "ca_bundle",
    "ca_cert",
    SSH_TUNNEL_KEY,
];

const SECURES_GENERIC: &[&str] = &[
    "ssl",
    "tls",
    "sslmode",
    "ssl_mode",
    "verify_tls",
    "verify",
    "ca_cert",
    "ssl_ca",
    "ssl_ca_certs",
    "ssl_cert_reqs",
    "tls_ca",
    "insecure",
    "insecure_skip_verify",
    SSH_TUNNEL_KEY,
];

/// A key as drivers may read it: lower case, `-` as `_`.
fn normalize(key: &str) -> String {
    key.trim()
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

impl ConnType {
    /// The type's own naming keys (besides [`NAMES_COMMON`]) and securing keys; `None` for
    /// sqlite, a file on the engine's machine where no secret travels anywhere.
    fn key_tables(self) -> Option<(&'static [Naming], &'static [&'static str])> {
        Some(match self {
            ConnType::Sqlite => return None,
            ConnType::Postgres => (NAMES_POSTGRES, SECURES_POSTGRES),
            ConnType::Mysql => (NAMES_MYSQL, SECURES_MYSQL),
            ConnType::Http => (&[], SECURES_HTTP),
            ConnType::Sftp => (&[], SECURES_SFTP),
            ConnType::S3 => (NAMES_S3, SECURES_S3),
            ConnType::Generic => (&[], SECURES_GENERIC),
        })
    }

    /// What the `extra` key `key` is for a connection of this type: a key that names the
    /// target (refused), a key that secures it (part of the target), or `None` (an option).
    pub fn extra_key_role(self, key: &str) -> Option<ExtraKeyRole> {
        let key = normalize(key);
        let (names, secures) = self.key_tables()?;
        if let Some((_, use_instead)) = NAMES_COMMON
            .iter()
            .chain(names)
            .find(|(name, _)| *name == key)
        {
            return Some(ExtraKeyRole::Names {
                use_instead: *use_instead,
            });
        }
        secures
            .contains(&key.as_str())
            .then_some(ExtraKeyRole::Secures)
    }

    /// The keys of the target table for this type, as `(key, role)`, for docs and forms.
    pub fn target_keys(self) -> Vec<(&'static str, ExtraKeyRole)> {
        let Some((names, secures)) = self.key_tables() else {
            return Vec::new();
        };
        NAMES_COMMON
            .iter()
            .chain(names)
            .map(|(k, u)| (*k, ExtraKeyRole::Names { use_instead: *u }))
            .chain(secures.iter().map(|k| (*k, ExtraKeyRole::Secures)))
            .collect()
    }
}

/// The extra keys of `map` that name a target of type `t`, as the table spells them (never
/// the input's own text), with the field to use instead.
pub(crate) fn naming_keys(
    t: ConnType,
    map: &Map<String, Value>,
) -> Vec<(&'static str, Option<&'static str>)> {
    let table = t.target_keys();
    map.keys()
        .filter_map(|k| {
            let k = normalize(k);
            table.iter().find_map(|(name, role)| match role {
                ExtraKeyRole::Names { use_instead } if *name == k => Some((*name, *use_instead)),
                _ => None,
            })
        })
        .collect()
}

/// The securing part of an extra object: its securing keys (normalized) and their values,
/// sorted. Two connections with equal results secure their target alike.
pub fn securing_extra(t: ConnType, extra: Option<&str>) -> Vec<(String, Value)> {
    let Some(Ok(Value::Object(map))) = extra.map(serde_json::from_str::<Value>) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Value)> = map
        .into_iter()
        .filter(|(k, _)| t.extra_key_role(k) == Some(ExtraKeyRole::Secures))
        .map(|(k, v)| (normalize(&k), v))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_rotate_every_is_refused_naming_the_key_not_the_value() {
        let validate = |extra: &str| {
            crate::ConnectionInput {
                conn_id: Some("pg".into()),
                conn_type: Some("postgres".into()),
                host: Some("db.example.com".into()),
                login: Some("etl".into()),
                extra: Some(extra.into()),
                ..Default::default()
            }
            .validate()
        };
        for good in [
            r#"{"rotate_every": "30d"}"#,
            r#"{"Rotate-Every": " 12h "}"#,
            r#"{"sslmode": "require"}"#,
        ] {
            assert!(validate(good).is_ok(), "{good}");
        }
        for bad in [
            r#"{"rotate_every": "soon-Xq7"}"#,
            r#"{"ROTATE_EVERY": "0d"}"#,
            r#"{"rotate-every": "5é"}"#,
            r#"{"rotate_every": 30}"#,
            r#"{"rotate_every": null}"#,
        ] {
            let errors = validate(bad).unwrap_err().0;
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert_eq!(errors[0].field, "extra");
            assert_eq!(errors[0].message, crate::ROTATE_EVERY_RULE);
            assert!(!errors[0].message.contains("Xq7"));
        }
        // Twice in two spellings: said once, as every rotation key.
        let errors = validate(r#"{"rotate_every": "30d", "Rotate-Every": "bad"}"#)
            .unwrap_err()
            .0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("more than once"), "{errors:?}");
    }

    #[test]
    fn roles_ignore_case_and_dash_spelling() {
        let names =
            |t: ConnType, k: &str| matches!(t.extra_key_role(k), Some(ExtraKeyRole::Names { .. }));
        for k in [
            "host", "HOST", "hostaddr", "port", "user", "dbname", "service", "passfile",
        ] {
            assert!(names(ConnType::Postgres, k), "{k}");
        }
        for k in ["host", "socket", "unix_socket", "read_default_file", "User"] {
            assert!(names(ConnType::Mysql, k), "{k}");
        }
        assert!(names(ConnType::S3, "endpoint_url"));
        assert!(names(ConnType::Http, "proxy"));
        assert!(names(ConnType::Sftp, "proxy_command"));
        assert_eq!(
            ConnType::Mysql.extra_key_role("SSL-Mode"),
            Some(ExtraKeyRole::Secures)
        );
        assert_eq!(
            ConnType::Postgres.extra_key_role("sslmode"),
            Some(ExtraKeyRole::Secures)
        );
        assert_eq!(
            ConnType::Sftp.extra_key_role("host_key"),
            Some(ExtraKeyRole::Secures)
        );
        assert_eq!(ConnType::Postgres.extra_key_role("application_name"), None);
        assert_eq!(ConnType::Http.extra_key_role("headers"), None);
        assert_eq!(ConnType::Sqlite.extra_key_role("host"), None);
    }

    /// Issue 20: password rotation's extra keys are broked's, never a driver's parameter.
    #[test]
    fn rotation_keys_are_never_query_parameters() {
        assert!(is_rotation_key("Rotation-Conn-Id") && is_rotation_key("rotate_every"));
        assert!(!is_rotation_key("rotation") && !is_rotation_key("sslmode"));
        let c = crate::ConnectionInput {
            conn_id: Some("pg".into()),
            conn_type: Some("postgres".into()),
            host: Some("db.internal".into()),
            login: Some("etl".into()),
            password: Some("pw".into()),
            extra: Some(
                r#"{"sslmode":"require","rotation_conn_id":"pg-admin","Rotate-Every":"30d",
                    "rotation_account_host":"%","rotation_roles":["etl","etl_b"],
                    "rotation_allowed_roles":["etl_c"]}"#
                    .into(),
            ),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(
            c.to_uri().expose(),
            "postgres://etl:pw@db.internal?sslmode=require"
        );
    }

    fn input(login: Option<&str>, extra: &str) -> crate::ConnectionInput {
        crate::ConnectionInput {
            conn_id: Some("pg".into()),
            conn_type: Some("postgres".into()),
            host: Some("db.internal".into()),
            login: login.map(Into::into),
            password: Some("Rot-Rule-Pw-3k".into()),
            extra: Some(extra.into()),
            ..Default::default()
        }
    }

    /// Issue 20, dual-role mode: `rotation_roles` is two different role names and the login
    /// is one of them; `rotation_allowed_roles` one or more names; each rotation key once.
    /// Refused on save naming the field (`extra`, and `login` for the login rule), never the
    /// values.
    #[test]
    fn rotation_roles_rules_on_save() {
        let ok = |login: Option<&str>, extra: &str| input(login, extra).validate().is_ok();
        assert!(ok(
            Some("rr_one"),
            r#"{"rotation_roles":["rr_one","rr_two"]}"#
        ));
        assert!(ok(
            Some("rr_two"),
            r#"{"Rotation-Roles":["rr_one","rr_two"]}"#
        ));
        assert!(ok(Some("u"), r#"{"rotation_allowed_roles":["rr_one"]}"#));
        let long = "r".repeat(MAX_ROLE_NAME);
        assert!(ok(
            Some(&long),
            &format!(r#"{{"rotation_roles":["{long}","b"]}}"#)
        ));
        let too_long = "r".repeat(MAX_ROLE_NAME + 1);
        let cases: Vec<(Option<&str>, String, &[&str])> = vec![
            (
                Some("rr_one"),
                r#"{"rotation_roles":["rr_one"]}"#.into(),
                &["extra"],
            ),
            (
                Some("rr_one"),
                r#"{"rotation_roles":["rr_one","rr_two","rr_three"]}"#.into(),
                &["extra"],
            ),
            (
                Some("rr_one"),
                r#"{"rotation_roles":["rr_one","rr_one"]}"#.into(),
                &["extra"],
            ),
            (
                Some("rr_one"),
                r#"{"rotation_roles":["rr_one",""]}"#.into(),
                &["extra"],
            ),
            (
                Some("rr_one"),
                r#"{"rotation_roles":["rr_one"," rr_two"]}"#.into(),
                &["extra"],
            ),
            (
                Some("rr_one"),
                r#"{"rotation_roles":["rr_one",7]}"#.into(),
                &["extra"],
            ),
            (
                Some("rr_one"),
                r#"{"rotation_roles":"rr_one,rr_two"}"#.into(),
                &["extra"],
            ),
            (
                Some("rr_one"),
                format!(r#"{{"rotation_roles":["rr_one","{too_long}"]}}"#),
                &["extra"],
            ),
            (
                Some("rr_three"),
                r#"{"rotation_roles":["rr_one","rr_two"]}"#.into(),
                &["login", "extra"],
            ),
            (
                None,
                r#"{"rotation_roles":["rr_one","rr_two"]}"#.into(),
                &["login", "extra"],
            ),
            (
                Some("rr_one"),
                r#"{"rotation_roles":["rr_one","rr_two"],"ROTATION_ROLES":["rr_one","rr_three"]}"#
                    .into(),
                &["extra"],
            ),
            (
                Some("u"),
                r#"{"rotation_allowed_roles":[]}"#.into(),
                &["extra"],
            ),
            (
                Some("u"),
                r#"{"rotation_allowed_roles":"rr_one"}"#.into(),
                &["extra"],
            ),
            (
                Some("u"),
                r#"{"rotation_allowed_roles":["rr_one",null]}"#.into(),
                &["extra"],
            ),
            (
                Some("u"),
                r#"{"rotation_conn_id":"a","Rotation-Conn-Id":"b"}"#.into(),
                &["extra"],
            ),
        ];
        for (login, extra, fields) in cases {
            let err = input(login, &extra).validate().unwrap_err();
            let got: Vec<&str> = err.0.iter().map(|e| e.field).collect();
            assert_eq!(got, fields, "{login:?} {extra}");
            let text = err.to_string();
            for value in ["rr_one", "rr_two", "rr_three", "rrrr"] {
                assert!(!text.contains(value), "{value} in {text}");
            }
        }
    }

    /// The admin's allow-list secures what its password may be used for: a change of it is a
    /// change of target (a kept password must be entered again), for the types that rotate.
    #[test]
    fn the_allow_list_is_part_of_the_target() {
        for t in [ConnType::Postgres, ConnType::Mysql] {
            assert_eq!(
                t.extra_key_role("Rotation-Allowed-Roles"),
                Some(ExtraKeyRole::Secures)
            );
            let s = |extra: &str| securing_extra(t, Some(extra));
            assert_ne!(
                s(r#"{"rotation_allowed_roles":["etl_a"]}"#),
                s(r#"{"rotation_allowed_roles":["etl_a","postgres"]}"#)
            );
            assert_ne!(s(r#"{"rotation_allowed_roles":["etl_a"]}"#), s("{}"));
        }
        // rotation_roles is not (docs/security.md: the stored password gives no authority
        // over the other role, so binding it to that password would protect nothing).
        assert_eq!(ConnType::Postgres.extra_key_role("rotation_roles"), None);
        assert!(is_rotation_key("rotation_allowed_roles"));
    }

    #[test]
    fn ssh_tunnel_secures_every_network_type() {
        for t in ConnType::ALL {
            let want = (t != ConnType::Sqlite).then_some(ExtraKeyRole::Secures);
            assert_eq!(t.extra_key_role("ssh_tunnel"), want, "{t}");
            assert_eq!(t.extra_key_role("SSH-Tunnel"), want, "{t}");
        }
        assert!(is_tunnel_key("Ssh-Tunnel") && !is_tunnel_key("tunnel"));
        // A change of bastion is a change of target: a kept password may not follow it.
        let s = |extra: &str| securing_extra(ConnType::Postgres, Some(extra));
        assert_ne!(
            s(r#"{"ssh_tunnel":"bastion-a"}"#),
            s(r#"{"ssh_tunnel":"bastion-b"}"#)
        );
        assert_ne!(s(r#"{"ssh_tunnel":"bastion-a"}"#), s("{}"));
    }

    #[test]
    fn securing_extra_is_normalized_and_sorted() {
        let s = securing_extra(
            ConnType::Mysql,
            Some(r#"{"ssl-mode":"required","charset":"utf8","SSL_CA":"pem"}"#),
        );
        assert_eq!(
            s,
            vec![
                ("ssl_ca".to_owned(), Value::from("pem")),
                ("ssl_mode".to_owned(), Value::from("required")),
            ]
        );
        assert!(securing_extra(ConnType::Postgres, None).is_empty());
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// docs/uri.md lists every key of the table (so the documentation cannot drift).
    #[test]
    fn docs_uri_lists_every_key() {
        let doc = include_str!("../../../docs/uri.md");
        let section = doc
            .split("## The target, and the extra keys that may not name it")
            .nth(1)
            .expect("docs/uri.md has the target section");
        for t in ConnType::ALL {
            for (key, _) in t.target_keys() {
                assert!(section.contains(&format!("`{key}`")), "{t} {key}");
            }
        }
    }
}
