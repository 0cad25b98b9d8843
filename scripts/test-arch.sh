#!/usr/bin/env bash
# Runs the unit tests of every package and e2e for a gateway CPU under qemu-user, without
# binfmt_misc: each test binary is cross-built (GOARCH, GOARM) and `go test -exec` starts it
# through the static qemu for that CPU, in the package folder as a native run would. Tests that
# start a program they built for the CPU (the daemon in e2e, a re-exec of the test binary) do
# it through internal/testexec, which reads TEST_ARCH_EXEC (set here to the same qemu): the
# kernel cannot exec a foreign binary without binfmt_misc. Usage:
#   scripts/test-arch.sh [arm64|armhf ...]      (default: arm64 armhf)
# Environment: TEST_ARCH_PKGS (default ./internal/... ./cmd/... ./e2e), TEST_ARCH_FLAGS (extra
# go test flags for every package), TEST_ARCH_E2E_FLAGS (go test flags for ./e2e only; default
# -short: the crash-point sweep and running every fault row on both transports test logic
# that does not depend on the CPU, and take most of e2e's time, many times longer under
# emulation). Under emulation e2e gives its programs testexec.Scale (× 10) of its native time
# limits. Installs qemu-user-static with apt-get when it is missing and we are root.
# Prints one line per package (ok/FAIL and its time), a summary per architecture, and exits
# non-zero when any package failed. Every test binary gets 30 minutes, not go test's 10:
# internal/store's crash test starts its child through qemu 200 times (7 min on arm64 on the
# loaded 2 cores).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# need (scripts/lib/need.sh) calls these two.
# shellcheck disable=SC2317
fail() { echo "test-arch: FAIL: $*" >&2; exit 1; }
# shellcheck disable=SC2317
step() { echo "test-arch: $*"; }

# shellcheck source=lib/need.sh
. scripts/lib/need.sh
need qemu-aarch64-static qemu-user-static
need qemu-arm-static qemu-user-static

archs=("$@")
[ "${#archs[@]}" -gt 0 ] || archs=(arm64 armhf)
read -r -a all <<<"${TEST_ARCH_PKGS:-./internal/... ./cmd/... ./e2e}"
read -r -a extra <<<"${TEST_ARCH_FLAGS:-}"
read -r -a e2eflags <<<"${TEST_ARCH_E2E_FLAGS--short}"
# e2e runs on its own, after the rest, with its own flags.
pkgs=() e2e=()
for p in "${all[@]}"; do
	case "$p" in
	./e2e | ./e2e/... | e2e) e2e=("$p") ;;
	*) pkgs+=("$p") ;;
	esac
done

status=0
for a in "${archs[@]}"; do
	case "$a" in
	arm64) env=(GOARCH=arm64) qemu=qemu-aarch64-static ;;
	armhf) env=(GOARCH=arm GOARM=7) qemu=qemu-arm-static ;;
	*) echo "test-arch: unknown architecture $a (want arm64 or armhf)" >&2; exit 2 ;;
	esac
	echo "test-arch: $a (${env[*]}, $qemu)"
	start=$(date +%s)
	out=$(mktemp)
	rc=0
	if [ "${#pkgs[@]}" -gt 0 ]; then
		env "${env[@]}" CGO_ENABLED=0 TEST_ARCH_EXEC="$qemu" go test -count=1 -timeout 30m -exec "$qemu" "${extra[@]}" "${pkgs[@]}" 2>&1 | tee "$out"
		rc=${PIPESTATUS[0]}
	fi
	if [ "${#e2e[@]}" -gt 0 ]; then
		# e2e builds the daemon with go build in its TestMain, for the GOARCH it inherits.
		env "${env[@]}" CGO_ENABLED=0 TEST_ARCH_EXEC="$qemu" go test -count=1 -timeout 30m -exec "$qemu" "${extra[@]}" "${e2eflags[@]}" "${e2e[@]}" 2>&1 | tee -a "$out"
		[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
	fi
	end=$(date +%s)
	ok=$(grep -c '^ok ' "$out")
	failed=$(grep -c '^FAIL[[:space:]]' "$out")
	echo "test-arch: $a: $ok packages ok, $failed failed, $((end - start)) s wall (exit $rc)"
	[ "$rc" -eq 0 ] || status=1
	rm -f "$out"
done
exit "$status"
