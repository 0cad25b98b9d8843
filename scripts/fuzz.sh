#!/usr/bin/env bash
# Runs every Go fuzz target in the module with the given budget each: a duration (30s, 10m)
# for a real fuzzing run, or an execution count (2000x). `fuzz.sh smoke` is the CI smoke:
# an execution count, because a duration budget can end in "context deadline exceeded" on a
# loaded machine (a Go 1.26 fuzzing-engine bug, fixed in Go 1.27) and fail a green build,
# while a count finishes whenever the machine gets to it and still proves every target
# builds, replays its corpus and runs.
set -euo pipefail
budget=${1:-30s}
smoke_execs=${FUZZ_SMOKE_EXECS:-2000}
if [ "$budget" = smoke ]; then
	budget="${smoke_execs}x"
fi
if ! [[ $budget =~ ^[0-9]+(x|ns|us|ms|s|m|h)$ ]]; then
	echo "fuzz: budget '$budget' is neither a duration (30s, 10m) nor an execution count (2000x) nor 'smoke'" >&2
	exit 2
fi
cd "$(dirname "$0")/.."
found=0
while IFS= read -r file; do
	pkg="./$(dirname "$file")"
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
		found=$((found + 1))
		echo "fuzz: $pkg $target for $budget"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$budget" "$pkg"
	done
done < <(grep -rlE '^func Fuzz[A-Za-z0-9_]+\(' --include='*_test.go' cmd internal 2>/dev/null | sort)
echo "fuzz: ran $found targets"
