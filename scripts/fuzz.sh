#!/usr/bin/env bash
# Runs every Go fuzz target in the module for the given time each (e.g. 30s).
set -euo pipefail
fuzztime=${1:-30s}
cd "$(dirname "$0")/.."
found=0
while IFS= read -r file; do
	pkg="./$(dirname "$file")"
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
		found=$((found + 1))
		echo "fuzz: $pkg $target for $fuzztime"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done < <(grep -rlE '^func Fuzz[A-Za-z0-9_]+\(' --include='*_test.go' cmd internal 2>/dev/null | sort)
echo "fuzz: ran $found targets"
