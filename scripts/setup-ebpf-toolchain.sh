#!/usr/bin/env bash
# Installs what rebuilding the eBPF object needs on a fresh Debian 12 machine:
# LLVM 22 development files, nightly rust-src and bpf-linker 0.13 built against LLVM 22.
# Every step is skipped when already done. Users who only run Chronicle need none of this:
# the built eBPF object ships in chronicle-agent/bpf/.
set -euo pipefail

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
for pkg in llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev libxml2-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    log "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi

if ! bpf-linker --version 2>/dev/null | grep -q ' 0\.13\.'; then
    log "building bpf-linker 0.13.0 against LLVM 22 (about a minute)"
    PATH=/usr/lib/llvm-22/bin:$PATH LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
        cargo install bpf-linker --locked --version 0.13.0 --no-default-features --features llvm-22
fi
log "eBPF toolchain ready: $(bpf-linker --version)"
