#!/usr/bin/env bash
# Builds the Debian package and checks it: lintian reports no error and no warning but
# initial-upload-closes-no-bugs, the control data and the file list with modes are as
# expected, the package unpacks (dpkg -x) and installs and purges
# (dpkg --root) in throw-away roots, the unpacked binary accepts the unpacked config, postinst
# creates the user and group there, and the maintainer scripts reload udev and systemd but
# never start or enable a service. Run from anywhere; installs lintian with apt-get when it is
# missing and we are root. Exits non-zero on the first failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "deb-test: FAIL: $*" >&2; exit 1; }
step() { echo "deb-test: $*"; }

# shellcheck source=lib/need.sh
. scripts/lib/need.sh
need dpkg-deb dpkg
need lintian lintian

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- build -----------------------------------------------------------------------------------
version=$(sh deploy/deb/version.sh)
step "make deb (version $version)"
make --no-print-directory -f Makefile -f deploy/Makefile.inc deb DEB_VERSION="$version" >"$tmp/build.log" 2>&1 ||
	{ cat "$tmp/build.log"; fail "make deb"; }
debs=(dist/provisiond_"${version}"-1_*.deb)
if [ "${#debs[@]}" -ne 1 ] || [ ! -f "${debs[0]}" ]; then
	fail "want one dist/provisiond_${version}-1_<arch>.deb; dist holds: $(ls dist)"
fi
deb=${debs[0]}
arch=${deb##*_}
arch=${arch%.deb}
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "file name says $arch, control says $(dpkg-deb -f "$deb" Architecture)"
step "built $deb"

# --- lintian ---------------------------------------------------------------------------------
step "lintian"
lintian --display-level '>=warning' "$deb" >"$tmp/lintian.txt" 2>&1 && lintian_rc=0 || lintian_rc=$?
grep -v '^running with root privileges' "$tmp/lintian.txt" | sed 's/^/  /' || true
if grep -q '^E: ' "$tmp/lintian.txt" || [ "$lintian_rc" -ne 0 ]; then
	fail "lintian reports errors (exit $lintian_rc)"
fi
# The only warning allowed: a first upload whose changelog closes no Debian bug.
if grep '^W: ' "$tmp/lintian.txt" | grep -v ': initial-upload-closes-no-bugs '; then
	fail "lintian warns (above)"
fi
echo "  lintian: $(grep -c '^E: ' "$tmp/lintian.txt" || true) errors, $(grep -c '^W: ' "$tmp/lintian.txt" || true) warnings"

# --- control data ----------------------------------------------------------------------------
step "control fields"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = provisiond ] || fail "Package is $(field Package)"
[ "$(field Version)" = "${version}-1" ] || fail "Version is $(field Version), want ${version}-1"
field Depends | grep -qw adduser || fail "Depends lacks adduser: $(field Depends)"
field Depends | grep -qw procps || fail "Depends lacks procps (ExecReload runs /bin/kill): $(field Depends)"
dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$tmp" ./conffiles ./postinst ./prerm ./postrm
[ "$(cat "$tmp/conffiles")" = /etc/provisiond/provisiond.yaml ] ||
	fail "conffiles is '$(cat "$tmp/conffiles")', want /etc/provisiond/provisiond.yaml"

# --- file list and modes ---------------------------------------------------------------------
step "file list and modes"
dpkg-deb -c "$deb" | awk '{print $1, $2, $6}' >"$tmp/contents"
expect() { # expect MODE PATH
	grep -qxF -- "$1 root/root ./${2#/}" "$tmp/contents" ||
		fail "want $1 root/root $2, got: $(grep -F -- "./${2#/}" "$tmp/contents" || echo missing)"
}
expect -rwxr-xr-x /usr/bin/provisiond
expect -rw-r--r-- /etc/provisiond/provisiond.yaml
expect drwxr-xr-x /etc/provisiond/hooks.d/
expect -rw-r--r-- /usr/lib/systemd/system/provisiond.service
expect -rw-r--r-- /usr/lib/systemd/system/provisiond@.service
expect -rw-r--r-- /usr/lib/systemd/system/provisiond-dashboard.service
expect -rw-r--r-- /usr/lib/udev/rules.d/70-provisiond.rules
expect -rw-r--r-- /usr/lib/sysusers.d/provisiond.conf
expect -rw-r--r-- /usr/lib/systemd/catalog/provisiond.catalog
expect -rw-r--r-- /usr/share/bash-completion/completions/provisiond
expect -rw-r--r-- /usr/share/zsh/vendor-completions/_provisiond
expect -rw-r--r-- /usr/share/fish/vendor_completions.d/provisiond.fish
expect -rw-r--r-- /usr/share/doc/provisiond/copyright
expect -rw-r--r-- /usr/share/man/man8/provisiond.8.gz
expect -rw-r--r-- /usr/share/man/man5/provisiond.yaml.5.gz
expect -rw-r--r-- /usr/share/lintian/overrides/provisiond
grep -q ' \./usr/share/doc/provisiond/changelog\.Debian\.gz$' "$tmp/contents" || fail "no changelog.Debian.gz"
if grep -v '^d' "$tmp/contents" | grep -v ' root/root ' | grep -v 'changelog\.Debian\.gz$'; then
	fail "files not owned by root/root (above)"
fi

# --- unpack into a throw-away root -----------------------------------------------------------
root="$tmp/root"
step "dpkg -x into $root"
dpkg -x "$deb" "$root"
cmp -s "$root/usr/lib/systemd/system/provisiond@.service" deploy/systemd/provisiond@.service ||
	fail "packaged template unit differs from deploy/systemd"
cmp -s "$root/etc/provisiond/provisiond.yaml" configs/provisiond.yaml ||
	fail "packaged config differs from configs/provisiond.yaml"
if [ "$(dpkg --print-architecture)" = "$arch" ]; then
	"$root/usr/bin/provisiond" version
	"$root/usr/bin/provisiond" config check --config "$root/etc/provisiond/provisiond.yaml" ||
		fail "the packaged binary refuses the packaged config"
	"$root/usr/bin/provisiond" completion bash | cmp -s - "$root/usr/share/bash-completion/completions/provisiond" ||
		fail "packaged bash completion differs from the binary's"
else
	step "package for $arch on $(dpkg --print-architecture): binary not run"
fi

# dpkg's own install into an empty root. The maintainer scripts run outside a chroot with
# DPKG_ROOT set (--force-script-chrootless), so they must act on that root only: the user and
# group land in its /etc, and the running system's systemd and udev are left alone.
droot="$tmp/dpkgroot"
mkdir -p "$droot/var/lib/dpkg/info" "$droot/var/lib/dpkg/updates" "$droot/etc"
: >"$droot/var/lib/dpkg/status"
: >"$droot/var/lib/dpkg/available"
dpkg_root() {
	dpkg --root="$droot" --force-not-root --force-script-chrootless --force-depends "$@" >>"$tmp/dpkg.log" 2>&1 ||
		{ cat "$tmp/dpkg.log"; fail "dpkg --root $*"; }
}
step "dpkg --root --install into $droot"
dpkg_root --install "$deb"
grep -qx '/usr/bin/provisiond' "$droot/var/lib/dpkg/info/provisiond.list" || fail "dpkg database lacks /usr/bin/provisiond"
grep -qx 'Status: install ok installed' "$droot/var/lib/dpkg/status" || fail "package not installed: $(grep Status "$droot/var/lib/dpkg/status")"
grep -q '^ /etc/provisiond/provisiond.yaml [0-9a-f]\{32\}$' "$droot/var/lib/dpkg/status" ||
	fail "dpkg status lists no conffile hash for /etc/provisiond/provisiond.yaml"
[ -x "$droot/usr/bin/provisiond" ] || fail "no executable /usr/bin/provisiond in the dpkg root"
if command -v systemd-sysusers >/dev/null 2>&1; then
	grep -q '^provisiond:x:[0-9]*:[0-9]*:provisiond daemon:/var/lib/provisiond:/usr/sbin/nologin$' "$droot/etc/passwd" ||
		fail "postinst made no provisiond user in the root: $(cat "$droot/etc/passwd" 2>/dev/null)"
	grep -q '^provisiond:x:' "$droot/etc/group" || fail "postinst made no provisiond group in the root"
else
	step "no systemd-sysusers: user creation in a root not checked"
fi
if command -v journalctl >/dev/null 2>&1; then
	journalctl --root="$droot" --list-catalog | grep -q '^e2798497742146649f5c774d53a96294 provisiond: ' ||
		fail "postinst did not compile the packaged journal catalog into the root"
fi
step "dpkg --root --purge"
mkdir -p "$droot/var/lib/provisiond/nrf91-000960123456"
echo state >"$droot/var/lib/provisiond/nrf91-000960123456/settings"
dpkg_root --purge provisiond
[ ! -e "$droot/usr/bin/provisiond" ] || fail "purge left /usr/bin/provisiond"
[ ! -e "$droot/etc/provisiond/provisiond.yaml" ] || fail "purge left the conffile"
[ ! -e "$droot/var/lib/provisiond" ] || fail "purge left /var/lib/provisiond"

# --- maintainer scripts ----------------------------------------------------------------------
# Run them with every command they may call replaced by a stub that logs its arguments, and
# with /run/systemd/system and /run/udev present (a private /run when we may mount one), so the
# systemd and udev branches run too. They must reload, may try-restart/stop, and must never
# start or enable anything.
step "maintainer scripts"
stubs="$tmp/stubs"
mkdir -p "$stubs"
for c in getent systemd-sysusers adduser addgroup systemctl deb-systemd-invoke udevadm journalctl; do
	printf '#!/bin/sh\necho "%s $*" >>"%s"\n%s\n' "$c" "$tmp/calls" \
		"$([ "$c" = getent ] && echo 'exit 2' || echo 'exit 0')" >"$stubs/$c"
	chmod +x "$stubs/$c"
done
run_scripts() {
	PATH="$stubs:$PATH" sh -e "$tmp/postinst" configure
	PATH="$stubs:$PATH" sh -e "$tmp/postinst" configure 0.0.0~old-1
	PATH="$stubs:$PATH" sh -e "$tmp/prerm" upgrade 9.9.9-1
	PATH="$stubs:$PATH" sh -e "$tmp/prerm" remove
	PATH="$stubs:$PATH" sh -e "$tmp/postrm" remove
}
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	export tmp stubs
	unshare -m bash -euc "mount -t tmpfs none /run; mkdir -p /run/systemd/system /run/udev; $(declare -f run_scripts); run_scripts"
	grep -q '^systemctl daemon-reload$' "$tmp/calls" || fail "postinst did not reload systemd: $(cat "$tmp/calls")"
	grep -q '^udevadm control --reload-rules$' "$tmp/calls" || fail "postinst did not reload udev rules"
	grep -q '^udevadm trigger --subsystem-match=tty --action=change$' "$tmp/calls" || fail "postinst did not trigger tty devices"
	grep -q "^deb-systemd-invoke try-restart provisiond.service provisiond@\*.service provisiond-dashboard.service$" "$tmp/calls" ||
		fail "postinst on upgrade did not try-restart running daemons"
	grep -q "^deb-systemd-invoke stop provisiond.service provisiond@\*.service provisiond-dashboard.service$" "$tmp/calls" ||
		fail "prerm remove did not stop the daemons"
else
	run_scripts
	step "not root or no mount namespace: systemd/udev branches not exercised"
fi
grep -q '^journalctl --update-catalog$' "$tmp/calls" ||
	fail "postinst did not compile the journal catalog: $(cat "$tmp/calls")"
grep -q '^systemd-sysusers provisiond.conf$' "$tmp/calls" ||
	fail "postinst did not create the user through sysusers: $(cat "$tmp/calls")"
if grep -E '(^| )(start|enable|restart|reenable|preset)( |$)' "$tmp/calls" | grep -v 'try-restart'; then
	fail "a maintainer script starts or enables a service (above)"
fi
if [ "$(grep -c 'try-restart' "$tmp/calls")" -ne 1 ]; then
	fail "try-restart must run on upgrade only: $(grep try-restart "$tmp/calls")"
fi
sed 's/^/  called: /' "$tmp/calls"

step "ok"
