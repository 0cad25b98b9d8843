#!/usr/bin/env bash
# make systemd-check: the Debian package under a real systemd.
#
# Boots a throw-away Debian root file system (built with mmdebstrap from Debian packages and
# cached between runs, keyed by its package list and apt sources) with systemd as PID 1 in
# systemd-nspawn: private pid, mount, net, uts and ipc namespaces, the root read-only with a
# tmpfs overlay (--volatile=overlay), so nothing the run does reaches the cache. It installs the
# built .deb with dpkg, runs the simulated service (nrfcloudsim) and modems (nrf91sim) as
# transient units (systemd-run), and checks what an operator relies on:
#
#   start without a modem returns at once, READY and STATUS; claim + job -> DONE; reload;
#   SIGKILL -> restart -> the modem reopened as user provisiond; stop restores the modem's mode;
#   journal fields and catalog text (journalctl -x); an instance of provisiond@.service for a
#   named port; systemd-analyze security <= 1.5 for both units; and that the run left no
#   process, mount or cgroup behind.
#
# Each check prints PASS or FAIL with a one-line reason; all of them run, and the script exits 1
# when any failed. Without root, private namespaces or a reachable Debian mirror it prints why
# and exits 0 (skipped). Never boots systemd on the machine's own root: its tmpfiles would wipe
# /tmp and it would start the machine's services. The run's folder is bound read-only.
#
# Stand-ins for what a container lacks (no udev):
#   * the modem's pty gets group dialout and mode 0660, and the configured port a symlink to it,
#     as the udev rule does for a board (the pty belongs to root otherwise);
#   * drop-ins add DeviceAllow=char-pts rw to both units: the simulated modem is a pty;
#   * provisiond@.service is bound to its device unit (BindsTo=dev-%i.device), which only udev
#     makes; a drop-in cannot remove a dependency, so /etc/systemd/system gets a copy of the
#     packaged template without its two dev-%i.device lines (the run shows the start waiting for
#     the device first, and that the copy differs in exactly those lines).
#
# Environment: PROVISIOND_SYSTEMD_CHECK_CACHE (cache folder; default
# $XDG_CACHE_HOME/provisiond-systemd-check, else /var/cache/provisiond-systemd-check),
# PROVISIOND_SYSTEMD_CHECK_SOURCES (apt sources file for the root; default the machine's own
# Debian sources).
set -uo pipefail
# (pipefail: "cmd | grep -q" fails when grep stops reading early; grep a captured output instead.)
cd "$(dirname "$0")/.." || exit 1

t_begin=$(date +%s)
say() { echo "systemd-check: [$(($(date +%s) - t_begin))s] $*"; }
step() { say "$*"; }
skip() {
	say "SKIP: $*"
	exit 0
}
die() { # a failure of the check itself (build, boot), not of a checked behaviour
	say "ERROR: $*"
	exit 1
}
# need (scripts/lib/need.sh) calls fail when a tool is missing and cannot be installed: here
# that means no Debian mirror, which skips the check.
fail() { skip "$*"; }
# shellcheck source=lib/need.sh
. scripts/lib/need.sh

# --- results -----------------------------------------------------------------------------------
declare -a results=()
npass=0
nfail=0
pass() {
	printf 'systemd-check: PASS %-24s %s\n' "$1" "$2"
	results+=("PASS $1")
	npass=$((npass + 1))
}
failed() {
	printf 'systemd-check: FAIL %-24s %s\n' "$1" "$2"
	results+=("FAIL $1")
	nfail=$((nfail + 1))
}

# --- can we run here? --------------------------------------------------------------------------
[ "$(uname -s)" = Linux ] || skip "needs Linux"
[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn and private namespaces)"
if ! err=$(unshare --pid --fork --mount --net --uts --ipc true 2>&1); then
	skip "no private pid/mount/net/uts/ipc namespaces here: $err"
fi
need nsenter util-linux
need jq jq
need make make
# systemd-nspawn comes with systemd-container, which must match the installed systemd: take
# that version when the mirror has it, so that installing it does not upgrade systemd.
if ! command -v systemd-nspawn >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
	v=$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || true)
	step "installing systemd-container${v:+ $v} (for systemd-nspawn)"
	[ -n "${DEB_TEST_APT_UPDATED:-}" ] || { apt-get update -qq && export DEB_TEST_APT_UPDATED=1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "systemd-container${v:+=$v}" >/dev/null 2>&1 ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd-container >/dev/null
fi
command -v systemd-nspawn >/dev/null 2>&1 || skip "systemd-nspawn is missing (Debian package systemd-container) and could not be installed"
need mmdebstrap mmdebstrap

# --- the run's folder, and everything teardown must undo ---------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/provisiond-systemd-check.XXXXXX")
chmod 0755 "$work"
machine="provisiond-check-$$"
nspawn_pid=""
leader=""
declare -a cgroups=()
nspawn_run_existed=0
[ -d /run/systemd/nspawn ] && nspawn_run_existed=1
torn_down=0
teardown_rc=0

# teardown stops the container (orderly poweroff, then SIGKILL), kills whatever is left in the
# cgroups this run made and removes them, removes nspawn's folders under /run that this run
# made, and the run's folder. It prints what it could not undo and returns 1 then.
teardown() {
	[ "$torn_down" = 1 ] && return "$teardown_rc"
	torn_down=1
	teardown_rc=0
	local cg p left
	if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
		if [ -n "$leader" ] && kill -0 "$leader" 2>/dev/null; then
			kill -s SIGRTMIN+4 "$leader" 2>/dev/null # systemd: poweroff
		else
			kill -TERM "$nspawn_pid" 2>/dev/null
		fi
		for _ in $(seq 100); do
			kill -0 "$nspawn_pid" 2>/dev/null || break
			sleep 0.2
		done
		if kill -0 "$nspawn_pid" 2>/dev/null; then
			say "teardown: the container did not power off in 20 s; killing it"
			[ -n "$leader" ] && kill -KILL "$leader" 2>/dev/null # PID 1 gone: the kernel ends its namespace
			kill -KILL "$nspawn_pid" 2>/dev/null
		fi
		wait "$nspawn_pid" 2>/dev/null
	fi
	for p in $nspawn_pid $leader; do
		if kill -0 "$p" 2>/dev/null; then
			say "teardown: process $p ($(cat "/proc/$p/comm" 2>/dev/null)) still runs"
			teardown_rc=1
		fi
	done
	for cg in "${cgroups[@]}"; do
		[ -d "$cg" ] || continue
		for _ in $(seq 50); do
			left=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
			[ -z "$left" ] && break
			for p in $left; do kill -KILL "$p" 2>/dev/null; done
			sleep 0.1
		done
		find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
		if [ -d "$cg" ]; then
			say "teardown: could not remove cgroup $cg"
			teardown_rc=1
		fi
	done
	rmdir "/run/systemd/nspawn/propagate/$machine" 2>/dev/null
	if [ "$nspawn_run_existed" = 0 ]; then
		rmdir /run/systemd/nspawn/locks /run/systemd/nspawn/propagate /run/systemd/nspawn 2>/dev/null
	fi
	if grep -qF -e "$work" -e "$machine" /proc/self/mountinfo; then
		say "teardown: mounts left: $(grep -F -e "$work" -e "$machine" /proc/self/mountinfo | cut -d' ' -f5 | tr '\n' ' ')"
		teardown_rc=1
	fi
	rm -rf "$work"
	return "$teardown_rc"
}
trap 'teardown >/dev/null 2>&1' EXIT
trap 'exit 130' INT TERM

# --- build: binaries and the package -----------------------------------------------------------
step "make build, make deb"
make --no-print-directory build >"$work/build.log" 2>&1 || { cat "$work/build.log"; die "make build"; }
version=$(sh deploy/deb/version.sh)
make --no-print-directory -f Makefile -f deploy/Makefile.inc deb DEB_VERSION="$version" >>"$work/build.log" 2>&1 ||
	{ cat "$work/build.log"; die "make deb"; }
debs=(dist/provisiond_"${version}"-1_*.deb)
[ -f "${debs[0]}" ] || die "no dist/provisiond_${version}-1_*.deb after make deb"
mkdir -p "$work/srv"
cp "${debs[0]}" "$work/srv/provisiond.deb"
cp bin/nrf91sim bin/nrfcloudsim "$work/srv/"
# at PORT COMMAND: one AT command to the modem on PORT, its answer up to OK or ERROR (the
# check's own serial tool inside the root; the simulated line is raw already).
cat >"$work/srv/at" <<'EOF'
#!/bin/bash
set -u
exec 3<>"$1" || exit 1
printf '%s\r\n' "$2" >&3
while IFS= read -r -t 10 line <&3; do
	line=${line%$'\r'}
	[ -n "$line" ] && echo "$line"
	case $line in OK | ERROR | "+CME ERROR"*) exit 0 ;; esac
done
exit 1
EOF
chmod 0755 "$work/srv"/*
step "built ${debs[0]}"

# --- the Debian root, cached -------------------------------------------------------------------
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$suite" ] || skip "cannot tell the machine's Debian suite (VERSION_CODENAME in /etc/os-release)"
sources=${PROVISIOND_SYSTEMD_CHECK_SOURCES:-}
if [ -z "$sources" ]; then
	for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
		if [ -s "$f" ]; then sources=$f && break; fi
	done
fi
[ -n "$sources" ] && [ -s "$sources" ] || skip "no apt sources to build a Debian root from"
# The package's own Depends must be in the root already: dpkg -i installs no dependency and
# the container has no network. Read them from deploy/nfpm.yaml so the two lists cannot drift.
depends=$(awk '/^depends:/{on=1; next} on && /^[^ #]/{on=0} on && /^  - /{print $2}' deploy/nfpm.yaml | paste -sd, -)
packages="systemd,systemd-sysv,dbus,curl${depends:+,$depends}"
aptopts=()
# The machine's apt may accept archive snapshots whose Release files have expired.
eval "$(apt-config shell valid_until Acquire::Check-Valid-Until)"
[ "${valid_until:-}" = false ] && aptopts+=(--aptopt='Acquire::Check-Valid-Until "false"')
cache=${PROVISIOND_SYSTEMD_CHECK_CACHE:-${XDG_CACHE_HOME:+$XDG_CACHE_HOME/provisiond-systemd-check}}
cache=${cache:-/var/cache/provisiond-systemd-check}
key=$( {
	echo "v1 $suite minbase $packages $(dpkg --print-architecture) ${aptopts[*]}"
	cat "$sources"
} | sha256sum | cut -c1-16)
root="$cache/root-$suite-$key"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$root/lib/systemd/systemd" ]; then
	step "building the Debian $suite root ($packages) into $root (cached for later runs)"
	rm -rf "$cache"/building-*
	t0=$(date +%s)
	if ! mmdebstrap --mode=root --variant=minbase --include="$packages" "${aptopts[@]}" \
		--customize-hook='echo provisiond-check >"$1/etc/hostname"' \
		"$suite" "$cache/building-$key" "$sources" >"$work/mmdebstrap.log" 2>&1; then
		rm -rf "$cache/building-$key"
		tail -n 20 "$work/mmdebstrap.log"
		if grep -qiE 'failed to fetch|could not resolve|temporary failure|unable to connect|connection (failed|refused|timed out)|network is unreachable' "$work/mmdebstrap.log"; then
			skip "the Debian mirror is not reachable (mmdebstrap above)"
		fi
		die "mmdebstrap failed (above)"
	fi
	rm -rf "$cache"/root-* # roots of other package lists
	mv "$cache/building-$key" "$root"
	step "root built in $(($(date +%s) - t0)) s ($(du -sh "$root" | cut -f1))"
else
	step "cached root $root"
fi
flock -u 9

# --- boot --------------------------------------------------------------------------------------
# On a machine whose PID 1 is not systemd nspawn cannot ask for a scope: it runs in a cgroup of
# this run's own (--keep-unit) and makes its payload/supervisor groups below it.
keep_unit=()
if [ ! -d /run/systemd/system ]; then
	keep_unit=(--keep-unit)
	if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
		cgroups=("/sys/fs/cgroup/$machine")
	else
		for h in unified systemd; do
			[ -d "/sys/fs/cgroup/$h" ] && cgroups+=("/sys/fs/cgroup/$h/$machine")
		done
	fi
	# Groups of an earlier run that was killed outright (no trap ran): empty, their PID gone.
	for old in /sys/fs/cgroup/provisiond-check-* /sys/fs/cgroup/*/provisiond-check-*; do
		[ -d "$old" ] && ! kill -0 "${old##*-}" 2>/dev/null || continue
		[ -z "$(find "$old" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] &&
			find "$old" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	for cg in "${cgroups[@]}"; do mkdir "$cg" || die "cannot make cgroup $cg"; done
fi
step "booting $root as $machine (systemd-nspawn --boot --volatile=overlay --private-network)"
t_boot=$(date +%s)
(
	for cg in "${cgroups[@]}"; do echo "$BASHPID" >"$cg/cgroup.procs" || exit 1; done
	exec systemd-nspawn --quiet --register=no "${keep_unit[@]}" --machine="$machine" \
		--directory="$root" --volatile=overlay --private-network --link-journal=no \
		--resolv-conf=off --timezone=off --console=read-only \
		--bind-ro="$work/srv:/srv/provisiond-check" --boot systemd.log_color=0
) </dev/null >"$work/boot.log" 2>&1 &
nspawn_pid=$!
for _ in $(seq 150); do
	for p in $(cat "/proc/$nspawn_pid/task/"*/children 2>/dev/null); do
		if [ "$(awk '/^NSpid:/ {print $NF}' "/proc/$p/status" 2>/dev/null)" = 1 ]; then leader=$p; fi
	done
	[ -n "$leader" ] && break
	kill -0 "$nspawn_pid" 2>/dev/null || break
	sleep 0.2
done
[ -n "$leader" ] || { cat "$work/boot.log"; die "the container did not start (boot log above)"; }

# c COMMAND...: run COMMAND inside the container (its namespaces and root), with a clean
# environment and a time limit (CT seconds, default 30).
c() {
	timeout "${CT:-30}" nsenter --target "$leader" --all --root --wd -- \
		/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_COLORS=0 SYSTEMD_PAGER= "$@"
}
# Until PID 1 serves its private bus socket, systemctl cannot ask it anything.
for _ in $(seq 150); do
	state=$(CT=90 c systemctl is-system-running --wait 2>&1)
	case $state in running | degraded | maintenance | stopping | offline) break ;; esac
	sleep 0.2
done
case $state in
running | degraded) ;;
*)
	tail -n 30 "$work/boot.log"
	die "the container's systemd did not finish booting: $state"
	;;
esac
step "booted in $(($(date +%s) - t_boot)) s ($state$([ "$state" = degraded ] && echo ": $(c systemctl --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"))"

# --- namespaces --------------------------------------------------------------------------------
ns_shared=""
for ns in pid mnt net uts ipc; do
	[ "$(readlink "/proc/$leader/ns/$ns")" = "$(readlink "/proc/self/ns/$ns")" ] && ns_shared+=" $ns"
done
pid1=$(c cat /proc/1/comm)
links=$(c ls /sys/class/net | tr '\n' ' ')
if [ -z "$ns_shared" ] && [ "$pid1" = systemd ] && [ "$links" = "lo " ]; then
	pass namespaces "pid mnt net uts ipc private; PID 1 is $(c systemctl --version | head -n1); network: lo only"
else
	failed namespaces "shared with the machine:${ns_shared:- none}; PID 1 is $pid1; links: $links"
fi

# --- install -----------------------------------------------------------------------------------
if out=$(CT=60 c dpkg -i /srv/provisiond-check/provisiond.deb 2>&1) && c id provisiond >/dev/null 2>&1 &&
	c systemctl cat provisiond.service >/dev/null 2>&1; then
	pass install "dpkg -i $(basename "${debs[0]}"): user $(c id -un provisiond) made, units loaded"
else
	echo "$out" | sed 's/^/  /'
	failed install "dpkg -i failed or made no user/units (above)"
	teardown
	die "cannot go on without the package"
fi

# systemd-analyze security, as packaged (before the test drop-ins below).
security() { # security NAME UNIT
	local out score
	out=$(c systemd-analyze security --no-pager "$2" 2>&1)
	score=$(echo "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
	if [ -z "$score" ]; then
		failed "$1" "systemd-analyze security $2 gave no score: $(echo "$out" | tail -n1)"
	elif awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }'; then
		pass "$1" "systemd-analyze security $2: $score (<= 1.5)"
	else
		failed "$1" "systemd-analyze security $2: $score (> 1.5); worst: $(echo "$out" | grep '^✗' | head -n3 | cut -c1-60 | tr -s ' ' | tr '\n' ';')"
	fi
}
port_b=/dev/nrf91/000960123456
inst=provisiond@nrf91-000960123456.service
security security-provisiond provisiond.service
security security-template "$inst"

# --- the simulated service and the test configuration -------------------------------------------
api_key=sim-api-key
api() { # api METHOD PATH [CURL-ARGS...]: the simulated service's owner API
	local m=$1 p=$2
	shift 2
	c curl -sS --fail-with-body --cacert /etc/provisiond/sim-ca.pem -H "Authorization: Bearer $api_key" \
		-X "$m" "$@" "https://127.0.0.1:8443$p"
}
apijson() { api "$1" "$2" -H 'Content-Type: application/json' --data-binary "$3"; }
c systemd-run --quiet --unit=nrfcloudsim -p StateDirectory=nrfcloudsim \
	/srv/provisiond-check/nrfcloudsim --state-dir /var/lib/nrfcloudsim --http 127.0.0.1:8443 --coap 127.0.0.1:5684 ||
	die "systemd-run nrfcloudsim"
for _ in $(seq 100); do
	c test -s /var/lib/nrfcloudsim/ca.pem && c install -m 0644 /var/lib/nrfcloudsim/ca.pem /etc/provisiond/sim-ca.pem &&
		api GET /v1/sim/devices >/dev/null 2>&1 && break
	sleep 0.2
done
api GET /v1/sim/devices >/dev/null || die "the simulated service does not answer: $(c journalctl -u nrfcloudsim -o cat | tail -n3)"

sim_env() { # the settings that point a daemon at the simulated service and modem
	printf '%s\n' "# systemd-check: the simulated service and modem" \
		"PROVISIOND_MODEM_FLOW_CONTROL=none" \
		"PROVISIOND_HTTP_HOSTNAME=127.0.0.1" "PROVISIOND_HTTP_PORT=8443" \
		"PROVISIOND_HTTP_CA_FILE=/etc/provisiond/sim-ca.pem" \
		"PROVISIOND_PROVISIONING_INITIAL_BACKOFF=1s"
}
port_a=/dev/ttyNRF
{
	sim_env
	echo "PROVISIOND_MODEM_PORT=$port_a"
} | c sh -c 'cat >/etc/default/provisiond'
for u in provisiond.service provisiond@.service; do
	c mkdir -p "/etc/systemd/system/$u.d"
	printf '%s\n' "# systemd-check: the simulated modem is a pty" "[Service]" "DeviceAllow=char-pts rw" |
		c sh -c "cat >/etc/systemd/system/$u.d/50-systemd-check-pty.conf"
done
c systemctl daemon-reload

# Helpers for the daemon.
show() { c systemctl show -P "$2" "$1"; } # show UNIT PROPERTY
status_json() { c provisiond status --json 2>/dev/null; }
user_of() { c stat -c %U "/proc/$1" 2>/dev/null; }
# wait_for SECONDS COMMAND...: run COMMAND every 0.2 s until it succeeds; 1 on timeout.
wait_for() {
	local end=$(($(date +%s) + $1))
	shift
	while ! "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$end" ] || return 1
		sleep 0.2
	done
}
# shellcheck disable=SC2120 # modem_answers --socket PATH for the instance
modem_answers() { c provisiond token "$@" >/dev/null; } # the daemon has the modem open
# idle: the daemon made its first attempt and runs none now, so that the next one is ours.
idle() { status_json | jq -e '.state == "idle" and .attempts >= 1'; }
journal_tail() { c journalctl -u "$1" -o cat --no-pager -n "${2:-3}" | cut -c1-160 | tr '\n' '|'; }

# --- 1. start without a modem ------------------------------------------------------------------
t0=$(date +%s.%N)
CT=20 c timeout 15 systemctl start provisiond.service
start_rc=$?
dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
st="$(show provisiond.service ActiveState)/$(show provisiond.service SubState)"
stext=$(show provisiond.service StatusText)
if [ "$start_rc" = 0 ] && awk -v d="$dt" 'BEGIN { exit !(d <= 10) }' && [ "$st" = active/running ]; then
	pass start-without-modem "systemctl start returned in ${dt} s with no modem; $st (READY=1 sent)"
else
	failed start-without-modem "systemctl start: exit $start_rc after ${dt} s (timeout 15 s); unit $st"
fi
if [[ $stext == *"waiting for the modem on $port_a"* ]]; then
	pass status-without-modem "STATUS=\"$stext\""
else
	failed status-without-modem "STATUS=\"$stext\", want it to say \"waiting for the modem on $port_a\""
fi

# --- 2. the modem appears -----------------------------------------------------------------------
# modem NAME LINK LATENCY: an nrf91sim unit NAME with its pty at LINK, LATENCY per command (long
# enough for the stop check to catch a batch), and its identity registered with
# the simulated service (a real device is known to nRF Cloud from the factory).
modem() {
	local name=$1 link=$2 latency=$3 uuid
	c mkdir -p "$(dirname "$link")"
	c systemd-run --quiet --unit="$name" -p RuntimeDirectory="$name" -p StateDirectory="$name" \
		/srv/provisiond-check/nrf91sim --link "$link" --identity "/var/lib/$name/identity.pem" \
		--public-identity "/run/$name/identity.pub.pem" --uuid-file "/run/$name/uuid" --latency "$latency" ||
		die "systemd-run $name"
	wait_for 20 c test -e "$link" -a -s "/run/$name/uuid" || die "$name: no pty at $link: $(journal_tail "$name")"
	uuid=$(c cat "/run/$name/uuid")
	api PUT "/v1/sim/devices/$uuid" --data-binary "@/run/$name/identity.pub.pem" >/dev/null || die "register $name"
}
# udev_standin PTY-LINK [PORT]: what the udev rule does for a board: group dialout, mode 0660,
# and the stable name PORT.
udev_standin() {
	local pty
	pty=$(c readlink -f "$1")
	c chgrp dialout "$pty" && c chmod 0660 "$pty" || die "chgrp/chmod $pty"
	[ -z "${2:-}" ] || c ln -sfn "$pty" "$2" || die "ln -s $pty $2"
}
modem nrf91sim /run/nrf91sim/tty 250ms
uuid_a=$(c cat /run/nrf91sim/uuid)
# Found online, as in the field: the daemon must give it back online.
grep -qx OK <<<"$(c /srv/provisiond-check/at /run/nrf91sim/tty AT+CFUN=1)" || die "AT+CFUN=1 to the simulated modem"
udev_standin /run/nrf91sim/tty "$port_a"
t0=$(date +%s)
if wait_for 45 modem_answers; then
	# STATUS follows within moments (the first attempt may still run).
	status_moved_on() { [[ $(show provisiond.service StatusText) != *"waiting for the modem"* ]]; }
	wait_for 10 status_moved_on
	pid=$(show provisiond.service MainPID)
	st="$(show provisiond.service ActiveState)/$(show provisiond.service SubState)"
	stext=$(show provisiond.service StatusText)
	if [ "$(user_of "$pid")" = provisiond ] && [ "$st" = active/running ] && [[ $stext != *"waiting for the modem"* ]]; then
		pass modem-opened "opened $port_a $(($(date +%s) - t0)) s after it appeared, as user provisiond; $st, STATUS=\"$stext\""
	else
		failed modem-opened "the modem answers the daemon (user $(user_of "$pid")), unit $st, but STATUS 10 s later says \"$stext\""
	fi
else
	failed modem-opened "the daemon did not open $port_a within 45 s: $(journal_tail provisiond.service)"
fi

# --- 3. claim + job -> DONE ---------------------------------------------------------------------
done_attempt=0
# The first attempt runs while the device is registered but unclaimed (FAILED_DEVICE_NOT_CLAIMED,
# whose catalog text the journal check reads); claim only after it.
wait_for 30 idle || say "  no first attempt yet: $(status_json | jq -c '{state, attempts}')"
token=$(c provisiond token 2>&1)
if ! claim=$(apijson POST /v1/claimed-devices "{\"claimToken\": \"$token\"}" 2>&1); then
	failed claim-job-done "claim with the token from 'provisiond token' failed: $(echo "$token $claim" | cut -c1-200)"
else
	before=$(status_json | jq -r '.attempts // 0')
	ok=1
	for req in '{"clientCertificate": {}}' '{"config": {"properties": {"provisioning/interval-sec": "3600"}}}' '{"finished": {}}'; do
		apijson POST "/v1/claimed-devices/$uuid_a/provisioning" "{\"description\": \"systemd-check\", \"request\": $req}" >/dev/null || ok=0
	done
	[ "$ok" = 1 ] || die "queueing the job"
	c provisiond now >/dev/null || say "provisiond now failed"
	last_done() { status_json | jq -e --argjson n "$before" '.last_attempt.number > $n and .last_attempt.event == "DONE"'; }
	if wait_for 60 last_done; then
		js=$(status_json)
		done_attempt=$(echo "$js" | jq -r .last_attempt.number)
		jobs=$(api GET "/v1/claimed-devices/$uuid_a/provisioning" | jq -r '[.items[].status] | join(",")')
		pass claim-job-done "claimed with 'provisiond token'; attempt $done_attempt: DONE, $(echo "$js" | jq -r .last_attempt.executed) commands executed; jobs at the service: $jobs"
	else
		failed claim-job-done "no DONE within 60 s; last attempt: $(status_json | jq -c '.last_attempt // "none"')"
	fi
fi

# --- 4. reload ----------------------------------------------------------------------------------
pid=$(show provisiond.service MainPID)
since=$(date +%s.%N)
sleep 0.1
if c timeout 15 systemctl reload provisiond.service 2>/dev/null; then
	# The daemon's own lines (not systemd's "Reloading ..."): it took the SIGHUP.
	reload_logged() { grep -qi reload <<<"$(c journalctl "_PID=$pid" --since "@$since" -o cat)"; }
	wait_for 5 reload_logged
	msg=$(c journalctl "_PID=$pid" --since "@$since" -o cat | grep -m1 -i 'reload')
	if [ -n "$msg" ] && [ "$(show provisiond.service MainPID)" = "$pid" ] && [ "$(show provisiond.service ActiveState)" = active ]; then
		pass reload "systemctl reload: same PID $pid, active; journal: \"$(echo "$msg" | cut -c1-80)\""
	else
		failed reload "after systemctl reload: PID $(show provisiond.service MainPID) (was $pid), $(show provisiond.service ActiveState); the daemon's journal: \"${msg:-no reload line}\""
	fi
else
	failed reload "systemctl reload failed: $(journal_tail provisiond.service)"
fi

# --- 5. SIGKILL -> restart -> reopen as user provisiond -----------------------------------------
pid=$(show provisiond.service MainPID)
n0=$(show provisiond.service NRestarts)
since=$(date +%s.%N)
c systemctl kill --signal=SIGKILL provisiond.service
t0=$(date +%s)
restarted() {
	local p
	p=$(show provisiond.service MainPID)
	[ "$p" != 0 ] && [ "$p" != "$pid" ] && [ "$(user_of "$p")" = provisiond ]
}
if wait_for 30 restarted; then
	newpid=$(show provisiond.service MainPID)
	pass sigkill-restart "SIGKILL to PID $pid: restarted as PID $newpid (user provisiond) after $(($(date +%s) - t0)) s, NRestarts $n0 -> $(show provisiond.service NRestarts), unit $(show provisiond.service ActiveState)"
	if wait_for 30 modem_answers; then
		pass reopen-as-provisiond "PID $newpid (user provisiond) reopened $port_a $(($(date +%s) - t0)) s after the kill"
	else
		why=$(c journalctl _SYSTEMD_UNIT=provisiond.service --since "@$since" -o cat | grep -i -m1 -E 'busy|denied|serial|open' | cut -c1-140)
		failed reopen-as-provisiond "PID $newpid has not reopened $port_a 30 s after the kill: ${why:-no journal line}"
		# Go on with the modem released, so that the stop check tests the mode restore: clear
		# the exclusive-use flag (TIOCNXCL) the killed daemon left on the pty, as root, and
		# restart.
		say "  clearing TIOCNXCL on the pty as root and restarting, so the checks below can run"
		c perl -e 'open(my $f, "+<", $ARGV[0]) or die "$!"; ioctl($f, 0x540D, 0) or die "TIOCNXCL: $!"' "$(c readlink -f "$port_a")"
		c timeout 30 systemctl restart provisiond.service
		wait_for 30 modem_answers || say "  the daemon still has no modem"
	fi
else
	failed sigkill-restart "no new main PID running as provisiond 30 s after SIGKILL: $(show provisiond.service ActiveState)/$(show provisiond.service SubState), PID $(show provisiond.service MainPID)"
fi

# --- 6. stop restores the modem's mode ----------------------------------------------------------
# A batch of AT commands takes the modem offline (+CFUN=4) while it runs; stop the daemon in the
# middle of it and read the mode.
nreq=8
if modem_answers; then
	wait_for 30 idle || say "  the daemon is not idle: $(status_json | jq -c '{state, attempts}')"
	before=$(status_json | jq -r '.attempts // 0')
	for _ in $(seq "$nreq"); do
		apijson POST "/v1/claimed-devices/$uuid_a/provisioning" '{"description": "systemd-check stop", "request": {"atRequest": {"command": "AT%CMNG=1"}}}' >/dev/null ||
			die "queueing the AT job"
	done
	c provisiond now >/dev/null
	offline() {
		status_json | jq -e --argjson n "$before" '[.events[] | select(.event == "NEED_LTE_DEACTIVATED" and .attempt > $n)] | length > 0'
	}
	if wait_for 20 offline; then
		c timeout 60 systemctl stop provisiond.service
		st="$(show provisiond.service ActiveState)/$(show provisiond.service Result)"
		left=$(api GET "/v1/claimed-devices/$uuid_a/provisioning" | jq '[.items[] | select(.description == "systemd-check stop" and .status != "SUCCEEDED")] | length')
		mode=$(c /srv/provisiond-check/at "$port_a" 'AT+CFUN?' | sed -n 's/^+CFUN: *//p')
		if [ "$mode" = 1 ] && [ "$st" = inactive/success ] && [ "$left" -gt 0 ]; then
			pass stop-restores-mode "stopped during a batch ($left of $nreq AT jobs not done) with the modem offline: +CFUN: $mode again, unit $st"
		elif [ "$left" = 0 ]; then
			failed stop-restores-mode "the batch ended before the stop took effect: nothing was restored by the stop (+CFUN: $mode)"
		else
			failed stop-restores-mode "after stop: +CFUN: ${mode:-no answer} (want 1), unit $st"
		fi
	else
		failed stop-restores-mode "the daemon never took the modem offline for a batch: $(status_json | jq -c '.last_attempt // "none"')"
		c timeout 60 systemctl stop provisiond.service
	fi
else
	failed stop-restores-mode "the daemon has no modem to stop with"
	c timeout 60 systemctl stop provisiond.service
fi

# --- 7. the journal: fields and catalog ---------------------------------------------------------
entry=$(c journalctl -u provisiond.service -o json --no-pager PROVISIOND_EVENT=DONE | tail -n1)
if [ -n "$entry" ]; then
	missing=""
	for f in MESSAGE_ID PROVISIOND_EVENT PROVISIOND_DEVICE_UUID PROVISIOND_ATTEMPT CODE_FILE CODE_LINE CODE_FUNC; do
		echo "$entry" | jq -e --arg f "$f" 'has($f)' >/dev/null || missing+=" $f"
	done
	msg=$(echo "$entry" | jq -r .MESSAGE)
	if [ -z "$missing" ] && [ "$(echo "$entry" | jq -r .PROVISIOND_DEVICE_UUID)" = "$uuid_a" ] && [[ $msg != *".go:"* ]]; then
		pass journal-fields "journalctl PROVISIOND_EVENT=DONE: \"$msg\", MESSAGE_ID=$(echo "$entry" | jq -r .MESSAGE_ID), PROVISIOND_DEVICE_UUID, PROVISIOND_ATTEMPT=$(echo "$entry" | jq -r .PROVISIOND_ATTEMPT), CODE_FILE=$(echo "$entry" | jq -r .CODE_FILE)"
	else
		failed journal-fields "the DONE entry lacks:${missing:- nothing}; device uuid $(echo "$entry" | jq -r '.PROVISIOND_DEVICE_UUID // "none"'); MESSAGE \"$msg\""
	fi
else
	msg=$(c journalctl -u provisiond.service -o cat --no-pager | grep -m1 '"DONE"' | cut -c1-120)
	failed journal-fields "no entry with PROVISIOND_EVENT=DONE; the DONE entry reads: \"${msg:-none}\""
fi
# The unclaimed device's first attempt (before the claim above) logged FAILED_DEVICE_NOT_CLAIMED.
catalog=/usr/lib/systemd/catalog/provisiond.catalog
nc=$(c journalctl -u provisiond.service -o json --no-pager PROVISIOND_EVENT=FAILED_DEVICE_NOT_CLAIMED | tail -n1)
id=""
[ -n "$nc" ] && id=$(echo "$nc" | jq -r '.MESSAGE_ID // empty')
xout=$(c journalctl -x -u provisiond.service --no-pager PROVISIOND_EVENT=FAILED_DEVICE_NOT_CLAIMED 2>&1)
explain=$(echo "$xout" | sed -n 's/^░░ //p')
if ! c test -s "$catalog"; then
	failed journal-catalog "$catalog is not installed"
elif [ -z "$id" ]; then
	failed journal-catalog "no FAILED_DEVICE_NOT_CLAIMED entry with a MESSAGE_ID in the journal"
elif ! c grep -qix -- "-- $id" "$catalog"; then
	failed journal-catalog "MESSAGE_ID $id of FAILED_DEVICE_NOT_CLAIMED has no entry in $catalog"
elif ! grep -qi "^$id" <<<"$(c journalctl --list-catalog --no-pager)"; then
	failed journal-catalog "$id is not in journald's catalog database (journalctl --update-catalog in postinst?)"
elif ! echo "$explain" | grep -qi claim; then
	failed journal-catalog "journalctl -x shows no text about claiming for FAILED_DEVICE_NOT_CLAIMED: $(echo "${explain:-$xout}" | head -n2 | tr '\n' ' ' | cut -c1-120)"
else
	pass journal-catalog "journalctl -x, FAILED_DEVICE_NOT_CLAIMED ($id): \"$(echo "$explain" | grep -v '^Subject' | grep -m1 -i claim | cut -c1-90)\""
fi

# --- 8. an instance of provisiond@.service for a named port -------------------------------------
modem nrf91sim-b "$port_b" 20ms
uuid_b=$(c cat /run/nrf91sim-b/uuid)
udev_standin "$port_b"
sim_env | c sh -c 'cat >/etc/provisiond/nrf91-000960123456.env'
# As packaged the instance is bound to its device unit, which only udev makes.
CT=20 c timeout 10 systemctl start "$inst" >/dev/null 2>&1
rc=$?
c systemctl cancel >/dev/null 2>&1
say "  as packaged, with no udev: systemctl start $inst: exit $rc, $(show "$inst" ActiveState); $(c journalctl -u dev-nrf91-000960123456.device -o cat --no-pager | tail -n1)"
c sed -e '/^BindsTo=dev-%i\.device$/d' -e '/^After=dev-%i\.device$/d' /usr/lib/systemd/system/provisiond@.service |
	c sh -c 'cat >/etc/systemd/system/provisiond@.service'
removed=$(c diff /usr/lib/systemd/system/provisiond@.service /etc/systemd/system/provisiond@.service | grep '^<' | tr '\n' ' ')
[ "$(c diff /usr/lib/systemd/system/provisiond@.service /etc/systemd/system/provisiond@.service | grep -c '^[<>]')" = 2 ] ||
	die "the template copy differs in more than its two device lines: $removed"
say "  test copy of the template in /etc/systemd/system without: $removed"
c systemctl daemon-reload
t0=$(date +%s.%N)
CT=30 c timeout 20 systemctl start "$inst"
rc=$?
dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
sock=/run/provisiond/nrf91-000960123456/provisiond.sock
pid=$(show "$inst" MainPID)
st="$(show "$inst" ActiveState)/$(show "$inst" SubState)"
envport=$(show "$inst" Environment | tr ' ' '\n' | sed -n 's/^PROVISIOND_MODEM_PORT=//p')
if [ "$rc" = 0 ] && [ "$st" = active/running ] && [ "$envport" = "$port_b" ] && [ "$(user_of "$pid")" = provisiond ] &&
	wait_for 20 modem_answers --socket "$sock" && [ "$(c provisiond uuid --socket "$sock")" = "$uuid_b" ]; then
	pass template-instance "$inst: started in ${dt} s, $st as provisiond, port $envport (uuid ${uuid_b:0:8}…), socket $sock, STATUS=\"$(show "$inst" StatusText)\""
else
	failed template-instance "$inst: start exit $rc after ${dt} s, $st, port ${envport:-unset}, user $(user_of "$pid"): $(journal_tail "$inst" 2)"
fi
c systemctl stop "$inst" nrf91sim-b nrf91sim nrfcloudsim >/dev/null 2>&1

# --- teardown -----------------------------------------------------------------------------------
t_check=$(date +%s)
if teardown; then
	pass teardown "container powered off in $(($(date +%s) - t_check)) s; no process, mount or cgroup of the run left"
else
	failed teardown "something was left behind (above)"
fi
say "${#results[@]} checks in $(($(date +%s) - t_begin)) s"
echo "$npass passed, $nfail failed"
[ "$nfail" = 0 ]
