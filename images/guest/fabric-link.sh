#!/bin/sh
# Sourced by the jobs of two guests joined by the serial link /dev/ttyS1 (`mnic-vm run
# --peer-cmd`, one NIC each on one fabric): `demo.sh fabric-client|fabric-server` and the
# fabric-two boot of `make test` (fabric-two.sh in guest 1, fabric-peer.sh in guest 2).
# What both ends must agree on (the server sizes its windows from the same --sizes the
# client sends), each end's `mnic` command (every one armed with the stale-access oracle,
# and checked to have been), and the device counters a job checks.
FABRIC_LINK=/dev/ttyS1
FABRIC_PINGPONG_SIZES=8,4096,65536
FABRIC_BW_SIZES=64K,1M
# Tagged messages (`--op send`): the ping-pong crosses the eager limit (EAGER_MAX, 1416
# bytes: one packet; one byte more goes by rendezvous, the receiver pulling it); the stream
# has the largest eager message and a 64 KiB rendezvous one (an iteration of eager messages
# is 2048 of them, one in flight at a time: one such size keeps the case short).
FABRIC_SEND_PINGPONG_SIZES=64,1416,1417,65536
FABRIC_SEND_STREAM_SIZES=1416,64K
# How often guest 2 pages its stream target out (MADV_PAGEOUT) while guest 1 streams.
FABRIC_PAGEOUT_MS=100

# Guest 1's ends; the arguments (iterations) go to mnic.
fabric_pingpong_connect() {
	fabric_watched pingpong --connect --link $FABRIC_LINK --sizes $FABRIC_PINGPONG_SIZES "$@"
}
fabric_bw_connect() {
	fabric_watched bw --connect --link $FABRIC_LINK --sizes $FABRIC_BW_SIZES "$@"
}
fabric_send_pingpong_connect() {
	fabric_watched pingpong --op send --connect --link $FABRIC_LINK --sizes $FABRIC_SEND_PINGPONG_SIZES "$@"
}
fabric_send_stream_connect() {
	fabric_watched bw --op send --connect --link $FABRIC_LINK --sizes $FABRIC_SEND_STREAM_SIZES "$@"
}

# Guest 2's ends, in the order guest 1 runs them. The PUT stream's server pages its window
# out while the stream runs, checks the data at the end and answers ok or fail; the SEND
# servers echo each ping (checking its stamp) and check every streamed message, answering
# fail as soon as one is wrong: both ends' exit statuses say whether the data arrived
# intact.
fabric_pingpong_serve() {
	fabric_watched pingpong --serve --link $FABRIC_LINK --sizes $FABRIC_PINGPONG_SIZES
}
fabric_bw_serve() {
	fabric_watched bw --serve --link $FABRIC_LINK --sizes $FABRIC_BW_SIZES --pageout-ms $FABRIC_PAGEOUT_MS
}
fabric_send_pingpong_serve() {
	fabric_watched pingpong --op send --serve --link $FABRIC_LINK --sizes $FABRIC_SEND_PINGPONG_SIZES
}
fabric_send_stream_serve() {
	fabric_watched bw --op send --serve --link $FABRIC_LINK --sizes $FABRIC_SEND_STREAM_SIZES
}

# Loads the stale-access oracle module (tests/kmod/mnic-oracle, in the image), which every
# end's `--oracle` needs, unless it is loaded.
fabric_load_oracle() {
	[ -e /dev/mnic_oracle ] || insmod /lib/modules/mnic_oracle.ko
}

# Runs `mnic "$@" --oracle` (every context of the run armed with the stale-access oracle,
# which reports each invalidation of the process to the device, spec 8a) and fails unless
# /dev/mnic0 accepted oracle reports during it (its `oracle_invalidations` grew): the run was
# really watched, so a zero `oracle_violations` afterwards is a verdict, not an absence of one.
fabric_watched() {
	before=$(fabric_device_counter oracle_invalidations)
	mnic "$@" --oracle || return
	after=$(fabric_device_counter oracle_invalidations)
	if [ -z "$before" ] || [ -z "$after" ]; then
		echo "oracle: cannot read oracle_invalidations of /dev/mnic0 (mnic stats --json)"
		return 1
	fi
	echo "oracle: /dev/mnic0 accepted $((after - before)) reports of this run (oracle_invalidations $before -> $after)"
	if [ "$after" -le "$before" ]; then
		echo "oracle: no report reached /dev/mnic0 during the run: its contexts were not armed"
		return 1
	fi
}

# Waits up to 5 s for /dev/mnic0 (the driver binds the NIC after insmod returns).
fabric_wait_nic() {
	i=0
	while [ ! -e /dev/mnic0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	[ -e /dev/mnic0 ]
}

# Prints device counter $1 of /dev/mnic0 (`mnic stats --json`), nothing if unreadable.
fabric_device_counter() {
	mnic stats --json 2>/dev/null | grep -o '"device_counters":{[^}]*}' |
		grep -o "\"$1\":[0-9]*" | cut -d: -f2
}

# Succeeds if /dev/mnic0 counted no stale access and no oracle violation, and accepted oracle
# reports (so the oracle watched this guest's runs); says which otherwise (or that the
# counters could not be read).
fabric_device_clean() {
	stale=$(fabric_device_counter stale_accesses)
	oracle=$(fabric_device_counter oracle_violations)
	reports=$(fabric_device_counter oracle_invalidations)
	echo "stale_accesses=${stale:-?} oracle_violations=${oracle:-?} oracle_invalidations=${reports:-?}"
	[ "$stale" = 0 ] && [ "$oracle" = 0 ] && [ "${reports:-0}" -gt 0 ]
}
