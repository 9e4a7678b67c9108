#!/bin/sh
# Foundation smoke test (KTAP): the out-of-tree Rust module loads, says so, and unloads.
fail=0
result() { # result N NAME STATUS [REASON]
	if [ "$3" -eq 0 ]; then echo "ok $1 $2"; else echo "not ok $1 $2 # $4"; fail=1; fi
}
echo "KTAP version 1"
echo "1..3"
insmod /lib/modules/mnic_smoke.ko 2>/tmp/insmod.err
result 1 smoke_module_loads $? "insmod: $(cat /tmp/insmod.err)"
dmesg | grep -q 'mnic_smoke: Rust module loaded'
result 2 smoke_module_prints $? "no 'Rust module loaded' line in dmesg"
rmmod mnic_smoke 2>/tmp/rmmod.err && dmesg | grep -q 'mnic_smoke: unloaded'
result 3 smoke_module_unloads $? "rmmod: $(cat /tmp/rmmod.err)"
exit $fail
