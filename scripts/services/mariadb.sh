# shellcheck shell=bash
# Sourced by scripts/test: MariaDB on 127.0.0.1 with a password-checked test user.
#
# Installs Debian's mariadb-server if missing, starts mariadbd if it does not answer (without
# systemd: start-stop-daemon), creates (idempotently) the database broked_test and the user
# broked_test at 127.0.0.1 and localhost with a password and rights on that database only.
# Exports BROKED_TEST_MYSQL_{HOST,PORT,USER,PASSWORD,DB}.
# Defines no exit: failures print why and return non-zero (scripts/test runs with set -e).

broked_mariadb_setup() {
    local user=broked_test db=broked_test password='broked-my-Kx4p-test-pw'
    [ -x /usr/sbin/mariadbd ] || need_pkgs mariadb-server
    local admin=(mariadb-admin --protocol=socket -uroot)
    command -v mariadb-admin >/dev/null 2>&1 || admin=(mysqladmin --protocol=socket -uroot)
    if ! "${admin[@]}" ping >/dev/null 2>&1; then
        log "mariadb: starting mariadbd"
        install -d -o mysql -g mysql /run/mysqld
        if [ ! -d /var/lib/mysql/mysql ]; then
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null || return 1
        fi
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql || return 1
        local i
        for i in $(seq 1 60); do
            "${admin[@]}" ping >/dev/null 2>&1 && break
            sleep 0.5
        done
        "${admin[@]}" ping >/dev/null 2>&1 || { log "mariadb: mariadbd did not come up"; return 1; }
    fi
    local sql=(mariadb --protocol=socket -uroot)
    command -v mariadb >/dev/null 2>&1 || sql=(mysql --protocol=socket -uroot)
    "${sql[@]}" <<SQL || return 1
CREATE DATABASE IF NOT EXISTS $db;
CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE USER IF NOT EXISTS '$user'@'localhost' IDENTIFIED BY '$password';
CREATE USER IF NOT EXISTS '$user'@'::1' IDENTIFIED BY '$password';
ALTER USER '$user'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER '$user'@'localhost' IDENTIFIED BY '$password';
ALTER USER '$user'@'::1' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON $db.* TO '$user'@'127.0.0.1', '$user'@'localhost', '$user'@'::1';
-- Issue 20: the rotation tests create, rotate and drop users of their own.
GRANT CREATE USER ON *.* TO '$user'@'127.0.0.1', '$user'@'localhost', '$user'@'::1';
FLUSH PRIVILEGES;
SQL
    local port
    port=$("${sql[@]}" -Nse 'SELECT @@port') || return 1
    export BROKED_TEST_MYSQL_HOST=127.0.0.1 BROKED_TEST_MYSQL_PORT=$port BROKED_TEST_MYSQL_USER=$user
    export BROKED_TEST_MYSQL_PASSWORD=$password BROKED_TEST_MYSQL_DB=$db
    log "mariadb: ready on 127.0.0.1:$port (user $user, database $db)"
}

broked_mariadb_setup
