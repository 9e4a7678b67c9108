#!/bin/sh
# Smoke of `mnic pingpong` and `mnic bw` for the fabric boot of `make test` (KTAP): each
# once with --smoke (two small sizes, one iteration) between /dev/mnic0 and /dev/mnic1,
# its JSON report checked for results, ratios, and no "skipped" (in this boot the two
# devices are peers: a skip is a failure).
. /usr/share/mnic/bench-env.sh 64M
i=0
while [ ! -e /dev/mnic1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
cases="pingpong bw"
echo "KTAP version 1"
echo "1..2"
[ -e /dev/mnic1 ] || BENCH_ENV_ERR="${BENCH_ENV_ERR:-/dev/mnic1 missing (boot with --devices 2 --fabric)}"
if [ -n "$BENCH_ENV_ERR" ]; then
	echo "not ok 1 pingpong # $BENCH_ENV_ERR"
	echo "not ok 2 bw # $BENCH_ENV_ERR"
	exit 1
fi
fail=0
i=0
for c in $cases; do
	i=$((i + 1))
	if ! mnic "$c" --smoke --json >/tmp/fabric-smoke.json 2>/tmp/fabric-smoke.err; then
		echo "not ok $i $c # mnic $c: $(tail -n 2 /tmp/fabric-smoke.err | tr '\n' ' ')"
		fail=1
	elif grep -q '"skipped"' /tmp/fabric-smoke.json; then
		echo "not ok $i $c # skipped: $(sed -n 's/.*"skipped": "\(.*\)".*/\1/p' /tmp/fabric-smoke.json)"
		fail=1
	elif ! grep -q '"ratios"' /tmp/fabric-smoke.json || ! grep -q '"side": "measured"' /tmp/fabric-smoke.json ||
		! grep -q '"side": "baseline"' /tmp/fabric-smoke.json || grep -q '"value": null' /tmp/fabric-smoke.json; then
		echo "not ok $i $c # report without results, baselines or ratios"
		fail=1
	else
		echo "ok $i $c"
	fi
done
exit $fail
