#!/bin/sh
# Runs guest test suites one after another and frames each one's KTAP output for the
# host harness:  "# mnic-suite-begin NAME" ... "# mnic-suite-end NAME rc=N".
# Usage: run-suites.sh NAME=COMMAND [NAME=COMMAND ...]   Exit: non-zero if any suite failed.
fail=0
for spec in "$@"; do
	name=${spec%%=*}
	cmd=${spec#*=}
	echo "# mnic-suite-begin $name"
	sh -c "$cmd" 2>&1
	rc=$?
	echo "# mnic-suite-end $name rc=$rc"
	[ $rc -eq 0 ] || fail=1
done
exit $fail
