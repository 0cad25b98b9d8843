#!/usr/bin/env bash
# Runs the unit tests of every package for a gateway CPU under qemu-user, without binfmt_misc:
# each test binary is cross-built (GOARCH, GOARM) and `go test -exec` starts it through the
# static qemu for that CPU, in the package folder as a native run would. Usage:
#   scripts/test-arch.sh [arm64|armhf ...]      (default: arm64 armhf)
# Environment: TEST_ARCH_PKGS (default ./internal/... ./cmd/...), TEST_ARCH_FLAGS (extra go
# test flags, e.g. -short). Installs qemu-user-static with apt-get when it is missing and we
# are root. Prints one line per package (ok/FAIL and its time), a summary per architecture, and
# exits non-zero when any package failed.
#
# e2e is not in the default list: its tests start the daemon built for the target CPU as a
# child process, and without binfmt_misc the kernel cannot exec a foreign binary.
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
read -r -a pkgs <<<"${TEST_ARCH_PKGS:-./internal/... ./cmd/...}"
read -r -a extra <<<"${TEST_ARCH_FLAGS:-}"

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
	env "${env[@]}" CGO_ENABLED=0 go test -count=1 -exec "$qemu" "${extra[@]}" "${pkgs[@]}" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	end=$(date +%s)
	ok=$(grep -c '^ok ' "$out")
	failed=$(grep -c '^FAIL[[:space:]]' "$out")
	echo "test-arch: $a: $ok packages ok, $failed failed, $((end - start)) s wall (exit $rc)"
	[ "$rc" -eq 0 ] || status=1
	rm -f "$out"
done
exit "$status"
