#!/bin/sh
# Sourced by the jobs of two guests joined by the serial link /dev/ttyS1 (`mnic-vm run
# --peer-cmd`, one NIC each on one fabric): `demo.sh fabric-client|fabric-server` and the
# fabric-two boot of `make test` (fabric-two.sh in guest 1, fabric-peer.sh in guest 2).
# What both ends must agree on (the server sizes its windows from the same --sizes the
# client sends), each end's `mnic` command, and the device counters a job checks.
FABRIC_LINK=/dev/ttyS1
FABRIC_PINGPONG_SIZES=8,4096,65536
FABRIC_BW_SIZES=64K,1M
# How often guest 2 pages its stream target out (MADV_PAGEOUT) while guest 1 streams.
FABRIC_PAGEOUT_MS=100

# Guest 1's ends; the arguments (iterations) go to mnic.
fabric_pingpong_connect() {
	mnic pingpong --connect --link $FABRIC_LINK --sizes $FABRIC_PINGPONG_SIZES "$@"
}
fabric_bw_connect() {
	mnic bw --connect --link $FABRIC_LINK --sizes $FABRIC_BW_SIZES "$@"
}

# Guest 2's ends, in the order guest 1 runs them. The stream's server pages its window
# out while the stream runs, checks the data at the end and answers ok or fail: both
# ends' exit statuses say whether the data arrived intact.
fabric_pingpong_serve() {
	mnic pingpong --serve --link $FABRIC_LINK --sizes $FABRIC_PINGPONG_SIZES
}
fabric_bw_serve() {
	mnic bw --serve --link $FABRIC_LINK --sizes $FABRIC_BW_SIZES --pageout-ms $FABRIC_PAGEOUT_MS
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

# Succeeds if /dev/mnic0 counted no stale access and no oracle violation; says which
# otherwise (or that the counters could not be read).
fabric_device_clean() {
	stale=$(fabric_device_counter stale_accesses)
	oracle=$(fabric_device_counter oracle_violations)
	echo "stale_accesses=${stale:-?} oracle_violations=${oracle:-?}"
	[ "$stale" = 0 ] && [ "$oracle" = 0 ]
}
