#!/bin/sh
# Guest 2's job in the fabric-two boot of `make test` (tests/suites.txt): loads mnic.ko and
# the stale-access oracle, gives itself swap, then serves guest 1's fabric-two.sh over the
# serial link, each server armed with the oracle: the ping-pong's answers, the target
# window of guest 1's PUT stream, paged out every FABRIC_PAGEOUT_MS while the stream runs and
# checked at the end, then the tagged SEND/RECV ping-pong's echoes and the receiving end of
# guest 1's SEND stream, every message checked. Exits non-zero if a server failed (its check included, and the check
# that its NIC accepted oracle reports during it) or this guest's NIC counted a stale access
# or an oracle violation, so the run's status (the worse of the two jobs') fails the boot.
. /usr/share/mnic/fabric-link.sh
. /usr/share/mnic/bench-env.sh 64M
if [ -n "$BENCH_ENV_ERR" ]; then
	echo "fabric-peer: $BENCH_ENV_ERR" >&2
	exit 1
fi
if ! fabric_load_oracle; then
	echo "fabric-peer: the oracle module did not load" >&2
	exit 1
fi
fail=0
fabric_pingpong_serve || { echo "fabric-peer: ping-pong server failed" >&2; fail=1; }
fabric_bw_serve || { echo "fabric-peer: stream target failed" >&2; fail=1; }
fabric_send_pingpong_serve || { echo "fabric-peer: SEND ping-pong server failed" >&2; fail=1; }
fabric_send_stream_serve || { echo "fabric-peer: SEND stream receiver failed" >&2; fail=1; }
if ! fabric_device_clean; then
	echo "fabric-peer: this guest's NIC saw a stale access or an oracle violation, or no oracle report" >&2
	fail=1
fi
exit $fail
