#!/usr/bin/env bash
# CI checks for running provisiond on a gateway:
#   1. the example config passes `provisiond config check`;
#   2. the systemd units (one modem, the template, the dashboard) pass `systemd-analyze verify` with no message at all, and
#      `systemd-analyze security --offline=yes` rates each at an exposure of 2.0 or lower;
#   3. the udev rule parses without complaint and, run by `udevadm test` against faked USB
#      identities of each supported board, names the AT port, keeps ModemManager off the board
#      and asks systemd for the right provisiond@ instance; other devices are left alone;
#   4. scripts/deb-test.sh: the Debian package builds, lintian finds no error and no warning
#      but initial-upload-closes-no-bugs, and it installs
#      into a throw-away root with the expected files.
# Missing tools come from Debian packages (systemd, udev, lintian, dpkg) via apt-get when we are
# root. Runs in about a minute once Go's build cache is warm. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "deploy-check: FAIL: $*" >&2; exit 1; }
step() { echo "deploy-check: $*"; }

# shellcheck source=lib/need.sh
. scripts/lib/need.sh
need systemd-analyze systemd
need systemd-escape systemd
need udevadm udev
need dpkg-deb dpkg
need lintian lintian

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- 1. the example config -------------------------------------------------------------------
step "build provisiond"
CGO_ENABLED=0 go build -trimpath -o "$tmp/provisiond" ./cmd/provisiond
step "config check configs/provisiond.yaml"
"$tmp/provisiond" config check --config configs/provisiond.yaml

# --- 2. systemd units ------------------------------------------------------------------------
# verify needs the ExecStart binaries and the units the services depend on: give it a root
# holding the host's system units, a provisiond binary and kill.
units=(deploy/systemd/provisiond.service deploy/systemd/provisiond@.service deploy/systemd/provisiond-dashboard.service)
sysroot="$tmp/sysroot"
mkdir -p "$sysroot/usr/lib/systemd" "$sysroot/usr/bin" "$sysroot/etc/systemd/system"
for d in /usr/lib/systemd/system /lib/systemd/system; do
	if [ -d "$d" ] && [ ! -e "$sysroot/usr/lib/systemd/system" ]; then
		cp -a "$d" "$sysroot/usr/lib/systemd/system"
	fi
done
[ -d "$sysroot/usr/lib/systemd/system" ] || fail "no system unit folder on this machine"
ln -s usr/bin "$sysroot/bin"
cp "$tmp/provisiond" "$sysroot/usr/bin/provisiond"
kill_bin=$(type -P kill || true)
if [ -z "$kill_bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	step "installing procps (for /bin/kill)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends procps >/dev/null
	kill_bin=$(type -P kill || true)
fi
[ -n "$kill_bin" ] || fail "no kill executable (Debian package procps)"
cp "$kill_bin" "$sysroot/usr/bin/kill"
cp "${units[@]}" "$sysroot/etc/systemd/system/"
for u in provisiond.service provisiond@.service provisiond@ttyACM0.service provisiond@nrf91-000960123456.service provisiond-dashboard.service; do
	step "systemd-analyze verify $u"
	out=$(systemd-analyze verify --root="$sysroot" --man=no "$u" 2>&1) || fail "verify $u: $out"
	[ -z "$out" ] || fail "verify $u is not clean: $out"
done
# The negative case: the same check does catch a bad key.
sed 's/^WatchdogSec=/WatchdogSecc=/' deploy/systemd/provisiond.service >"$sysroot/etc/systemd/system/provisiond.service"
out=$(systemd-analyze verify --root="$sysroot" --man=no provisiond.service 2>&1) || true
[ -n "$out" ] || fail "verify did not notice an unknown key: the check is blind"

for u in "${units[@]}"; do
	out=$(systemd-analyze security --offline=yes --threshold=20 "$u" 2>&1) && rc=0 || rc=$?
	level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
	step "systemd-analyze security $(basename "$u"): exposure ${level:-?} (limit 2.0)"
	[ -n "$level" ] || fail "no exposure level in: $out"
	[ "$rc" -eq 0 ] || fail "$u: exposure $level is above 2.0 (exit $rc)"
	awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || fail "$u: exposure $level is above 2.0"
done

# The template finds its device unit (dev-%i.device) and its port (/dev/%I) from one instance
# name only when the udev rule's symlink and instance name agree in systemd's path escaping.
[ "$(systemd-escape --path /dev/nrf91/000960123456)" = dev-nrf91-000960123456 ] ||
	fail "systemd-escape --path /dev/nrf91/000960123456 = $(systemd-escape --path /dev/nrf91/000960123456)"
[ "$(systemd-escape --unescape --path nrf91-000960123456)" = /nrf91/000960123456 ] ||
	fail "instance nrf91-000960123456 does not unescape to /nrf91/000960123456"
[ "$(systemd-escape --unescape --path nrf91-THINGY91X_F40679066AD)" = /nrf91/THINGY91X_F40679066AD ] ||
	fail "a Thingy:91 X serial does not survive the path escaping"

# --- 3. udev rule ----------------------------------------------------------------------------
rule=deploy/udev/70-provisiond.rules
if udevadm --help 2>&1 | grep -qw verify; then
	step "udevadm verify $rule"
	udevadm verify --resolve-names=never "$rule" || fail "udevadm verify $rule"
fi
# udevadm test runs the rules for a real sysfs device. In a private mount namespace with only a
# fake-identity rule and ours on the rules path, and tmpfs over /dev and /run (udevadm test
# writes links and its database), the host is not touched.
ttydev=""
for d in ttyS0 tty0 console ptmx; do
	if [ -e "/sys/class/tty/$d" ]; then ttydev=$d; break; fi
done
# The rule gives the AT port to the user provisiond, which the package creates; the namespace
# gets a passwd file that has it (with a uid of its own, to tell it from root in the output).
provisiond_uid=$(getent passwd provisiond | cut -d: -f3 || true)
cp /etc/passwd "$tmp/passwd"
if [ -z "$provisiond_uid" ]; then
	provisiond_uid=64999
	echo "provisiond:x:$provisiond_uid:$provisiond_uid:provisiond daemon:/var/lib/provisiond:/usr/sbin/nologin" >>"$tmp/passwd"
fi
if [ "$(id -u)" != 0 ] || ! unshare -m true 2>/dev/null || [ -z "$ttydev" ]; then
	step "SKIP udev behaviour: needs root, a mount namespace and a tty in /sys/class/tty"
else
	udev_run() { # udev_run ACTION PROPERTY=VALUE... -> udevadm test output in $tmp/udev.out
		local action=$1 props="" p
		shift
		for p in "$@"; do props+=", ENV{${p%%=*}}=\"${p#*=}\""; done
		rm -rf "$tmp/rules" "$tmp/empty" && mkdir -p "$tmp/rules" "$tmp/empty"
		printf 'SUBSYSTEM=="tty", KERNEL=="%s"%s\n' "$ttydev" "$props" >"$tmp/rules/00-fake-identity.rules"
		cp "$rule" "$tmp/rules/"
		unshare -m sh -c "mount -t tmpfs none /dev && mount -t tmpfs none /run && mkdir -p /run/udev &&
			mount --bind '$tmp/rules' /usr/lib/udev/rules.d && mount --bind '$tmp/empty' /etc/udev/rules.d &&
			mount --bind '$tmp/passwd' /etc/passwd &&
			udevadm test --action=$action /sys/class/tty/$ttydev" >"$tmp/udev.out" 2>&1 ||
			{ cat "$tmp/udev.out"; fail "udevadm test ($*)"; }
		if grep "^/.*$(basename "$rule"):" "$tmp/udev.out"; then
			fail "udev complains about $rule (above)"
		fi
	}
	prop() { sed -n "s/^$1=//p" "$tmp/udev.out"; }
	# udev_case NAME SERIAL VENDOR MODEL INTERFACE WANT: WANT is "at" (the AT port), "other" (another
	# port of a known board) or "none" (not ours).
	udev_case() {
		local name=$1 serial=$2 vendor=$3 model=$4 ifnum=$5 want=$6
		udev_run add ID_BUS=usb ID_VENDOR_ID="$vendor" ID_MODEL_ID="$model" ID_SERIAL_SHORT="$serial" ID_USB_INTERFACE_NUM="$ifnum"
		local ignore wants links tags
		ignore=$(prop ID_MM_DEVICE_IGNORE) wants=$(prop SYSTEMD_WANTS) links=$(prop DEVLINKS) tags=$(prop TAGS)
		case $want in
		at)
			[ "$ignore" = 1 ] || fail "$name: ID_MM_DEVICE_IGNORE=$ignore, want 1"
			[ "$wants" = "provisiond@nrf91-$serial.service" ] || fail "$name: SYSTEMD_WANTS=$wants"
			[ "$links" = "/dev/nrf91/$serial" ] || fail "$name: DEVLINKS=$links"
			case $tags in *:systemd:*) ;; *) fail "$name: TAGS=$tags lacks systemd" ;; esac
			grep -q "$(basename "$rule"):[0-9]* OWNER $provisiond_uid\$" "$tmp/udev.out" || fail "$name: owner provisiond not set"
			grep -q "$(basename "$rule"):[0-9]* MODE 0600\$" "$tmp/udev.out" || fail "$name: mode 0600 not set"
			;;
		other)
			[ "$ignore" = 1 ] || fail "$name: ID_MM_DEVICE_IGNORE=$ignore, want 1"
			[ -z "$wants$links" ] || fail "$name: a non-AT port got SYSTEMD_WANTS=$wants DEVLINKS=$links"
			;;
		none)
			[ -z "$ignore$wants$links" ] || fail "$name: a foreign device got ID_MM_DEVICE_IGNORE=$ignore SYSTEMD_WANTS=$wants DEVLINKS=$links"
			;;
		esac
		step "udev: $name -> $want${wants:+ ($wants)}"
	}
	udev_case "nRF9160 DK VCOM0" 000960123456 1366 1055 00 at
	udev_case "nRF9160 DK VCOM0, mass storage off" 000960123456 1366 1054 00 at
	udev_case "nRF9160 DK VCOM2" 000960123456 1366 1055 04 other
	udev_case "nRF9161 DK VCOM0" 001050912345 1366 1051 00 at
	udev_case "nRF9151 DK VCOM0" 001051212345 1366 1051 00 at
	udev_case "nRF9151 DK (0010520) VCOM0" 001052012345 1366 1051 00 at
	udev_case "Thingy:91 terminal" THINGY91_0123456789AB 1915 9100 00 at
	udev_case "Thingy:91 trace" THINGY91_0123456789AB 1915 9100 03 other
	udev_case "Thingy:91 X first port" THINGY91X_F40679066AD 1915 910a 00 at
	udev_case "nRF52840 DK (J-Link 000683)" 000683123456 1366 1015 00 none
	udev_case "other Nordic USB device" ABCDEF0123 1915 520f 00 none
	udev_case "Arduino" 85736323838351F0D1E1 2341 0043 00 none
	udev_run remove ID_BUS=usb ID_VENDOR_ID=1366 ID_MODEL_ID=1055 ID_SERIAL_SHORT=000960123456 ID_USB_INTERFACE_NUM=00
	[ -z "$(prop SYSTEMD_WANTS)" ] || fail "remove event got SYSTEMD_WANTS"
	step "udev: remove event -> untouched"
fi

# --- 4. the Debian package -------------------------------------------------------------------
step "scripts/deb-test.sh"
./scripts/deb-test.sh

step "ok"
