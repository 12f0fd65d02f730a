# shellcheck shell=bash
# Sourced by scripts/test: a Python virtual environment with openapi-python-client (pinned), for
# tests/e2e/openapi_client.rs, which generates a client from the served /api/openapi.json and
# drives the real server with it (issue 23). Not a service: nothing runs.
#
# Its own venv (not scripts/services/python.sh's), made once per pinned version under
# /tmp/broked-test-services. Exports BROKED_TEST_OPENAPI_CLIENT_GENERATOR (the generator) and
# BROKED_TEST_OPENAPI_CLIENT_PYTHON (the venv's python, which has what the generated client
# imports: httpx, attrs). Defines no exit: failures print why and return non-zero.

broked_openapi_client_setup() {
    local version=0.29.1
    local pins=("openapi-python-client==$version" "httpx==0.28.1" "attrs==26.1.0")
    local venv=/tmp/broked-test-services/openapi-client-$version
    if ! "$venv/bin/openapi-python-client" --version 2>/dev/null | grep -q "$version"; then
        need_pkgs python3-venv || return 1
        rm -rf "$venv"
        python3 -m venv "$venv" || { log "openapi-client: python3 -m venv failed"; return 1; }
        "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" || {
            log "openapi-client: pip install ${pins[*]} failed"
            return 1
        }
    fi
    log "openapi-client: openapi-python-client $version"
    export BROKED_TEST_OPENAPI_CLIENT_GENERATOR=$venv/bin/openapi-python-client
    export BROKED_TEST_OPENAPI_CLIENT_PYTHON=$venv/bin/python
}

broked_openapi_client_setup
