#!/bin/sh
# Installs exposuremon as a systemd service, or removes it again.
#
#   sh deploy/install.sh [install|uninstall|unit]        (make install / make uninstall)
#
# install    a virtual environment in PREFIX with exposuremon in it, the unit in SYSTEMD_DIR
#            (ExecStart= pointing into PREFIX), CONF_DIR/config.toml from config.example.toml
#            with state_dir = /var/lib/exposuremon (never overwriting an existing one; the
#            current example is always written next to it as config.toml.example), and a
#            BIN_DIR/exposuremon link for the CLI. Running it again upgrades in place.
#            config.toml may hold webhook URLs and tokens: it is mode 0640, owned by root and
#            SERVICE_GROUP, which the unit gives the service (SupplementaryGroups=); on a
#            live system the group is created (groupadd --system) when missing.
# uninstall  removes the unit, the link, the example and the environment (only one that this
#            script created); keeps CONF_DIR/config.toml and the state under /var/lib.
# unit       prints the unit as install would write it.
#
# Settings (environment or make variables), defaults in brackets:
#   PREFIX [/opt/exposuremon]  DESTDIR [empty: a staging root, e.g. for packages or tests]
#   SYSTEMD_DIR [/etc/systemd/system]  CONF_DIR [/etc/exposuremon]  BIN_DIR [/usr/local/bin]
#   PYTHON [python3, 3.11 or newer]  PIP_SPEC [this source tree; or a wheel file]
#   PIP_ARGS [extra pip options, e.g. "--no-index --find-links /srv/wheels"]
#   SERVICE_GROUP [exposuremon: the group that may read config.toml]
set -eu

action=${1:-install}
SRC=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/exposuremon}
DESTDIR=${DESTDIR:-}
SYSTEMD_DIR=${SYSTEMD_DIR:-/etc/systemd/system}
CONF_DIR=${CONF_DIR:-/etc/exposuremon}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
PYTHON=${PYTHON:-python3}
PIP_SPEC=${PIP_SPEC:-$SRC}
PIP_ARGS=${PIP_ARGS:-}
SERVICE_GROUP=${SERVICE_GROUP:-exposuremon}
STATE_DIR=/var/lib/exposuremon # the unit's StateDirectory=exposuremon
UNIT=exposuremon.service

say() { echo "exposuremon install: $*"; }
die() {
    echo "exposuremon install: error: $*" >&2
    exit 1
}

# Paths end up in sed expressions and in the unit file: plain characters only.
for name in PREFIX SYSTEMD_DIR CONF_DIR BIN_DIR; do
    eval "value=\$$name"
    case $value in
    /*) ;;
    *) die "$name must be an absolute path, not '$value'" ;;
    esac
    case $value in
    *[!A-Za-z0-9/._+-]*) die "$name may only hold A-Z a-z 0-9 / . _ + -, not '$value'" ;;
    esac
done
case $DESTDIR in
*[!A-Za-z0-9/._+-]*) die "DESTDIR may only hold A-Z a-z 0-9 / . _ + -, not '$DESTDIR'" ;;
esac
# The group name ends up in the unit and in chown: a plain system group name only.
case $SERVICE_GROUP in
[a-z_]*) ;;
*) die "SERVICE_GROUP must start with a-z or _, not '$SERVICE_GROUP'" ;;
esac
case $SERVICE_GROUP in
*[!a-z0-9_-]*) die "SERVICE_GROUP may only hold a-z 0-9 _ -, not '$SERVICE_GROUP'" ;;
esac
[ "$PREFIX" != / ] || die "PREFIX must not be /"
for name in PREFIX SYSTEMD_DIR CONF_DIR BIN_DIR DESTDIR; do
    eval "value=\$$name"
    case /$value/ in
    */./* | */../*) die "$name must not contain . or .. components, not '$value'" ;;
    esac
done
# PREFIX is a directory of its own (the venv): a shared one such as /usr/local would get a
# venv written into it, and `uninstall` would remove it whole.
[ "${PREFIX%/}/bin" != "${BIN_DIR%/}" ] ||
    die "PREFIX/bin is BIN_DIR ($BIN_DIR): give PREFIX a directory of its own, e.g. /opt/exposuremon"

venv=$DESTDIR$PREFIX
marker=$venv/.installed-by-exposuremon # uninstall removes only an environment made here
unit_path=$DESTDIR$SYSTEMD_DIR/$UNIT
conf=$DESTDIR$CONF_DIR/config.toml
example=$conf.example
link=$DESTDIR$BIN_DIR/exposuremon

# Talk to systemd only when installing into this very system and systemd runs it.
live() {
    [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

render_unit() {
    exec_start="ExecStart=$PREFIX/bin/exposuremon run -c $CONF_DIR/config.toml"
    sed -e "s|^ExecStart=/opt/exposuremon/bin/exposuremon run -c /etc/exposuremon/config.toml\$|$exec_start|" \
        -e "s|^EnvironmentFile=-/etc/exposuremon/env\$|EnvironmentFile=-$CONF_DIR/env|" \
        -e "s|^SupplementaryGroups=exposuremon\$|SupplementaryGroups=$SERVICE_GROUP|" \
        "$SRC/systemd/$UNIT" >"$1"
    grep -qx "$exec_start" "$1" || die "systemd/$UNIT has no ExecStart= line to rewrite"
    grep -qx "SupplementaryGroups=$SERVICE_GROUP" "$1" ||
        die "systemd/$UNIT has no SupplementaryGroups= line to rewrite"
}

warn() { echo "exposuremon install: warning: $*" >&2; }

# The group that may read config.toml exists (made here on a live system), or warn and fail.
service_group() {
    getent group "$SERVICE_GROUP" >/dev/null 2>&1 && return 0
    if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && live; then
        groupadd --system "$SERVICE_GROUP" || die "cannot create the group $SERVICE_GROUP"
        say "created the system group $SERVICE_GROUP (may read $CONF_DIR/config.toml)"
        return 0
    fi
    return 1
}

# config.toml: 0640 root:SERVICE_GROUP, so the service reads it and nobody else does.
protect_config() { # protect_config FILE
    chmod 0640 "$1"
    if service_group && [ "$(id -u)" = 0 ] && chown "root:$SERVICE_GROUP" "$1"; then
        return 0
    fi
    warn "$CONF_DIR/config.toml is not owned by root:$SERVICE_GROUP, so the service cannot" \
        "read it: groupadd --system $SERVICE_GROUP; chown root:$SERVICE_GROUP $CONF_DIR/config.toml"
}

write_file() { # write_file TMPFILE DEST MODE: atomic replace
    chmod "$3" "$1"
    mv -f "$1" "$2"
}

do_install() {
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$PYTHON is older than Python 3.11 (set PYTHON=...)"
    base=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
    case $base in
    /home/* | /root/*)
        echo "exposuremon install: warning: $PYTHON lives in $base, which the service's" \
            "ProtectHome=yes hides: it will not start; use a system Python (PYTHON=/usr/bin/python3)" >&2
        ;;
    esac
    if [ ! -x "$venv/bin/python" ]; then
        # Only into a new or empty directory: never turn an existing tree into a venv.
        if [ -d "$venv" ] && [ -n "$(ls -A "$venv")" ]; then
            die "$PREFIX exists and is not a virtual environment: choose an empty PREFIX"
        fi
        say "creating the virtual environment $PREFIX"
        "$PYTHON" -m venv "$venv"
        : >"$marker"
    fi
    say "installing exposuremon from $PIP_SPEC"
    # --force-reinstall: the same version number with new code must still be installed; and
    # unlike uninstall-then-install, a failed install leaves the old version in place.
    # shellcheck disable=SC2086 # PIP_ARGS is a list of options
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$SRC/constraints.txt" $PIP_ARGS --force-reinstall --no-deps "$PIP_SPEC"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$SRC/constraints.txt" $PIP_ARGS "$PIP_SPEC"
    if [ -n "$DESTDIR" ]; then
        # Scripts name their interpreter by absolute path: the final one, not the staging one.
        for script in "$venv"/bin/*; do
            if [ -f "$script" ] && [ ! -L "$script" ]; then
                sed -i -e "1s|^#!$venv/bin/|#!$PREFIX/bin/|" -e "s|$venv|$PREFIX|g" "$script"
            fi
        done
    fi

    mkdir -p "$DESTDIR$SYSTEMD_DIR" "$DESTDIR$CONF_DIR" "$DESTDIR$BIN_DIR"
    render_unit "$unit_path.tmp"
    write_file "$unit_path.tmp" "$unit_path" 0644

    sed -e "s|^state_dir = \"state\"\$|state_dir = \"$STATE_DIR\"|" \
        "$SRC/config.example.toml" >"$example.tmp"
    grep -qx "state_dir = \"$STATE_DIR\"" "$example.tmp" ||
        die "config.example.toml has no state_dir line to rewrite"
    # Readable by the service's transient user; secrets belong in CONF_DIR/env (mode 0600).
    write_file "$example.tmp" "$example" 0644
    if [ -e "$conf" ]; then
        say "kept $CONF_DIR/config.toml (config.toml.example beside it shows every key)"
        # An upgrade keeps the operator's file as it is, but says when anyone may read it.
        case $(ls -ln "$conf" | cut -c8) in
        r) warn "$CONF_DIR/config.toml is readable by every user; if it holds webhook URLs or" \
            "tokens: chown root:$SERVICE_GROUP $CONF_DIR/config.toml; chmod 0640 $CONF_DIR/config.toml" ;;
        esac
    else
        cp "$example" "$conf.tmp"
        protect_config "$conf.tmp"
        mv -f "$conf.tmp" "$conf"
        say "wrote $CONF_DIR/config.toml: put your routers in its [[targets]]"
    fi
    ln -sfn "$PREFIX/bin/exposuremon" "$link"

    if live; then
        systemctl daemon-reload
        if systemctl -q is-active "$UNIT"; then
            say "restart to run the new version (migrations run at start): systemctl restart $UNIT"
            return
        fi
    fi
    say "next: exposuremon check-config -c $CONF_DIR/config.toml && systemctl enable --now $UNIT"
}

do_uninstall() {
    if live; then
        systemctl disable --now "$UNIT" 2>/dev/null || true
    fi
    rm -f "$unit_path" "$example"
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$PREFIX/bin/exposuremon" ]; then
        rm -f "$link"
    fi
    if [ -f "$marker" ] && [ -f "$venv/pyvenv.cfg" ]; then
        rm -rf "$venv"
    elif [ -e "$venv" ]; then
        say "left $PREFIX alone: install.sh did not create it"
    fi
    if live; then
        systemctl daemon-reload
    fi
    say "removed; kept $CONF_DIR/config.toml and the data in $STATE_DIR (a link to" \
        "/var/lib/private/exposuremon): delete them too to purge"
}

case $action in
install) do_install ;;
uninstall) do_uninstall ;;
unit)
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    render_unit "$tmp"
    cat "$tmp"
    ;;
*) die "unknown action '$action' (install, uninstall or unit)" ;;
esac
