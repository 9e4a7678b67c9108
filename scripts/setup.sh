#!/usr/bin/env bash
# One-command, idempotent set-up of everything mnic needs on a fresh Debian 12 machine.
#
#   scripts/setup.sh [host|qemu|rustsrc|bindgen|kernel|all]   (default: all)
#
# Heavy artifacts live under $MNIC_CACHE (default ~/.cache/mnic), each keyed by its
# inputs, so a second run does no work. Packages newer than bookworm (QEMU >= 10.1,
# rust-src matching rustc, linux-source-7.3) come from trixie(-backports) through a
# *private* apt state and `dpkg -x`: the system's apt sources and libc are never touched.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/env.sh
source "$here/scripts/env.sh"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- host packages (bookworm)
HOST_PKGS=(clang-19 lld-19 llvm-19 libclang-19-dev bison flex bc libelf-dev libssl-dev
           cpio busybox-static xz-utils zstd
           jq) # jq: make bench reads the --iommu reports (scripts/bench.sh)
setup_host() {
	local missing=()
	for p in "${HOST_PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die "missing host packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
	log "installing host packages: ${missing[*]}"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
		|| die "apt-get install ${missing[*]} failed"
}

# ---------------------------------------------------------------- private apt state (trixie)
APT_ROOT=$MNIC_CACHE/apt
apt_opts() {
	echo "-o Dir=$APT_ROOT -o Dir::State::status=$APT_ROOT/var/lib/dpkg/status" \
	     "-o Dir::Etc=$APT_ROOT/etc/apt -o Dir::Etc::SourceList=$APT_ROOT/etc/apt/sources.list" \
	     "-o Dir::Etc::SourceParts=$APT_ROOT/etc/apt/sources.list.d" \
	     "-o Dir::Etc::Preferences=$APT_ROOT/etc/apt/preferences" \
	     "-o Dir::Etc::PreferencesParts=$APT_ROOT/etc/apt/preferences.d" \
	     "-o Dir::Etc::Parts=$APT_ROOT/etc/apt/apt.conf.d -o APT::Architecture=amd64" \
	     "-o Debug::NoLocking=1 -o APT::Sandbox::User=root"
}
private_apt_ready=
private_apt() {
	[ -n "$private_apt_ready" ] && return 0
	mkdir -p "$APT_ROOT"/etc/apt/{sources.list.d,preferences.d,apt.conf.d} \
		"$APT_ROOT"/var/lib/apt/lists/partial "$APT_ROOT"/var/cache/apt/archives/partial \
		"$APT_ROOT"/var/lib/dpkg
	: >"$APT_ROOT/var/lib/dpkg/status"
	cat >"$APT_ROOT/etc/apt/sources.list" <<-EOF
	deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
	deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
	EOF
	log "refreshing the private trixie apt lists"
	# shellcheck disable=SC2046
	apt-get $(apt_opts) update -qq || die "private apt update (trixie) failed: is deb.debian.org reachable?"
	private_apt_ready=1
}
# Newest version of $1 served by the private state whose version matches the grep pattern $2.
served_version() {
	# shellcheck disable=SC2046
	apt-cache $(apt_opts) madison "$1" | awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep -E "$2" | sort -V | tail -n1
}
# Download $1=$2 and its dependency closure (empty status => everything) and unpack into $3.
fetch_unpack() {
	local pkg=$1 ver=$2 prefix=$3 target=${4:-}
	local dl; dl=$(mktemp -d "$MNIC_CACHE/dl.XXXXXX")
	# shellcheck disable=SC2046
	(cd "$dl" && apt-get $(apt_opts) -o Dir::Cache::archives="$dl" ${target:+-t $target} \
		install --download-only -y -qq "$pkg=$ver" >/dev/null) || { rm -rf "$dl"; die "download of $pkg=$ver failed"; }
	rm -rf "$prefix.tmp" && mkdir -p "$prefix.tmp"
	for d in "$dl"/*.deb; do dpkg -x "$d" "$prefix.tmp"; done
	rm -rf "$dl" "$prefix" && mv "$prefix.tmp" "$prefix"
}

# ---------------------------------------------------------------- QEMU >= 10.1 (vfio-user-pci)
setup_qemu() {
	[ -x "$QEMU_PREFIX/usr/bin/qemu-system-x86_64" ] && [ -f "$QEMU_PREFIX/.ok" ] && return 0
	private_apt
	local ver; ver=$(served_version qemu-system-x86 "^1:(1[1-9]|10\.[1-9])")
	[ -n "$ver" ] || die "no qemu-system-x86 >= 10.1 is served by trixie(-backports)"
	case "$ver" in 1:$QEMU_SERIES*) ;; *) log "QEMU $QEMU_SERIES is no longer served; using $ver";; esac
	log "fetching qemu-system-x86 $ver into $QEMU_PREFIX"
	fetch_unpack qemu-system-x86 "$ver" "$QEMU_PREFIX" trixie-backports
	"$here/scripts/qemu" --version >/dev/null || die "the private QEMU does not run"
	"$here/scripts/qemu" -device help 2>/dev/null | grep -q vfio-user-pci \
		|| die "QEMU $ver has no vfio-user-pci device"
	echo "$ver" >"$QEMU_PREFIX/.ok"
}

# ---------------------------------------------------------------- rust-src matching rustc
setup_rustsrc() {
	[ -d "$RUST_LIB_SRC/core" ] && return 0
	private_apt
	local ver; ver=$(served_version rust-src "^${RUSTC_VERSION//./\\.}\+")
	[ -n "$ver" ] || die "no rust-src $RUSTC_VERSION is served by trixie-backports (rustc is $RUSTC_VERSION)"
	log "fetching rust-src $ver"
	# rust-src is arch:all with no dependencies we want: download just it.
	local dl; dl=$(mktemp -d "$MNIC_CACHE/dl.XXXXXX")
	# shellcheck disable=SC2046
	(cd "$dl" && apt-get $(apt_opts) download -qq "rust-src=$ver") || die "download of rust-src=$ver failed"
	rm -rf "$RUSTSRC_PREFIX" && mkdir -p "$RUSTSRC_PREFIX"
	dpkg -x "$dl"/rust-src_*.deb "$RUSTSRC_PREFIX"; rm -rf "$dl"
	[ -d "$RUST_LIB_SRC/core" ] || die "rust-src $ver did not provide $RUST_LIB_SRC"
}

# ---------------------------------------------------------------- bindgen-cli
setup_bindgen() {
	[ -x "$BINDGEN_PREFIX/bin/bindgen" ] && return 0
	log "building bindgen-cli $BINDGEN_VERSION (about a minute)"
	LIBCLANG_PATH=/usr/lib/llvm-19/lib cargo install -q --locked bindgen-cli --version "$BINDGEN_VERSION" \
		--root "$BINDGEN_PREFIX" || die "cargo install bindgen-cli $BINDGEN_VERSION failed"
}

# ---------------------------------------------------------------- kernel source + build
setup_kernel_source() {
	[ -f "$KSRC/.mnic-extracted" ] && return 0
	private_apt
	local ver=$KERNEL_DEB_VERSION
	if ! served_version "linux-source-$KERNEL_SERIES" . | grep -qxF "$ver"; then
		die "linux-source-$KERNEL_SERIES $KERNEL_DEB_VERSION is no longer served; set KERNEL_DEB_VERSION in scripts/env.sh to one of: $(served_version "linux-source-$KERNEL_SERIES" . )"
	fi
	log "fetching linux-source-$KERNEL_SERIES $ver"
	local dl; dl=$(mktemp -d "$MNIC_CACHE/dl.XXXXXX")
	# shellcheck disable=SC2046
	(cd "$dl" && apt-get $(apt_opts) download -qq "linux-source-$KERNEL_SERIES=$ver") || die "download failed"
	dpkg -x "$dl"/linux-source-*.deb "$dl/x"
	rm -rf "$KSRC" && mkdir -p "$(dirname "$KSRC")"
	log "unpacking the kernel source"
	tar -C "$dl" -xJf "$dl/x/usr/src/linux-source-$KERNEL_SERIES.tar.xz"
	mv "$dl/linux-source-$KERNEL_SERIES" "$KSRC"; rm -rf "$dl"
	touch "$KSRC/.mnic-extracted"
}

# Bring the tree's applied patch series in line with images/patches/: the series that is
# applied is recorded in $KSRC/.mnic-patches/; a changed series is reversed and the new one
# applied, so the kernel build stays incremental while the patches are being written.
sync_patches() {
	local applied=$KSRC/.mnic-patches want=$here/images/patches
	if diff -rq "$applied" "$want" >/dev/null 2>&1; then return 0; fi
	if [ -d "$applied" ]; then
		for p in $(ls "$applied"/*.patch 2>/dev/null | sort -r); do
			log "reverting $(basename "$p")"
			patch -s -R -p1 -d "$KSRC" <"$p" || die "could not revert $(basename "$p"); remove $KSRC to start over"
		done
		rm -rf "$applied"
	fi
	mkdir -p "$applied.new"
	for p in $(ls "$want"/*.patch 2>/dev/null | sort); do
		log "applying $(basename "$p")"
		if ! patch -s -p1 -d "$KSRC" --dry-run <"$p" >/dev/null; then
			# Undo what this run applied so the tree is clean again.
			for q in $(ls "$applied.new"/*.patch 2>/dev/null | sort -r); do patch -s -R -p1 -d "$KSRC" <"$q"; done
			rm -rf "$applied.new"
			die "patch $(basename "$p") does not apply to linux $KERNEL_DEB_VERSION"
		fi
		patch -s -p1 -d "$KSRC" <"$p"
		cp "$p" "$applied.new/"
	done
	mv "$applied.new" "$applied"
}

# The config fragments of this flavor, in merge order.
config_fragments() {
	echo "$here/images/kernel.config"
	[ "$KERNEL_FLAVOR" = debug ] && echo "$here/images/kernel-debug.config"
	return 0
}

kernel_inputs_hash() {
	{ cat $(config_fragments) "$here"/images/patches/*.patch 2>/dev/null
	  echo "$KERNEL_DEB_VERSION $RUSTC_VERSION $(clang-19 --version | head -n1) $BINDGEN_VERSION"
	} | sha256sum | cut -c1-16
}

setup_kernel() {
	setup_kernel_source
	local key; key=$(kernel_inputs_hash)
	if [ -f "$KBUILD/.mnic-built" ] && [ "$(cat "$KBUILD/.mnic-built")" = "$key" ]; then return 0; fi
	sync_patches
	mkdir -p "$KBUILD"
	local frag_key; frag_key=$(cat $(config_fragments) | sha256sum | cut -c1-16)
	if [ ! -f "$KBUILD/.config" ] || [ "$(cat "$KBUILD/.mnic-config" 2>/dev/null)" != "$frag_key" ]; then
		log "configuring the $KERNEL_FLAVOR kernel (tinyconfig + $(config_fragments | xargs -n1 basename | tr '\n' ' '))"
		kmake tinyconfig >/dev/null
		"$KSRC/scripts/kconfig/merge_config.sh" -m -O "$KBUILD" "$KBUILD/.config" $(config_fragments) >/dev/null
		kmake olddefconfig >/dev/null
		# Every fragment line must have survived olddefconfig, or a dependency is missing.
		local bad=0
		while IFS= read -r line; do
			case "$line" in
			*=n) grep -qx "# ${line%=n} is not set" "$KBUILD/.config" || { log "config lost: $line"; bad=1; };;
			CONFIG_*=*) grep -qx "$line" "$KBUILD/.config" || { log "config lost: $line"; bad=1; };;
			esac
		done < <(cat $(config_fragments))
		[ $bad -eq 0 ] || die "the config fragments ask for options the kernel did not keep (see above)"
		echo "$frag_key" >"$KBUILD/.mnic-config"
	fi
	kmake rustavailable >/dev/null || die "Rust is not available to the kernel build (kmake rustavailable)"
	log "building the kernel (first time about 5 minutes on 2 cores; log: $KBUILD/build.log)"
	if ! kmake -j"$(nproc)" bzImage modules >"$KBUILD/build.log" 2>&1; then
		grep -E 'error|Error' "$KBUILD/build.log" | head -n 30 >&2
		die "kernel build failed; see $KBUILD/build.log"
	fi
	echo "$key" >"$KBUILD/.mnic-built"
}

what=${1:-all}
mkdir -p "$MNIC_CACHE"
case "$what" in
	host) setup_host ;;
	qemu) setup_qemu ;;
	rustsrc) setup_rustsrc ;;
	bindgen) setup_host; setup_bindgen ;;
	kernel) setup_host; setup_rustsrc; setup_bindgen; setup_kernel ;;
	all) setup_host; setup_qemu; setup_rustsrc; setup_bindgen; setup_kernel ;;
	*) die "unknown set-up step '$what'" ;;
esac
