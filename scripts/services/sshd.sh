# shellcheck shell=bash
# OpenSSH with SFTP for the sftp probe's tests. SOURCED by scripts/test (which defines `log`
# and `need_pkgs`); never exits, and running it twice restarts the same server.
#
# Starts a separate sshd (own config, own host key, own pid file; the machine's sshd, if any,
# is left alone) on 127.0.0.1 only, with a test user that logs in with a password or with an
# ed25519 key. State lives in /tmp/broked-test-services/sshd. Exports:
#   BROKED_TEST_SFTP_HOST, _PORT, _USER, _PASSWORD,
#   _KEY       path of the user's private key (OpenSSH format, no passphrase),
#   _PATH      an existing directory the user can read,
#   _HOST_KEY  the server's public host key line ("ssh-ed25519 AAAA…").

broked_sshd_start() {
    local state=/tmp/broked-test-services/sshd
    local user=broked_sftp
    # Distinctive, so a test can assert it never shows up in a message.
    local password='sftp-Pw-9f3K7q-broked'
    local port="${BROKED_TEST_SFTP_PORT_WANTED:-2222}"

    need_pkgs openssh-server openssh-client
    mkdir -p "$state" /run/sshd
    chmod 700 "$state"

    # A previous instance of ours: stop it (only the pid in our own pid file).
    if [ -s "$state/sshd.pid" ]; then
        local old
        old="$(cat "$state/sshd.pid")"
        if kill -0 "$old" 2>/dev/null && grep -q sshd "/proc/$old/cmdline" 2>/dev/null; then
            log "sshd: stopping previous test sshd (pid $old)"
            kill "$old" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$state/sshd.pid"
    fi

    # The test user, its password, key and directory.
    if ! id "$user" >/dev/null 2>&1; then
        log "sshd: creating user $user"
        useradd --create-home --shell /bin/bash "$user"
    fi
    echo "$user:$password" | chpasswd
    local home
    home="$(getent passwd "$user" | cut -d: -f6)"
    if [ ! -s "$state/client_ed25519" ]; then
        ssh-keygen -q -t ed25519 -N '' -C "$user@broked-test" -f "$state/client_ed25519"
    fi
    install -d -m 755 -o "$user" -g "$user" "$home"
    install -d -m 700 -o "$user" -g "$user" "$home/.ssh"
    install -m 600 -o "$user" -g "$user" "$state/client_ed25519.pub" "$home/.ssh/authorized_keys"
    install -d -m 755 -o "$user" -g "$user" "$home/data"
    echo "hello from broked" >"$home/data/hello.txt"
    chown "$user:$user" "$home/data/hello.txt"

    # Our own host key (never the machine's).
    if [ ! -s "$state/ssh_host_ed25519_key" ]; then
        ssh-keygen -q -t ed25519 -N '' -C broked-test-host -f "$state/ssh_host_ed25519_key"
    fi

    # A free port: ours was freed above; skip ports something else holds.
    local tries=0
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1)); tries=$((tries + 1))
        if [ "$tries" -gt 50 ]; then log "sshd: no free port near 2222"; return 1; fi
    done

    cat >"$state/sshd_config" <<CONF
# Test sshd of broked connections (scripts/services/sshd.sh). Loopback only.
ListenAddress 127.0.0.1:$port
HostKey $state/ssh_host_ed25519_key
PidFile $state/sshd.pid
AllowUsers $user
PermitRootLogin no
PasswordAuthentication yes
PermitEmptyPasswords no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
# With PAM off, sshd checks /etc/shadow itself: a wrong password fails, the right one works.
UsePAM no
X11Forwarding no
# Local forwarding (direct-tcpip) only: the SSH tunnel tests (crates/broked-tunnel,
# docs/tunnels.md) use this server as a bastion to the suite's PostgreSQL and MariaDB.
AllowTcpForwarding local
AllowAgentForwarding no
PermitTTY no
PrintMotd no
Subsystem sftp internal-sftp
LogLevel VERBOSE
CONF
    /usr/sbin/sshd -t -f "$state/sshd_config" || { log "sshd: invalid config $state/sshd_config"; return 1; }
    /usr/sbin/sshd -f "$state/sshd_config" -E "$state/sshd.log" || { log "sshd: failed to start, see $state/sshd.log"; return 1; }

    local up=
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
        sleep 0.1
    done
    if [ -z "$up" ]; then log "sshd: not answering on 127.0.0.1:$port, see $state/sshd.log"; return 1; fi
    log "sshd: listening on 127.0.0.1:$port (pid $(cat "$state/sshd.pid" 2>/dev/null))"

    export BROKED_TEST_SFTP_HOST=127.0.0.1
    export BROKED_TEST_SFTP_PORT="$port"
    export BROKED_TEST_SFTP_USER="$user"
    export BROKED_TEST_SFTP_PASSWORD="$password"
    export BROKED_TEST_SFTP_KEY="$state/client_ed25519"
    export BROKED_TEST_SFTP_PATH="$home/data"
    BROKED_TEST_SFTP_HOST_KEY="$(cut -d' ' -f1,2 "$state/ssh_host_ed25519_key.pub")"
    export BROKED_TEST_SFTP_HOST_KEY
}

broked_sshd_start
unset -f broked_sshd_start
