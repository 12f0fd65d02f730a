# shellcheck shell=bash
# An S3-compatible server that checks request signatures, for the s3 probe's tests. SOURCED by
# scripts/test (which defines `log`); never exits, and running it twice restarts the same server.
#
# The server is s3s-fs (crates.io, the `binary` feature): buckets are directories of its root,
# and every request must carry a SigV4 signature made with the one access key it is given, so a
# wrong secret key is a 403 SignatureDoesNotMatch. Installed with `cargo install` when missing
# (pinned: later versions need a newer rustc). Bound to 127.0.0.1 only; state in
# /tmp/broked-test-services/s3. Exports:
#   BROKED_TEST_S3_ENDPOINT (http://127.0.0.1:PORT), _ACCESS_KEY, _SECRET_KEY, _BUCKET, _REGION.

broked_s3_start() {
    local state=/tmp/broked-test-services/s3
    local version=0.14.1
    local access_key=BROKEDTESTACCESSKEY1
    # Distinctive, so a test can assert it never shows up in a message.
    local secret_key='s3-Secret-Kq81vX0-broked-test'
    local bucket=broked-test-bucket
    local port="${BROKED_TEST_S3_PORT_WANTED:-9014}"

    local bin
    bin="$(command -v s3s-fs || true)"
    if [ -z "$bin" ] && [ -x "$HOME/.cargo/bin/s3s-fs" ]; then bin="$HOME/.cargo/bin/s3s-fs"; fi
    if [ -z "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "$version"; then
        log "s3: cargo install s3s-fs $version (a few minutes, once per machine)"
        cargo install --quiet --locked --version "$version" --features binary s3s-fs \
            || { log "s3: cargo install s3s-fs failed"; return 1; }
        bin="$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
    fi

    mkdir -p "$state"
    chmod 700 "$state"
    # A previous instance of ours: stop it (only the pid in our own pid file).
    if [ -s "$state/s3s-fs.pid" ]; then
        local old
        old="$(cat "$state/s3s-fs.pid")"
        if kill -0 "$old" 2>/dev/null && grep -q s3s-fs "/proc/$old/cmdline" 2>/dev/null; then
            log "s3: stopping previous s3s-fs (pid $old)"
            kill "$old" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$state/s3s-fs.pid"
    fi

    # A fresh root with the one bucket (a bucket is a directory of the root).
    rm -rf "$state/root"
    mkdir -p "$state/root/$bucket"
    echo "hello from broked" >"$state/root/$bucket/hello.txt"

    local tries=0
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1)); tries=$((tries + 1))
        if [ "$tries" -gt 50 ]; then log "s3: no free port near 9014"; return 1; fi
    done

    # setsid + nohup: the server outlives this shell and does not hold its terminal.
    setsid nohup "$bin" --host 127.0.0.1 --port "$port" \
        --access-key "$access_key" --secret-key "$secret_key" \
        "$state/root" >"$state/s3s-fs.log" 2>&1 </dev/null &
    echo $! >"$state/s3s-fs.pid"

    local up=
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
        sleep 0.1
    done
    if [ -z "$up" ]; then log "s3: s3s-fs not answering on 127.0.0.1:$port, see $state/s3s-fs.log"; return 1; fi
    log "s3: s3s-fs listening on 127.0.0.1:$port (pid $(cat "$state/s3s-fs.pid"))"

    export BROKED_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
    export BROKED_TEST_S3_ACCESS_KEY="$access_key"
    export BROKED_TEST_S3_SECRET_KEY="$secret_key"
    export BROKED_TEST_S3_BUCKET="$bucket"
    export BROKED_TEST_S3_REGION=us-east-1
}

broked_s3_start
unset -f broked_s3_start
