#!/bin/sh
# Install jobd from a built tree (run `cargo build --release` first).
#
#   sudo scripts/install.sh                  # install into this system
#   DESTDIR=/tmp/pkgroot scripts/install.sh  # stage into a directory (packaging)
#
# BIN_DIR (default target/release) is where the built binaries are taken from.
# PREFIX (default /usr/local) is where the binaries and docs go; the unit's
# ExecStart= is rewritten to match. Units go to /etc/systemd/system, sysusers.d
# and tmpfiles.d snippets to /usr/lib. An existing /etc/jobd/jobd.toml is never
# overwritten.
set -eu

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
cd "$(dirname "$0")/.."
BIN_DIR=${BIN_DIR:-target/release}

say() { printf 'install.sh: %s\n' "$*"; }

for b in jobd jobctl; do
    if [ ! -x "$BIN_DIR/$b" ]; then
        say "$BIN_DIR/$b not found; run 'cargo build --release' first" >&2
        exit 1
    fi
done
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    say "installing into the system needs root (or set DESTDIR=...)" >&2
    exit 1
fi

bindir="$DESTDIR$PREFIX/bin"
docdir="$DESTDIR$PREFIX/share/doc/jobd"
unitdir="$DESTDIR/etc/systemd/system"
confdir="$DESTDIR/etc/jobd"

install -d -m 0755 "$bindir" "$unitdir" "$DESTDIR/usr/lib/sysusers.d" \
    "$DESTDIR/usr/lib/tmpfiles.d" "$confdir"
install -d -m 0700 "$confdir/credentials"

install -m 0755 "$BIN_DIR/jobd" "$BIN_DIR/jobctl" "$bindir/"
say "installed $bindir/jobd $bindir/jobctl"

# Shell completions and man pages, made by the jobctl just built (it writes them from its
# own argument definitions, so they always match the binary).
mandir="$DESTDIR$PREFIX/share/man/man1"
bashdir="$DESTDIR$PREFIX/share/bash-completion/completions"
zshdir="$DESTDIR$PREFIX/share/zsh/site-functions"
fishdir="$DESTDIR$PREFIX/share/fish/vendor_completions.d"
install -d -m 0755 "$mandir" "$bashdir" "$zshdir" "$fishdir"
"$BIN_DIR/jobctl" completions bash > "$bashdir/jobctl"
"$BIN_DIR/jobctl" completions zsh > "$zshdir/_jobctl"
"$BIN_DIR/jobctl" completions fish > "$fishdir/jobctl.fish"
chmod 0644 "$bashdir/jobctl" "$zshdir/_jobctl" "$fishdir/jobctl.fish"
say "installed completions for bash, zsh and fish under $DESTDIR$PREFIX/share"
"$BIN_DIR/jobctl" manpage --dir "$mandir" >/dev/null
chmod 0644 "$mandir"/jobctl*.1
say "installed man pages $mandir/jobctl.1 and jobctl-*.1"

sed -e "s#/usr/local/bin/jobd#$PREFIX/bin/jobd#" \
    -e "s#/usr/local/share/doc/jobd#$PREFIX/share/doc/jobd#" \
    systemd/jobd.service > "$unitdir/jobd.service"
sed -e "s#/usr/local/share/doc/jobd#$PREFIX/share/doc/jobd#" \
    systemd/jobd.socket > "$unitdir/jobd.socket"
chmod 0644 "$unitdir/jobd.service" "$unitdir/jobd.socket"
say "installed $unitdir/jobd.service $unitdir/jobd.socket"

install -m 0644 systemd/jobd.sysusers "$DESTDIR/usr/lib/sysusers.d/jobd.conf"
install -m 0644 systemd/jobd.tmpfiles "$DESTDIR/usr/lib/tmpfiles.d/jobd.conf"
say "installed $DESTDIR/usr/lib/sysusers.d/jobd.conf $DESTDIR/usr/lib/tmpfiles.d/jobd.conf"

if [ -f config/jobd.toml ]; then
    install -d -m 0755 "$docdir"
    install -m 0644 config/jobd.toml "$docdir/jobd.toml"
    say "installed annotated example $docdir/jobd.toml"
fi

# User, group and directories. sysusers/tmpfiles work without a running
# systemd (image builds), so they run whenever we install into the system.
if [ -z "$DESTDIR" ]; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers /usr/lib/sysusers.d/jobd.conf
        systemd-tmpfiles --create /usr/lib/tmpfiles.d/jobd.conf
        say "applied sysusers.d and tmpfiles.d (user/group jobd, /run/jobd, /etc/jobd/credentials)"
    else
        say "systemd-sysusers not found: create user/group 'jobd' yourself" >&2
    fi
fi

conf="$confdir/jobd.toml"
if [ -e "$conf" ]; then
    say "kept existing $conf (not overwritten)"
else
    (umask 027 && cat > "$conf" <<CONF
# jobd production configuration (written by scripts/install.sh).
# Annotated example with every section and default:
#   $PREFIX/share/doc/jobd/jobd.toml
# Secrets never go here: use LoadCredential= in a drop-in
# (systemctl edit jobd.service); they appear under \$CREDENTIALS_DIRECTORY.

[daemon]
database = "/var/lib/jobd/jobs.db"
data_dir = "/var/lib/jobd"
socket = "/run/jobd/jobd.sock"
CONF
    )
    chmod 0640 "$conf"
    if [ -z "$DESTDIR" ] && getent group jobd >/dev/null 2>&1; then
        chown root:jobd "$conf"
        say "wrote $conf (0640 root:jobd)"
    else
        say "wrote $conf (0640; chown root:jobd it once the jobd group exists)"
    fi
fi

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemctl daemon-reload done"
fi

cat <<NEXT

Next:
  systemctl enable --now jobd.socket jobd.service
  journalctl -u jobd -f
NEXT
