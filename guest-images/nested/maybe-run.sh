#!/bin/sh
# Part of `make test`: the nested-VMX Linux-guest test (about 4-5 minutes) runs when its inputs
# are present — Bochs, QEMU and the Linux guest from `make linux-guest`. Elsewhere it says what
# is missing and skips; in CI (CI=true), where .ci/run installs them, missing inputs fail.
missing=""
command -v bochs-bin >/dev/null 2>&1 || missing="$missing bochs"
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
command -v syslinux >/dev/null 2>&1 || missing="$missing syslinux"
[ -f guest-images/out/bzImage ] || missing="$missing guest-images/out/bzImage(make linux-guest)"
if [ -n "$missing" ]; then
    if [ "${CI:-}" = true ]; then
        echo "test-linux: FAIL (setup): missing in CI:$missing" >&2
        exit 1
    fi
    echo "SKIPPED test-linux (Linux guest under vmm on nested VMX in Bochs): missing$missing; see README, 'Proving a Linux guest'"
    exit 0
fi
make -s build && guest-images/nested/run.sh
