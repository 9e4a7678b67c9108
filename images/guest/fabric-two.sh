#!/bin/sh
# Guest 1's suite in the fabric-two boot of `make test` (tests/suites.txt; KTAP), against
# fabric-peer.sh in guest 2 over the serial link, each guest with one NIC on one fabric:
#   pingpong           PUT ping-pong between the two guests' memories (guest 2 answers each
#                      message with a PUT back);
#   put_stream_pageout a PUT/GET stream into guest 2's window while guest 2 pages it out;
#                      guest 2 checks the data and answers ok or fail over the link;
#   send_pingpong      tagged SEND/RECV ping-pong, eager and rendezvous sizes: guest 2 echoes
#                      each ping after checking its stamp, guest 1 checks each echo whole;
#   send_stream        a stream of tagged SENDs, an eager and a rendezvous size, into
#                      receives guest 2 keeps posted; guest 2 checks every message and its
#                      data and acknowledges each iteration;
#   device_clean       this guest's NIC counted no stale access and no oracle violation, and
#                      accepted oracle reports.
# Both ends of every run are armed with the stale-access oracle (`--oracle`), and each run
# fails unless its NIC accepted oracle reports during it (fabric-link.sh `fabric_watched`).
# Guest 2's own NIC is its job's check (its exit status is part of the run's).
. /usr/share/mnic/fabric-link.sh
echo "KTAP version 1"
echo "1..5"
fail=0
# Runs "$@" as case $1 (number) $2 (name), the command's last lines as the reason.
case_of() {
	n=$1 name=$2
	shift 2
	"$@" >/tmp/fabric-two.out 2>&1
	rc=$?
	sed 's/^/# /' /tmp/fabric-two.out
	if [ $rc -eq 0 ]; then
		echo "ok $n $name"
	else
		echo "not ok $n $name # $(tail -n 2 /tmp/fabric-two.out | tr '\n' ' ')"
		fail=1
	fi
}
# Fails every case with reason $1.
all_fail() {
	for c in "1 pingpong" "2 put_stream_pageout" "3 send_pingpong" "4 send_stream" "5 device_clean"; do
		echo "not ok $c # $1"
	done
	exit 1
}
fabric_wait_nic || all_fail "/dev/mnic0 missing (insmod mnic.ko first; boot with --devices 1 --fabric)"
fabric_load_oracle >/tmp/fabric-two.out 2>&1 ||
	all_fail "the oracle module did not load: $(tail -n 1 /tmp/fabric-two.out)"
case_of 1 pingpong fabric_pingpong_connect -n 10 --warmup 2
case_of 2 put_stream_pageout fabric_bw_connect -n 3 --warmup 1
case_of 3 send_pingpong fabric_send_pingpong_connect -n 10 --warmup 2
case_of 4 send_stream fabric_send_stream_connect -n 2 --warmup 0
case_of 5 device_clean fabric_device_clean
exit $fail
