#!/bin/bash
# A stand-in for the provisiond binary that bench/cost runs (`-bin bench/abstat/wrap.sh`):
# it runs one of several real binaries, ABSTAT_BIN0 … ABSTAT_BIN<N-1> (N = ABSTAT_N, default 2),
# under `perf stat` and appends the counts to ABSTAT_DIR/log, which `go run ./bench/abstat`
# summarises. bench/cost starts every round with `version`, so the binary changes at each
# `version`: all runs of one round (start-up, then each `run --once` kind) use the same binary
# and the binaries alternate from round to round, so that drift of a shared machine hits them
# alike. Runs are labelled by their place in the round: "start" for `version`, "run1", "run2"…
# for the `run --once` runs after it, "run0" for a run before the first `version` (the warm-up).
#
# Example: ABSTAT_DIR=/tmp/ab ABSTAT_BIN0=/tmp/before ABSTAT_BIN1=/tmp/after \
#          go run ./bench/cost -bin bench/abstat/wrap.sh -n 60 -once
#          go run ./bench/abstat -log /tmp/ab/log -kinds batch,realistic,none
set -u
n=${ABSTAT_N:-2}
dir=${ABSTAT_DIR:?ABSTAT_DIR: the folder for the log}
mkdir -p "$dir"
round=$(cat "$dir/round" 2>/dev/null || echo 0)
place=$(cat "$dir/place" 2>/dev/null || echo 0)
case " $* " in
*" --help "*) kind=help ;;
*) case "${1:-}" in
	version) kind=start ;;
	run) kind=run ;;
	*) kind= ;;
	esac ;;
esac
case "$kind" in
start)
	round=$((round + 1)); place=0
	echo "$round" >"$dir/round"; echo 0 >"$dir/place" ;;
run)
	place=$((place + 1)); echo "$place" >"$dir/place"
	# A run before the first version is the warm-up: place 0.
	[ "$round" = 0 ] && place=0
	kind=run$place ;;
help)
	kind= ;;
esac
v=$((round % n))
var=ABSTAT_BIN$v
bin=${!var:?$var: a provisiond binary}
[ -z "$kind" ] && exec "$bin" "$@"
out=$(mktemp "$dir/one.XXXXXX")
perf stat -x, -e task-clock,page-faults,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_nanosleep,syscalls:sys_enter_futex \
	-o "$out" -- "$bin" "$@"
rc=$?
# perf's CSV: value,unit,event,…; comment and empty lines are dropped.
grep -v -e '^#' -e '^$' "$out" | sed "s|^|bin$v,$kind,$round,|" >>"$dir/log"
rm -f "$out"
exit $rc
