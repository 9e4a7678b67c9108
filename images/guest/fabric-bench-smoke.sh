#!/bin/sh
# Smoke of `mnic pingpong` and `mnic bw` for the fabric boot of `make test` (KTAP): each
# once with --smoke (two small sizes, one iteration) between /dev/mnic0 and /dev/mnic1,
# with PUT/GET and with tagged SEND/RECV (`--op send`: the largest eager and the smallest
# rendezvous message), its JSON report checked for results, ratios, and no "skipped" (in
# this boot the two devices are peers: a skip is a failure).
. /usr/share/mnic/bench-env.sh 64M
i=0
while [ ! -e /dev/mnic1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
# Each case is `BENCH:OP` or, for the target-paging measurement, `BENCH:OP:target`.
cases="pingpong:put bw:put pingpong:send bw:send bw:put:target"
echo "KTAP version 1"
echo "1..5"
[ -e /dev/mnic1 ] || BENCH_ENV_ERR="${BENCH_ENV_ERR:-/dev/mnic1 missing (boot with --devices 2 --fabric)}"
# KTAP names: pingpong, bw (PUT/GET), pingpong_send, bw_send, bw_target_paging.
case_name() {
	case "$1" in
	*:target) echo "${1%%:*}_target_paging" ;;
	*:put) echo "${1%%:*}" ;;
	*) echo "${1%%:*}_${1#*:}" ;;
	esac
}
if [ -n "$BENCH_ENV_ERR" ]; then
	i=0
	for c in $cases; do
		i=$((i + 1))
		name=$(case_name "$c")
		echo "not ok $i $name # $BENCH_ENV_ERR"
	done
	exit 1
fi
fail=0
i=0
for c in $cases; do
	i=$((i + 1))
	bench=${c%%:*}
	rest=${c#*:}
	op=${rest%%:*}
	name=$(case_name "$c")
	# The target-paging case measures a PUT into a paged-out target against a local COPY into
	# a paged-out destination, and on-demand against pinned (`mnic bw --target-pageout
	# --target-pinned`).
	extra=
	[ "$rest" = "${op}:target" ] && extra="--target-pageout --target-pinned"
	# shellcheck disable=SC2086
	if ! mnic "$bench" --op "$op" $extra --smoke --json >/tmp/fabric-smoke.json 2>/tmp/fabric-smoke.err; then
		echo "not ok $i $name # mnic $bench --op $op: $(tail -n 2 /tmp/fabric-smoke.err | tr '\n' ' ')"
		fail=1
	elif grep -q '"skipped"' /tmp/fabric-smoke.json; then
		echo "not ok $i $name # skipped: $(sed -n 's/.*"skipped": "\(.*\)".*/\1/p' /tmp/fabric-smoke.json)"
		fail=1
	elif ! grep -q '"ratios"' /tmp/fabric-smoke.json || ! grep -q '"side": "measured"' /tmp/fabric-smoke.json ||
		! grep -q '"side": "baseline"' /tmp/fabric-smoke.json || grep -q '"value": null' /tmp/fabric-smoke.json; then
		echo "not ok $i $name # report without results, baselines or ratios"
		fail=1
	elif ! grep -q "\"op\": \"$op\"" /tmp/fabric-smoke.json; then
		echo "not ok $i $name # report does not say op $op"
		fail=1
	else
		echo "ok $i $name"
	fi
done
exit $fail
