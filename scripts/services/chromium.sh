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
# Also vendors axe-core (the accessibility engine the browser tests run on every page) from its
# npm package, pinned and checked, and exports BROKED_TEST_AXE, the path of its axe.min.js.
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
    broked_axe_setup
}

# axe-core at a pinned version; the sha256 of axe.min.js guards against a changed package.
broked_axe_setup() {
    local version=4.14.1
    local sha256=29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c
    local dir=/tmp/broked-test-services/axe-core-$version
    local js=$dir/axe.min.js
    if ! echo "$sha256  $js" | sha256sum --check --status 2>/dev/null; then
        command -v npm >/dev/null || need_pkgs npm || return 1
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && npm pack --silent "axe-core@$version" >/dev/null) || {
            log "chromium: npm pack axe-core@$version failed"
            rm -rf "$tmp"
            return 1
        }
        mkdir -p "$dir"
        tar -xzf "$tmp/axe-core-$version.tgz" -C "$tmp" package/axe.min.js package/LICENSE
        mv "$tmp/package/axe.min.js" "$tmp/package/LICENSE" "$dir/"
        rm -rf "$tmp"
        echo "$sha256  $js" | sha256sum --check --status || {
            log "chromium: axe-core $version's axe.min.js does not have the expected sha256"
            return 1
        }
    fi
    log "chromium: axe-core $version"
    export BROKED_TEST_AXE=$js
}

broked_chromium_setup
