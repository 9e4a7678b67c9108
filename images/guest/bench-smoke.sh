#!/bin/sh
# Smoke variant of `make bench` for `make test` (KTAP): every `mnic bench` case once,
# one tiny iteration (--smoke), its JSON report checked for shape; the traffic run
# with page-outs must see zero stale accesses. A case whose report says "skipped" (the
# driver or device lacks what it measures) is a KTAP SKIP.
. /usr/share/mnic/bench-env.sh 64M
cases="copy_hot copy_cold register fault invalidate traffic_swap sync doorbell idle"
echo "KTAP version 1"
echo "1..$(echo $cases | wc -w)"
if [ -n "$BENCH_ENV_ERR" ]; then
	i=1
	for c in $cases; do echo "not ok $i bench_$c # $BENCH_ENV_ERR"; i=$((i + 1)); done
	exit 1
fi
fail=0
i=0
for c in $cases; do
	i=$((i + 1))
	case $c in
	copy_hot) args="copy" ;;
	copy_cold) args="copy --cold" ;;
	register) args="register" ;;
	fault) args="fault" ;;
	invalidate) args="invalidate" ;;
	traffic_swap) args="traffic --pattern random-rw --rate 20000 --pageout-every-ms 2" ;;
	sync) args="sync" ;;
	doorbell) args="doorbell" ;;
	idle) args="idle" ;;
	esac
	# shellcheck disable=SC2086
	if ! mnic bench $args --smoke --json >/tmp/smoke.json 2>/tmp/smoke.err; then
		echo "not ok $i bench_$c # mnic bench $args: $(tail -n 2 /tmp/smoke.err | tr '\n' ' ')"
		fail=1
	elif grep -q '"skipped"' /tmp/smoke.json; then
		# A driver or device without what the case measures: said, not failed.
		echo "ok $i bench_$c # SKIP $(sed -n 's/.*"skipped": "\(.*\)".*/\1/p' /tmp/smoke.json)"
	elif ! grep -q '"ratios"' /tmp/smoke.json || ! grep -q '"side": "measured"' /tmp/smoke.json; then
		echo "not ok $i bench_$c # report without results or ratios"
		fail=1
	elif [ $c = traffic_swap ] && ! grep -q '"stale_accesses": 0' /tmp/smoke.json; then
		echo "not ok $i bench_$c # stale accesses: $(grep stale_accesses /tmp/smoke.json | head -n 1)"
		fail=1
	else
		note=
		grep -q '"pinned_supported": false' /tmp/smoke.json && note=" # pinned baseline: EOPNOTSUPP"
		echo "ok $i bench_$c$note"
	fi
done
exit $fail
