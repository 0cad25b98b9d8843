#!/usr/bin/env bash
# Fails when a package's statement coverage, as printed by `go test -cover`, is under its floor:
# 80 % for the AT modem driver (internal/atmodem), 75 % for each transport.
# Usage: scripts/coverage-gate.sh GO_TEST_OUTPUT_FILE
set -euo pipefail
out="$1"
declare -A floor=(
	[internal/atmodem]=80
	[internal/httptransport]=75
	[internal/coaptransport]=75
)
status=0
for pkg in "${!floor[@]}"; do
	line=$(grep -E "^ok[[:space:]]+[^[:space:]]+/${pkg}[[:space:]]" "$out" || true)
	pct=$(sed -nE 's/.*coverage: ([0-9.]+)% of statements.*/\1/p' <<<"$line")
	if [[ -z "$pct" ]]; then
		echo "coverage-gate: no coverage figure for $pkg in $out" >&2
		status=1
		continue
	fi
	if awk -v p="$pct" -v f="${floor[$pkg]}" 'BEGIN { exit !(p < f) }'; then
		echo "coverage-gate: $pkg ${pct}% is under ${floor[$pkg]}%" >&2
		status=1
	else
		echo "coverage-gate: $pkg ${pct}% (floor ${floor[$pkg]}%)"
	fi
done
exit "$status"
