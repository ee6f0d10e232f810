#!/usr/bin/env bash
# Reproduces the README's performance table on this machine, all in one run so the ratios hold
# on a noisy box: req/s, p50 and p99 (wrk -t1 -c$C, or lbx bench) direct to a backend, through
# nginx, HAProxy and `lbx balance`, each proxy with one worker; `lbx serve` against nginx `return 200`; and the
# RSS of each proxy holding $IDLE idle keep-alive client connections, and $IDLE_TLS over TLS.
# nginx and HAProxy run twice: as configured out of the box (no forwarding headers), and with
# the header work lbx does by default (X-Forwarded-For, -Proto and -Host and a request id on
# the way in, the request id on the way out), which costs them and their backend CPU.
# With ROUNDS=n the load runs n times, the targets taking turns, and each figure is the median
# over the rounds; "lbx / best" is, per round, lbx's req/s over the better of nginx's and
# HAProxy's in that round (as configured out of the box), then the median of those.
# LOAD=lbx drives the load with `lbx bench --threads 1` instead of `wrk -t1` (on this machine lbx
# bench keeps up with wrk: see the README), so wrk is not needed.
# PIN=1 gives each measured server a core of its own: during its run the server (all its threads)
# is pinned to CPU 0, and the load generator and the nginx backends to CPU 1, so the server's own
# cost per request sets the rate instead of how the scheduler happens to share two cores among
# three busy processes. Needs 2 cores or more; everything is unpinned again after each run.
# Usage: bench/perf.sh [path/to/lbx]     (env: D=seconds C=connections ROUNDS=n LOAD=wrk|lbx PIN=0|1 IDLE=connections IDLE_TLS=connections)
# Needs: apt-get install -y nginx haproxy wrk python3 openssl   (wrk only with LOAD=wrk)
set -u
LBX=${1:-target/release/lbx}; D=${D:-5}; C=${C:-64}; ROUNDS=${ROUNDS:-1}; IDLE=${IDLE:-10000}; IDLE_TLS=${IDLE_TLS:-2000}
LOAD=${LOAD:-wrk}; PIN=${PIN:-0}
case $PIN in 0) ;; 1) [ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs 2 cores or more, this machine has $(nproc)" >&2; exit 2; } ;; *) echo "PIN must be 0 or 1, not $PIN" >&2; exit 2 ;; esac
case $LOAD in wrk) TOOLS="nginx haproxy wrk python3 openssl" ;; lbx) TOOLS="nginx haproxy python3 openssl" ;; *) echo "LOAD must be wrk or lbx, not $LOAD" >&2; exit 2 ;; esac
for t in $TOOLS; do command -v $t >/dev/null || { echo "missing $t: apt-get install -y $TOOLS" >&2; exit 2; }; done
[ -x "$LBX" ] || { echo "no lbx binary at $LBX: cargo build --release" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; for f in "$W"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

cat > "$W/backends.conf" <<CONF
worker_processes 1; pid $W/backends.pid; error_log $W/backends.err; daemon on;
events { worker_connections 32768; }
http { access_log off;
  server { listen 127.0.0.1:9201; location / { add_header x-server-id 1; return 200 "server 1\n"; } }
  server { listen 127.0.0.1:9202; location / { add_header x-server-id 2; return 200 "server 2\n"; } }
  server { listen 127.0.0.1:9203; location / { add_header x-server-id 3; return 200 "server 3\n"; } } }
CONF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" > "$W/haproxy.pem"
cat > "$W/nginx-lb.conf" <<CONF
worker_processes 1; pid $W/nginx-lb.pid; error_log $W/nginx-lb.err; daemon on; worker_rlimit_nofile 65536;
events { worker_connections 32768; }
http { access_log off; keepalive_timeout 300s; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:9201; server 127.0.0.1:9202; server 127.0.0.1:9203; keepalive 64; }
  server { listen 127.0.0.1:9281; listen 127.0.0.1:9291 ssl; ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:9286;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$http_host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$http_host;
      proxy_set_header X-Request-ID \$request_id; add_header X-Request-ID \$request_id; } } }
CONF
cat > "$W/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9990
  pidfile $W/haproxy.pid
  daemon
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:9282
  bind 127.0.0.1:9292 ssl crt $W/haproxy.pem alpn http/1.1
  default_backend be
frontend fe_headers
  bind 127.0.0.1:9287
  option forwardfor
  unique-id-format %{+X}o\\ %ci%cp%fi%fp%Ts%rt%pid
  unique-id-header x-request-id
  http-request set-header x-forwarded-proto http
  http-request set-header x-forwarded-host %[req.hdr(host)]
  http-after-response set-header x-request-id %[unique-id]
  default_backend be
backend be
  balance roundrobin
  option httpchk GET /
  server s1 127.0.0.1:9201 check inter 2s
  server s2 127.0.0.1:9202 check inter 2s
  server s3 127.0.0.1:9203 check inter 2s
CONF
cat > "$W/nginx-200.conf" <<CONF
worker_processes 1; pid $W/nginx-200.pid; error_log $W/nginx-200.err; daemon on;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; server { listen 127.0.0.1:9284; location / { return 200 "ok\n"; } } }
CONF
nginx -c "$W/backends.conf" -p "$W" 2>/dev/null
nginx -c "$W/nginx-lb.conf" -p "$W" 2>/dev/null
nginx -c "$W/nginx-200.conf" -p "$W" 2>/dev/null
haproxy -f "$W/haproxy.cfg" 2>/dev/null
"$LBX" balance --host 127.0.0.1 -p 9283 -b :9201,:9202,:9203 --health-path / --workers 1 >"$W/lbx.log" 2>&1 & PIDS+=($!); LBXPID=$!
"$LBX" balance --host 127.0.0.1 -p 9293 -b :9201,:9202,:9203 --health-path / --workers 1 \
  --tls-cert "$W/cert.pem" --tls-key "$W/key.pem" >"$W/lbx-tls.log" 2>&1 & PIDS+=($!); LBXTLSPID=$!
"$LBX" serve -p 9285 --workers 1 >/dev/null 2>&1 & PIDS+=($!); SERVEPID=$!
sleep 1

rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
nginx_worker() { pgrep -P "$(cat "$W/$1.pid")" | head -1; }
TCK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ALL_CPUS="0-$(($(nproc) - 1))"
# With PIN=1: the server process $1 on CPU 0 and the backends on CPU 1 (a direct run leaves the
# backend on CPU 0: it is the server measured); `on` runs the load on CPU 1.
pin() { [ "$PIN" = 1 ] || return 0; taskset -apc 1 "$(nginx_worker backends)" >/dev/null; taskset -apc 0 "$1" >/dev/null; }
unpin() { [ "$PIN" = 1 ] || return 0; taskset -apc "$ALL_CPUS" "$1" >/dev/null; taskset -apc "$ALL_CPUS" "$(nginx_worker backends)" >/dev/null; }
on() { if [ "$PIN" = 1 ]; then taskset -c 1 "$@"; else "$@"; fi; }
run() {
  pin "$2"
  run_pinned "$@"
  unpin "$2"
}
# req/s, p50 and p99 (ms) of a load run against URL $1, and the CPU time (user + system) the
# server process $2 spent per request meanwhile: the steadier figure on a shared machine.
run_pinned() {
  local t0 out t1
  t0=$(ticks "$2")
  if [ "$LOAD" = lbx ]; then
    out=$(on "$LBX" bench -z "${D}s" -c "$C" --threads 1 --json --no-progress "$1" 2>/dev/null)
    t1=$(ticks "$2")
    python3 -c '
import json, sys
t, hz = int(sys.argv[1]), int(sys.argv[2])
try:
    d = json.loads(sys.stdin.read())
    n, r = d["summary"]["requests"], d["summary"]["requests_per_sec"]
    p50, p99 = d["latency_ms"]["p50"], d["latency_ms"]["p99"]
except (ValueError, KeyError, TypeError):
    n, r, p50, p99 = 0, 0, 0, 0
print("%.0f %.3f %.3f %.2f" % (r, p50, p99, t * 1e6 / hz / n if n else 0))' "$((t1 - t0))" "$TCK" <<<"$out"
    return
  fi
  out=$(on wrk -t1 -c"$C" -d"${D}s" --latency "$1" 2>/dev/null)
  t1=$(ticks "$2")
  awk -v t="$((t1 - t0))" -v hz="$TCK" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /requests in/ {n=$1} /Requests\/sec/ {r=$2} / 50%/ {p50=ms($2)} / 99%/ {p99=ms($2)}
    END {printf "%.0f %.3f %.3f %.2f\n", r, p50, p99, (n > 0 ? t * 1000000 / hz / n : 0)}' <<<"$out"
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.10g\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | xargs), $(uname -r)"
LOADER=$([ "$LOAD" = lbx ] && echo "lbx bench --threads 1 -c$C -z ${D}s" || echo "wrk -t1 -c$C -d${D}s")
echo "load: $LOADER on loopback; every proxy and server with one worker; $ROUNDS round(s), medians"
[ "$PIN" = 1 ] && echo "pinned: the measured server on CPU 0, the load and the backends on CPU 1"
echo
NAMES=("direct (nginx backend)" "nginx proxy" "haproxy" "lbx balance" "nginx, lbx's headers" "haproxy, lbx's headers" "" "nginx return 200" "lbx serve")
URLS=(9201 9281 9282 9283 9286 9287 "" 9284 9285)
PROCS=("$(nginx_worker backends)" "$(nginx_worker nginx-lb)" "$(cat "$W/haproxy.pid")" $LBXPID "$(nginx_worker nginx-lb)" "$(cat "$W/haproxy.pid")" "" "$(nginx_worker nginx-200)" $SERVEPID)
for ((r = 1; r <= ROUNDS; r++)); do
  for i in "${!NAMES[@]}"; do
    [ -n "${URLS[$i]}" ] && run "http://127.0.0.1:${URLS[$i]}/" "${PROCS[$i]}" >>"$W/row$i"
  done
  # lbx against the better of nginx and HAProxy, this round.
  paste -d' ' <(tail -1 "$W/row1") <(tail -1 "$W/row2") <(tail -1 "$W/row3") |
    awk '{best = ($1 > $5 ? $1 : $5); print (best > 0 ? $9 / best : 0)}' >>"$W/ratio"
done
col() { awk -v c="$1" '{print $c}' "$2" | median; }
printf "%-22s %10s %9s %9s %9s %9s\n" "" "req/s" "p50 ms" "p99 ms" "CPU us/r" "RSS MB"
for i in "${!NAMES[@]}"; do
  if [ -z "${URLS[$i]}" ]; then echo; continue; fi
  rss_now=$(if [ "$i" = 0 ]; then echo -; else rss "${PROCS[$i]}"; fi)
  printf "%-22s %10.0f %9.3f %9.3f %9.2f %9s\n" "${NAMES[$i]}" "$(col 1 "$W/row$i")" "$(col 2 "$W/row$i")" "$(col 3 "$W/row$i")" "$(col 4 "$W/row$i")" "$rss_now"
done
echo "(CPU us/r: user + system time of the server process per request during its run)"
echo "lbx / best of nginx and haproxy, per round: $(xargs printf '%.3f ' <"$W/ratio")(median $(median <"$W/ratio" | xargs printf '%.3f'))"

# RSS of each proxy before and while holding idle connections: "name:port:pid:count" ... [tls]
hold_idle() {
  local proto=$1; shift
  for target in "$@"; do
    IFS=: read -r name port pid n <<<"$target"
    before=$(rss "$pid")
    python3 "$HERE/idle-conns.py" "$n" 127.0.0.1 "$port" $proto >"$W/idle.out" 2>&1 & holder=$!
    for _ in $(seq 1 240); do grep -q '^ready ' "$W/idle.out" && break; kill -0 $holder 2>/dev/null || break; sleep 0.5; done
    if grep -q '^ready ' "$W/idle.out"; then sleep 1; printf "  %-14s %6s -> %6s  (%s connections)\n" "$name" "$before" "$(rss "$pid")" "$n"; else printf "  %-14s failed: %s\n" "$name" "$(tail -1 "$W/idle.out")"; fi
    kill $holder 2>/dev/null; wait $holder 2>/dev/null; sleep 1
  done
}

if [ "$IDLE" -gt 0 ]; then
  echo
  echo "RSS with $IDLE idle keep-alive client connections (MB, before -> holding)"
  # HAProxy reserves two descriptors per connection: with this machine's hard limit of
  # $(ulimit -Hn) descriptors its maxconn tops out at 9990, so it holds at most 9900 here.
  hold_idle "" "nginx proxy:9281:$(nginx_worker nginx-lb):$IDLE" "haproxy:9282:$(cat "$W/haproxy.pid"):$((IDLE < 9900 ? IDLE : 9900))" "lbx balance:9283:$LBXPID:$IDLE"
fi
if [ "$IDLE_TLS" -gt 0 ]; then
  echo
  echo "RSS with $IDLE_TLS idle keep-alive TLS client connections (MB, before -> holding)"
  hold_idle tls "nginx proxy:9291:$(nginx_worker nginx-lb):$IDLE_TLS" "haproxy:9292:$(cat "$W/haproxy.pid"):$IDLE_TLS" "lbx balance:9293:$LBXTLSPID:$IDLE_TLS"
fi
