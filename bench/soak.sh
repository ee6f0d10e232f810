#!/usr/bin/env bash
# Soak: pushes TOTAL requests (default 1,000,000) through `lbx balance` over three `lbx serve`
# backends in rounds, printing the balancer's RSS and open descriptors after each round, so a
# leak shows as a rising line. Loopback only; bounded by TOTAL.
# Usage: bench/soak.sh [path/to/lbx]        (env: TOTAL, ROUND, C)
set -u
LBX=${1:-target/release/lbx}; TOTAL=${TOTAL:-1000000}; ROUND=${ROUND:-100000}; C=${C:-64}
[ -x "$LBX" ] || { echo "no lbx binary at $LBX: cargo build --release" >&2; exit 2; }
W=$(mktemp -d); PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; rm -rf "$W"' EXIT
for id in 1 2 3; do
  "$LBX" serve -p 0 --id $id --workers 1 >"$W/serve$id.out" 2>&1 & PIDS+=($!)
done
for _ in $(seq 50); do [ "$(cat "$W"/serve*.out | grep -c listening)" -ge 3 ] && break; sleep 0.1; done
BACKENDS=$(cat "$W"/serve*.out | awk '/listening on/ {print $3}' | paste -sd,)
[ -n "$BACKENDS" ] || { echo "backends did not start" >&2; cat "$W"/serve*.out >&2; exit 1; }
"$LBX" balance --host 127.0.0.1 -p 0 -b "$BACKENDS" --workers 1 >"$W/lb.out" 2>&1 & LB=$!; PIDS+=($LB)
for _ in $(seq 50); do grep -q listening "$W/lb.out" && break; sleep 0.1; done
ADDR=$(awk '/^listening on/ {print $3; exit}' "$W/lb.out")
[ -n "$ADDR" ] || { echo "balancer did not start" >&2; cat "$W/lb.out" >&2; exit 1; }
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$LB/status"; }
fds() { ls "/proc/$LB/fd" | wc -l; }
echo "soak: $TOTAL requests through lbx balance at $ADDR over $BACKENDS, $C connections, rounds of $ROUND"
printf "%10s %10s %8s %6s %10s\n" "sent" "failed" "RSS MB" "fds" "req/s"
printf "%10s %10s %8s %6s %10s\n" 0 0 "$(rss)" "$(fds)" "-"
sent=0; failed=0
while [ $sent -lt "$TOTAL" ]; do
  n=$(( TOTAL - sent < ROUND ? TOTAL - sent : ROUND ))
  json=$("$LBX" bench -n "$n" -c "$C" --threads 1 --no-progress --json "http://$ADDR/")
  read -r ok rps < <(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["summary"]["successes"], d["summary"]["requests_per_sec"])' <<<"$json")
  sent=$(( sent + n )); failed=$(( failed + n - ok ))
  printf "%10s %10s %8s %6s %10.0f\n" $sent $failed "$(rss)" "$(fds)" "$rps"
done
