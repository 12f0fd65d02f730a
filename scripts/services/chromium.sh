# shellcheck shell=bash
# Sourced by scripts/test: headless Chromium and chromedriver for the web UI's browser tests
# (tests/browser). Not a service: the tests start chromedriver themselves, on a free port, with
# a fresh profile directory each time.
#
# Installs Debian's chromium and chromium-driver if missing (with need_pkgs from scripts/test,
# plus fonts-liberation, a recommendation that --no-install-recommends skips: without a font the
# screenshots have no text),
# checks that the two are the same version (chromedriver refuses a browser it was not built
# for), and exports BROKED_TEST_CHROMIUM and BROKED_TEST_CHROMEDRIVER.
# Defines no exit: failures print why and return non-zero (scripts/test runs with set -e).

broked_chromium_setup() {
    need_pkgs chromium chromium-driver fonts-liberation || return 1
    local chromium=/usr/bin/chromium driver=/usr/bin/chromedriver
    local p
    for p in "$chromium" "$driver"; do
        [ -x "$p" ] || { log "chromium: $p is missing after installing chromium chromium-driver"; return 1; }
    done
    local browser_version driver_version
    browser_version=$(dpkg-query -W -f='${Version}' chromium 2>/dev/null)
    driver_version=$(dpkg-query -W -f='${Version}' chromium-driver 2>/dev/null)
    if [ "$browser_version" != "$driver_version" ]; then
        log "chromium: chromium $browser_version and chromium-driver $driver_version differ; upgrading both"
        apt_install chromium chromium-driver || return 1
    fi
    log "chromium: $browser_version"
    export BROKED_TEST_CHROMIUM=$chromium
    export BROKED_TEST_CHROMEDRIVER=$driver
}

broked_chromium_setup
