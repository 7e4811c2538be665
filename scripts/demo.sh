#!/usr/bin/env bash
# Chronicle demo: build, start the sample C service, attach to it by pid for a few seconds,
# then show what was captured. Needs root for the eBPF part (it re-runs itself with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "the demo attaches eBPF probes, which needs root: re-running with sudo" >&2
    exec sudo -E env "PATH=$PATH" "$0" "$@"
fi

work=$(mktemp -d)
trap 'kill "${service_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

echo "==> building chronicle (stable Rust; the eBPF object ships prebuilt)"
cargo build --quiet --release -p chronicle-cli
chronicle=target/release/chronicle

echo "==> building and starting the sample service (tests/fixtures/bank.c)"
cc -g -O2 -pthread -o "$work/bank" tests/fixtures/bank.c
"$work/bank" --interval-ms 500 > "$work/bank.out" &
service_pid=$!
sleep 0.3
echo "    bank service running as pid $service_pid"

echo "==> sudo chronicle attach --pid $service_pid --func transfer --func factorial --func classify --duration 3 --print"
"$chronicle" attach --pid "$service_pid" --func transfer --func factorial --func classify \
    --duration 3 --print --db "$work/chronicle.db"

echo
echo "==> chronicle functions"
"$chronicle" functions --db "$work/chronicle.db"

echo
echo "==> chronicle export transfer (first record)"
"$chronicle" export transfer -o - --db "$work/chronicle.db" --limit 1
