# shellcheck shell=bash
# Sourced by scripts/test: PostgreSQL on 127.0.0.1 with a password-checked test user.
#
# Installs Debian's postgresql if missing, starts the first cluster if it is down, creates
# (idempotently) the role broked_test (SCRAM password) and its database broked_test, and puts
# scram-sha-256 rules for that role AHEAD of the machine's trust rules in pg_hba.conf, so a
# wrong password really fails. Exports BROKED_TEST_PG_{HOST,PORT,USER,PASSWORD,DB}.
# Defines no exit: failures print why and return non-zero (scripts/test runs with set -e).

broked_pg_setup() {
    local user=broked_test db=broked_test password='broked-pg-Sq7v-test-pw'
    command -v pg_lsclusters >/dev/null 2>&1 || need_pkgs postgresql
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$version" ]; then
        log "postgres: no cluster under /etc/postgresql; creating main"
        version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
        pg_createcluster "$version" main >/dev/null || return 1
    fi
    local port
    port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')
    port=${port:-5432}
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $4 }' | grep -q online; then
        log "postgres: starting cluster $version/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || return 1
    fi
    local i
    for i in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -p "$port" && break
        sleep 0.5
    done
    pg_isready -q -h 127.0.0.1 -p "$port" || { log "postgres: not ready on 127.0.0.1:$port"; return 1; }

    local hba=/etc/postgresql/$version/main/pg_hba.conf
    if ! grep -q "^host all $user 127.0.0.1/32 scram-sha-256" "$hba"; then
        log "postgres: adding scram-sha-256 rules for $user ahead of the trust rules in $hba"
        local tmp
        tmp=$(mktemp)
        {
            echo "# broked: the test user must really present its password (scripts/services/postgres.sh)"
            echo "host all $user 127.0.0.1/32 scram-sha-256"
            echo "host all $user ::1/128 scram-sha-256"
            cat "$hba"
        } >"$tmp"
        cat "$tmp" >"$hba" && rm -f "$tmp"
    fi
    # Issue 20: the password rotation tests create roles of their own, members of
    # broked_rotation (made below), which must present their passwords too.
    if ! grep -q "^host all +broked_rotation 127.0.0.1/32 scram-sha-256" "$hba"; then
        log "postgres: adding scram-sha-256 rules for members of broked_rotation in $hba"
        local tmp
        tmp=$(mktemp)
        {
            echo "# broked: roles the rotation tests create (scripts/services/postgres.sh)"
            echo "host all +broked_rotation 127.0.0.1/32 scram-sha-256"
            echo "host all +broked_rotation ::1/128 scram-sha-256"
            cat "$hba"
        } >"$tmp"
        cat "$tmp" >"$hba" && rm -f "$tmp"
    fi

    local psql=(runuser -u postgres -- psql -p "$port" -X -q -v ON_ERROR_STOP=1 -d postgres)
    "${psql[@]}" >/dev/null <<SQL || return 1
SET password_encryption = 'scram-sha-256';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') THEN
    CREATE ROLE $user LOGIN;
  END IF;
END \$\$;
ALTER ROLE $user WITH LOGIN PASSWORD '$password';
-- Issue 20: the rotation tests create (and drop) roles of their own, members of
-- broked_rotation, whose logins pg_hba.conf checks by password.
ALTER ROLE $user CREATEROLE;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'broked_rotation') THEN
    CREATE ROLE broked_rotation NOLOGIN;
  END IF;
END \$\$;
GRANT broked_rotation TO $user WITH ADMIN OPTION;
SELECT pg_reload_conf();
SQL
    if [ -z "$("${psql[@]}" -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
        "${psql[@]}" >/dev/null -c "CREATE DATABASE $db OWNER $user" || return 1
    fi
    # The store's tests create (and drop) a schema per test: owning the database is enough.
    "${psql[@]}" >/dev/null -c "ALTER DATABASE $db OWNER TO $user" || return 1

    export BROKED_TEST_PG_HOST=127.0.0.1 BROKED_TEST_PG_PORT=$port BROKED_TEST_PG_USER=$user
    export BROKED_TEST_PG_PASSWORD=$password BROKED_TEST_PG_DB=$db
    log "postgres: ready on 127.0.0.1:$port (user $user, database $db)"
}

broked_pg_setup
