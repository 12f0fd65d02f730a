# shellcheck shell=bash
# Sourced by scripts/test: a Python virtual environment with the clients pipelines hand the
# connection strings of `broked connections get --uri-format` to (issue 18): SQLAlchemy with
# psycopg (PostgreSQL) and PyMySQL (MariaDB/MySQL), at pinned versions from PyPI. Not a
# service: the tests run its python on scripts of their own.
#
# Uses the machine's python3 (Debian's python3 and python3-venv if there is none with the venv
# module), makes the venv under target/ once per set of versions, and exports
# BROKED_TEST_PYTHON, the venv's python.
# Defines no exit: failures print why and return non-zero (scripts/test runs with set -e).

broked_python_setup() {
    local pins=(SQLAlchemy==2.1.9 'psycopg[binary]==3.3.9' PyMySQL==1.2.4)
    local python3
    python3=$(command -v python3 || true)
    if [ -z "$python3" ] || ! "$python3" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        need_pkgs python3 python3-venv || return 1
        python3=/usr/bin/python3
    fi
    local venv="$PWD/target/test-python"
    local stamp="$venv/broked-pins.txt"
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
        log "python: making $venv with ${pins[*]}"
        rm -rf "$venv"
        "$python3" -m venv "$venv" || return 1
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" || {
            log "python: pip install ${pins[*]} failed"
            return 1
        }
        echo "${pins[*]}" >"$stamp"
    fi
    "$venv/bin/python" -c 'import sqlalchemy, psycopg, pymysql' || {
        log "python: $venv cannot import sqlalchemy, psycopg, pymysql"
        return 1
    }
    log "python: $("$venv/bin/python" -c 'import sqlalchemy, psycopg, pymysql; print("SQLAlchemy", sqlalchemy.__version__, "psycopg", psycopg.__version__, "PyMySQL", pymysql.VERSION_STRING)')"
    export BROKED_TEST_PYTHON="$venv/bin/python"
}

broked_python_setup
