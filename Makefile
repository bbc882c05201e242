# vmm — common tasks. `make help` lists them.

CARGO ?= cargo
OUT := guest-images/out
NETPROBE_DIR := guest-images/netprobe
NETPROBE_ELF := $(NETPROBE_DIR)/target/x86_64-unknown-linux-gnu/release/netprobe
VMM := target/release/vmm

.PHONY: help build netprobe test check demo linux-guest test-linux bench bench-linux fuzz soak clean

help:
	@echo "make demo         boot the netprobe guest on KVM and explain what happens (needs root, /dev/kvm)"
	@echo "make test         formatting, clippy, unit and integration tests (KVM tests need root), and"
	@echo "                  the nested-VMX Linux test when Bochs, QEMU and the Linux guest are there"
	@echo "make build        build the VMM and tapctl (target/release/vmm, target/release/tapctl)"
	@echo "make netprobe     build the test guest: $(OUT)/netprobe.elf and $(OUT)/netprobe.bzImage"
	@echo "make linux-guest  build the Linux guest: $(OUT)/bzImage and $(OUT)/initramfs.cpio.gz (~8 min, cached;"
	@echo "                  with iperf3 on the host also $(OUT)/initramfs-iperf3.cpio.gz)"
	@echo "make test-linux   boot the Linux guest under vmm on nested VMX KVM in Bochs, ping, compare counters (~6 min)"
	@echo "make bench        the device model on a real tap vs raw readv/writev, side by side (root)"
	@echo "make bench-linux  iperf3 in the Linux guest, vmm vs QEMU in the same nested boot (~6 min)"
	@echo "make fuzz         the three fuzz targets (cargo fuzz), FUZZ_SECONDS each (default 60); see fuzz/README.md"
	@echo "make soak         netprobe echoing random-size frames for SOAK_SECONDS (default 600): exact counters, flat RSS (root)"
	@echo "make clean        remove build outputs"

# vmm itself is linked statically against glibc (libc.a): no libc.so, ld.so and libgcc_s
# mappings, about 1 MiB less resident next to the guest's memory (make bench-linux counts it).
# `cargo rustc` gives the flag to the binary alone: proc-macros cannot be built crt-static.
build:
	$(CARGO) build --release -p vmm-tap
	$(CARGO) rustc --release -p vmm --bin vmm -- -C target-feature=+crt-static

# netprobe is freestanding and built without SSE (PVM's emulator cannot run it); rustc warns
# that the x86-64 float ABI wants SSE2, which netprobe never uses (it has no floats).
netprobe:
	@mkdir -p $(OUT)
	cd $(NETPROBE_DIR) && $(CARGO) build --release --quiet 2>&1 | grep -v -e 'sse2' -e 'phased out' -e '116344' -e '^ *|$$' -e 'generated 1 warning' -e '^$$' || true
	@test -f $(NETPROBE_ELF) || { echo "netprobe: build failed"; exit 1; }
	cp $(NETPROBE_ELF) $(OUT)/netprobe.elf
	$(CARGO) run --quiet --release -p mkbzimage -- $(OUT)/netprobe.elf $(OUT)/netprobe.bzImage
	@echo "netprobe: built $(OUT)/netprobe.elf and $(OUT)/netprobe.bzImage"

check:
	$(CARGO) fmt --all --check
	cd $(NETPROBE_DIR) && $(CARGO) fmt --check
	cd fuzz && $(CARGO) fmt --check
	cd $(NETPROBE_DIR) && $(CARGO) clippy --release --quiet 2>&1 | { ! grep -E "^error" -A8; }
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

# The integration tests run target/<profile>/vmm, so it is built first.
test: netprobe check
	$(CARGO) build --workspace --quiet
	$(CARGO) test --workspace
	@guest-images/nested/maybe-run.sh

demo: build netprobe
	@sh guest-images/demo.sh $(VMM)

linux-guest:
	guest-images/linux/build.sh

# The device on a real tap (in a network namespace of its own) against raw readv/writev of
# the same frames on the same tap; ratios device/raw on the last line. Not a test.
bench:
	$(CARGO) bench --quiet -p vmm-virtio-net --bench datapath

# libFuzzer on the device, the transport and the boot code; fails on any crash (fuzz/README.md).
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

# Both directions for SOAK_SECONDS, then guest == vmm == tap, no drops, flat RSS. Not a test.
SOAK_SECONDS ?= 600
# (cargo bench builds the soak with the release profile: it runs target/release/vmm.)
soak: build netprobe
	SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) bench --quiet -p vmm-integration-tests --bench soak

clean:
	$(CARGO) clean
	cd $(NETPROBE_DIR) && $(CARGO) clean
	rm -rf $(OUT)

# iperf3 in the Linux guest against the nested machine, under vmm and under QEMU in the same
# boot (a benchmark, not a test; needs iperf3 on the host for the guest image and the middle machine).
bench-linux: build
	@command -v iperf3 >/dev/null || { echo "bench-linux: apt-get install iperf3 first"; exit 1; }
	$(MAKE) linux-guest
	guest-images/nested/bench.sh

# The Linux guest under vmm on a real VMX KVM, nested in Bochs (~5-8 minutes; see README).
test-linux: build
	@# The kernel is cached; the initramfs is rebuilt when its init script changed.
	@if [ ! -f $(OUT)/bzImage ] || [ guest-images/linux/init -nt $(OUT)/initramfs.cpio.gz ]; then $(MAKE) linux-guest; fi
	guest-images/nested/run.sh
