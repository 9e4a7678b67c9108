# mnic: the two commands a newcomer needs are `make demo` and `make test`.
# Both run the (idempotent, cached) set-up first. See README.md.

SHELL := /bin/bash
.DEFAULT_GOAL := help

ENV        := source scripts/env.sh
KBUILD     := $(shell $(ENV) && echo $$KBUILD)
KERNEL     := $(KBUILD)/arch/x86/boot/bzImage
GUEST_TARGET := x86_64-unknown-linux-gnu
GUEST_DIR  := target/guest/$(GUEST_TARGET)/release
# MNIC_KERNEL_FLAVOR=debug: the lockdep/DEBUG_VM/kmemleak kernel (images/kernel-debug.config),
# its own build directory and image directory (see scripts/env.sh).
export MNIC_KERNEL_FLAVOR
IMAGES     := target/images$(if $(filter debug,$(MNIC_KERNEL_FLAVOR)),-debug)
INITRD     := $(IMAGES)/initramfs.cpio
DEVICE_BIN := target/release/mnic-device
VMRUN      := target/release/mnic-vm
# Static guest programs: glibc static (no musl target can be installed here).
GUEST_RUSTFLAGS := -C target-feature=+crt-static
CARGO_JOBS ?=
VM_ARGS    ?=
RUN        := $(VMRUN) run --kernel $(KERNEL) --initrd $(INITRD) --device-bin $(DEVICE_BIN) $(VM_ARGS)

# Out-of-tree kernel modules (each directory has a Kbuild file).
MODULE_DIRS := images/smoke $(patsubst %/Kbuild,%,$(wildcard driver/Kbuild tests/kmod/*/Kbuild))

.PHONY: help setup host-bins guest-bins modules initramfs image vm proto run-guest demo demo-fabric test \
        test-host test-guest lint bench soak soak-debug clean

help:
	@echo "make demo   - set up, build, boot the guest with the mnic device and run the demo"
	@echo "make demo-fabric - only the demo's second part: two guests on one fabric"
	@echo "make test   - set up, build and run every test (host unit/integration + guest)"
	@echo "make vm     - a shell in the guest (driver and tools inside)"
	@echo "make proto  - a shell in a guest with an IOMMU, the NIC bound to vfio-pci for mnic-proto"
	@echo "make run-guest GUEST_CMD='...'  - run one command in the guest"
	@echo "make bench  - performance runs (host and guest), report in results/"
	@echo "make soak   - the long variants of the guest tests (tests/soak.txt)"
	@echo "make soak-debug - the soak on the lockdep/DEBUG_VM/kmemleak kernel"
	@echo "make setup  - only the set-up (packages, QEMU, rust-src, bindgen, kernel)"

setup:
	scripts/setup.sh all

host-bins:
	cargo build --release $(CARGO_JOBS) -p mnic-device -p mnic-vmrun

guest-bins:
	RUSTFLAGS="$(GUEST_RUSTFLAGS)" cargo build --release $(CARGO_JOBS) --target $(GUEST_TARGET) \
		--target-dir target/guest --workspace --exclude mnic-device --exclude mnic-vmrun \
		--exclude mnic-tests --bins --examples

modules: setup
	@for d in $(MODULE_DIRS); do \
		echo "  KMOD    $$d"; \
		scripts/kmake M=$(CURDIR)/$$d modules >$$d/build.log 2>&1 || { cat $$d/build.log; exit 1; }; \
	done

# The base initramfs: busybox, /init, every module, every static guest program, the scripts.
image: initramfs
initramfs: host-bins guest-bins modules
	@mkdir -p $(IMAGES)
	@files=(); \
	for ko in $$(find $(MODULE_DIRS) -maxdepth 1 -name '*.ko'); do files+=(--file "$$ko:/lib/modules/$$(basename $$ko)"); done; \
	for b in $$(find $(GUEST_DIR) $(GUEST_DIR)/examples -maxdepth 1 -type f -perm -u+x ! -name '*.*' ! -regex '.*-[0-9a-f]\{16\}' 2>/dev/null); do \
		files+=(--file "$$b:/usr/bin/$$(basename $$b)"); done; \
	for s in images/guest/*.sh; do files+=(--file "$$s:/usr/share/mnic/$$(basename $$s):755"); done; \
	$(VMRUN) initramfs --out $(INITRD) --init images/init.sh "$${files[@]}"
	@echo "  IMAGE   $(INITRD) ($$(du -h $(INITRD) | cut -f1))"

vm: initramfs
	$(RUN) --interactive

# The prototyping driver's shell (docs/prototyping.md): the NIC behind the emulated IOMMU,
# handed to vfio-pci before the shell starts; `mnic-proto selftest`, `mnic-proto info`.
proto: initramfs
	$(RUN) --iommu --interactive --cmd 'mnic-proto bind'

GUEST_CMD ?= true
run-guest: initramfs
	$(RUN) --cmd '$(GUEST_CMD)'

# The demo: one guest (images/guest/demo.sh), then two guests with one NIC each, nodes 1 and
# 2 of one fabric, joined by a serial link (demo.sh fabric-client / fabric-server): a
# ping-pong between them and a PUT stream into guest 2's memory while guest 2 pages it out.
DEMO_FABRIC = $(RUN) --fabric --stats --timeout 600 \
	--cmd 'sh /usr/share/mnic/demo.sh fabric-client' \
	--peer-cmd 'sh /usr/share/mnic/demo.sh fabric-server'

demo: initramfs
	$(RUN) --stats --timeout 900 --cmd 'sh /usr/share/mnic/demo.sh'
	$(DEMO_FABRIC)

demo-fabric: initramfs
	$(DEMO_FABRIC)

# Roots of the out-of-tree kernel crates: rustfmt follows their `mod`s. The kernel's own
# settings (its .rustfmt.toml): edition 2021, defaults otherwise.
KMOD_ROOTS := images/smoke/mnic_smoke.rs driver/mnic_main.rs tests/kmod/mm_mirror_test/mm_mirror_test.rs

lint:
	cargo fmt --all -- --check
	rustfmt --edition 2021 --check $(KMOD_ROOTS)
	cargo clippy --workspace --all-targets $(CARGO_JOBS) -- -D warnings
	cargo run -q -p mnic-modcycles $(CARGO_JOBS) -- $(KMOD_ROOTS)

# Run records (docs/testing.md, "Results"): host.json, guest.json, soak.json, soak-debug.json;
# test-report turns them into the generated blocks of docs/testing.md.
RESULTS    := target/mnic-test-results
FLAVOR_SUFFIX := $(if $(filter debug,$(MNIC_KERNEL_FLAVOR)),-debug)
REPORT     := cargo run --quiet --release $(CARGO_JOBS) -p mnic-tests --bin test-report --

# The host tests. Their output is kept in $(RESULTS)/host.log and counted into host.json;
# the target fails if the tests fail (pipefail) or the record cannot be written.
test-host:
	@mkdir -p $(RESULTS)
	set -o pipefail; start=$$(date +%s); \
	{ cargo test --workspace --exclude mnic-tests $(CARGO_JOBS) && \
	  cargo test -p mnic-tests --lib $(CARGO_JOBS); } 2>&1 | tee $(RESULTS)/host.log; \
	rc=$$?; \
	$(REPORT) host --log $(RESULTS)/host.log --exit-status $$rc \
		--seconds $$(( $$(date +%s) - start )) --out $(RESULTS)/host.json && exit $$rc

# The guest harness boots the VM(s) and turns every KTAP result into a cargo test result.
# It writes its run record to $(RESULTS)/guest.json (soak.json with MNIC_SOAK=1; -debug for
# the debug kernel; -partial when a filter left tests out).
test-guest: initramfs
	MNIC_KERNEL=$(KERNEL) MNIC_INITRD=$(CURDIR)/$(INITRD) MNIC_DEVICE_BIN=$(CURDIR)/$(DEVICE_BIN) \
	MNIC_VM=$(CURDIR)/$(VMRUN) MNIC_QEMU=$(CURDIR)/scripts/qemu \
		cargo test -p mnic-tests --release --test guest $(CARGO_JOBS) -- --test-threads 1

# After a complete, passing run: the generated block of docs/testing.md.
test: setup lint test-host test-guest
	$(REPORT) test-block --doc docs/testing.md --host $(RESULTS)/host.json \
		--guest $(RESULTS)/guest$(FLAVOR_SUFFIX).json

bench: initramfs
	scripts/bench.sh

# After a complete, passing soak: its generated block of docs/testing.md (soak or soak-debug).
soak: initramfs
	MNIC_SOAK=1 $(MAKE) test-guest
	$(REPORT) soak-block --doc docs/testing.md --target soak$(FLAVOR_SUFFIX) \
		--guest $(RESULTS)/soak$(FLAVOR_SUFFIX).json

# The soak on the debug kernel (lockdep, sleep-in-atomic, DEBUG_VM, kmemleak, page poisoning:
# booted with page_poison=1). The modules are rebuilt against it in place; the next normal
# build rebuilds them again.
soak-debug:
	MNIC_KERNEL_FLAVOR=debug MNIC_VM_APPEND=page_poison=1 $(MAKE) soak

clean:
	cargo clean
	@for d in $(MODULE_DIRS); do scripts/kmake M=$(CURDIR)/$$d clean >/dev/null 2>&1 || true; done
