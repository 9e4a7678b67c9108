#!/bin/sh
# Writes the integer constants of the mnic ABI (abi/src/abi.rs, the one definition shared by the
# device, the driver and the library) as C #defines, so the C oracle module never restates the
# register map: `pub const X: T = V;` at top level becomes MNIC_X, inside `pub mod m` MNIC_M_X.
set -eu
echo "/* Generated from abi/src/abi.rs by gen-abi-h.sh: do not edit. */"
echo "#ifndef MNIC_ABI_H"
echo "#define MNIC_ABI_H"
awk '
/^pub mod [a-z_0-9]+ \{/ { mod = toupper($3) "_"; next }
/^\}/ { mod = ""; next }
/^ *pub const [A-Z_0-9]+: (u8|u16|u32|u64) = [0-9a-fx_]+;/ {
	name = $3; sub(/:$/, "", name)
	v = $6; sub(/;$/, "", v); gsub(/_/, "", v)
	p = (mod == "" && name ~ /^MNIC_/) ? "" : "MNIC_"
	printf "#define %s%s%s %sULL\n", p, mod, name, v
}' "$1"
echo "#endif"
