
use builtin;
use str;

set edit:completion:arg-completer[lbx] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'lbx'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'lbx'= {
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run demo backends: GET / answers with the server id; fault knobs for demos and tests'
            cand balance 'Load-balance HTTP over backends, with health checks'
            cand check 'Probe backends'' health endpoints; exit 0 when all are healthy'
            cand bench 'Generate HTTP load and report latency percentiles and the spread over backends'
            cand demo 'Show lbx in one command: three backends, a balancer, load, a failure and a recovery'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lbx;serve'= {
            cand --id 'Server id reported by GET / and the x-server-id header; counts up over a port range'
            cand -p 'Port, or a range like 9001-9003 for one server per port; 0 picks a free port'
            cand --port 'Port, or a range like 9001-9003 for one server per port; 0 picks a free port'
            cand --host 'Address to listen on'
            cand --delay 'Delay added to every response, e.g. 20ms'
            cand --fail-rate 'Share of GET / requests answered 500, from 0 to 1'
            cand --workers 'Worker threads (default: available cores)'
            cand --tls-cert 'Serve HTTPS with this certificate chain (PEM); ALPN offers h2 and http/1.1'
            cand --tls-key 'Private key (PEM) of --tls-cert'
            cand --max-streams 'Concurrent HTTP/2 streams allowed per connection (SETTINGS_MAX_CONCURRENT_STREAMS)'
            cand --register 'Register each listener in etcd under this key prefix, e.g. etcd://127.0.0.1:2379/lbx/backends/, on a lease kept alive while running; the key is deleted at shutdown and expires with the lease if the process dies'
            cand --register-ttl 'Lease time-to-live for --register: how long a dead server stays registered'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lbx;balance'= {
            cand -b 'Backends, comma-separated or repeated: -b :9001,:9002 -b host:9003; `:9001=3` gives a weight (weighted and least-conn use it). h2c://HOST:PORT speaks HTTP/2 with prior knowledge, https:// HTTP/2 or HTTP/1.1 by ALPN. dns://NAME:PORT (A/AAAA) and srv://_http._tcp.NAME (SRV) are re-resolved every --dns-refresh; dns://h2c://NAME:PORT finds h2c backends'
            cand --backend 'Backends, comma-separated or repeated: -b :9001,:9002 -b host:9003; `:9001=3` gives a weight (weighted and least-conn use it). h2c://HOST:PORT speaks HTTP/2 with prior knowledge, https:// HTTP/2 or HTTP/1.1 by ALPN. dns://NAME:PORT (A/AAAA) and srv://_http._tcp.NAME (SRV) are re-resolved every --dns-refresh; dns://h2c://NAME:PORT finds h2c backends'
            cand -p 'Port to listen on; 0 picks a free port'
            cand --port 'Port to listen on; 0 picks a free port'
            cand --host 'Address to listen on'
            cand --interval 'Time between health checks'
            cand --timeout 'Health check timeout'
            cand --health-path 'Health check path'
            cand --rise 'Successful checks in a row before a down backend takes traffic again'
            cand --fall 'Failed checks in a row before a backend is taken out'
            cand --connect-timeout 'Time to connect to a backend'
            cand --grace 'At shutdown, how long in-flight requests may take to finish'
            cand --workers 'Worker threads, each with its own listener and backend connections (default: cores)'
            cand --algorithm 'How requests are spread over backends'
            cand --hash-key 'What `--algorithm hash` hashes: ip, header:NAME or cookie:NAME'
            cand --eject-after 'Failed requests in a row (connect errors, timeouts, 5xx) that eject a backend for 30s, doubling with each ejection up to 5m; 0 turns passive health checking off'
            cand --slow-start 'Time over which a backend coming back ramps up to its full share; 0 is off'
            cand --retries 'Times a failed idempotent request is retried on another backend (within a budget of 20% of requests plus 10/s)'
            cand --response-timeout 'Time a backend has to send its response head (beyond it the client gets 504), and the longest pause within its response body (beyond it the response is cut short)'
            cand --header-timeout 'Time a client has to send its first request head on a new connection (slowloris)'
            cand --idle-timeout 'Time a client keep-alive connection may sit idle before the next request head'
            cand --max-connections 'Client connections open at once; beyond it new ones wait in the accept queue'
            cand --max-body 'Largest request body, e.g. 64k or 10m; beyond it the client gets 413'
            cand --rate-limit 'Requests per second per client IP (token bucket, per worker thread), e.g. 100/s; beyond it the client gets 429 with Retry-After'
            cand --trusted-proxies 'Proxies whose X-Forwarded-For is believed for --hash-key ip and --rate-limit, as addresses or blocks (10.0.0.0/8,192.0.2.7); by default the socket peer is the client'
            cand --config 'Read settings from this TOML file (flags given on the command line override it); SIGHUP or POST /reload re-reads it'
            cand --admin 'Serve the admin API (backends, metrics, healthz, reload) on this address; :9900 means 127.0.0.1:9900'
            cand --admin-token 'Bearer token the admin API requires'
            cand --access-log 'Write one line per request to PATH, or to stdout when no PATH is given'
            cand --access-log-format 'Access log line format'
            cand --log-level 'Operational log level (error, warn, info, debug, trace, off) or RUST_LOG-style filter; overrides RUST_LOG [default: info]'
            cand --tls-cert 'Certificate chain (PEM) to terminate TLS with; repeat with --tls-key for several certificates, chosen by SNI (the first is the default). Re-read on reload'
            cand --tls-key 'Private key (PEM) of the --tls-cert given in the same position'
            cand --tls-port 'Serve TLS on this port beside the plain one on --port (without it, --port serves TLS when certificates are given); 0 picks a free port'
            cand --tunnel-timeout 'Time a WebSocket (or other upgraded) tunnel may pass no bytes either way before it is closed'
            cand --allow-upgrade 'Also tunnel this upgrade protocol besides websocket (repeatable); other upgrade requests are refused'
            cand --backend-cacert 'Also trust the CA certificates in this PEM file when verifying https:// backends (and their health checks)'
            cand --discover 'Follow the backends under an etcd key prefix (repeatable), e.g. etcd://127.0.0.1:2379/lbx/backends/; each key''s value is {"address": ":9001", "weight": 1}'
            cand --dns-refresh 'Longest time between two lookups of a dns:// or srv:// backend (sooner when the record''s TTL is shorter, at least 1s)'
            cand --dns-server 'DNS server for dns:// and srv:// backends, IP or IP:PORT [default: the system''s resolver]'
            cand --backend-insecure 'Do not verify the certificates of https:// backends'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lbx;check'= {
            cand --path 'Path (and query) to request'
            cand -m 'HTTP method'
            cand --method 'HTTP method'
            cand -H 'Request header ''Name: value'' (repeatable)'
            cand --header 'Request header ''Name: value'' (repeatable)'
            cand --expect-status 'Statuses that count as healthy: 200, 2xx, 200-399, or a comma list of these'
            cand --expect-body 'Text the response body must contain (its first 64 KiB are read)'
            cand --expect-body-regex 'Regular expression the response body must match (its first 64 KiB are read)'
            cand --timeout 'Time allowed for each probe, connect included [default: 2s]. With --wait-healthy: the whole wait [default: 30s], each probe then getting at most 2s'
            cand --connect-timeout 'Time allowed to connect: DNS, TCP and TLS [default: the probe timeout]'
            cand --cacert 'Also trust the CA certificates in this PEM file'
            cand --cert-warn-days 'Warn when a certificate expires within this many days'
            cand --watch 'Re-probe every INTERVAL [default: 2s] until Ctrl-C, printing only state changes with timestamps (NDJSON with --json). Exit status then reflects the last state'
            cand --rise 'Successful probes in a row before a down target counts as up (--watch, --wait-healthy)'
            cand --fall 'Failed probes in a row before an up target counts as down (--watch, --wait-healthy)'
            cand --admin 'Show the pool as a balancer''s admin API at ADDR sees it, instead of probing targets'
            cand --admin-token 'Bearer token for --admin'
            cand -k 'Do not verify TLS certificates'
            cand --insecure 'Do not verify TLS certificates'
            cand --wait-healthy 'Re-probe twice a second until every target is healthy (exit 0) or --timeout runs out (exit 1). State changes are logged to stderr, the last round printed as usual'
            cand --json 'Print JSON: an array of objects, one per target (NDJSON events with --watch)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lbx;bench'= {
            cand -n 'Number of requests (accepts 10k, 1m); default 200 when no --duration is given'
            cand --requests 'Number of requests (accepts 10k, 1m); default 200 when no --duration is given'
            cand -c 'Connections (concurrent requests)'
            cand --connections 'Connections (concurrent requests)'
            cand -z 'Run for this long (with -n too, whichever ends first)'
            cand --duration 'Run for this long (with -n too, whichever ends first)'
            cand -q 'Open model: send this many requests per second in total on a fixed schedule, and report latency from the scheduled send time (coordinated-omission correction)'
            cand --rate 'Open model: send this many requests per second in total on a fixed schedule, and report latency from the scheduled send time (coordinated-omission correction)'
            cand -m 'HTTP method'
            cand --method 'HTTP method'
            cand -H 'Request header ''Name: value'' (repeatable)'
            cand --header 'Request header ''Name: value'' (repeatable)'
            cand -d 'Request body'
            cand --body 'Request body'
            cand -D 'Request body read from a file'
            cand --body-file 'Request body read from a file'
            cand -t 'Per-request timeout'
            cand --timeout 'Per-request timeout'
            cand --connect-timeout 'Time to connect'
            cand -p 'With HTTP/2 (--http2 or an h2c:// URL), concurrent streams per connection'
            cand --streams 'With HTTP/2 (--http2 or an h2c:// URL), concurrent streams per connection'
            cand --cacert 'Also trust the CA certificates in this PEM file'
            cand --threads 'Worker threads (default: available cores, at most one per connection)'
            cand --warmup 'Send load for this long first without counting it'
            cand --group-by 'Response header whose values the spread is counted over'
            cand --disable-keepalive 'A new connection for every request (sends Connection: close)'
            cand --http2 'Speak HTTP/2: ALPN h2 over TLS, prior knowledge (h2c) over http://'
            cand --insecure 'Accept any TLS certificate'
            cand --fail-on-error 'Exit 1 when any request failed (a connection error, a timeout or a 5xx answer)'
            cand --json 'Print one JSON object instead of the text report'
            cand --no-progress 'No progress bar'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lbx;demo'= {
            cand -p 'Port for the demo balancer; 0 picks a free port'
            cand --port 'Port for the demo balancer; 0 picks a free port'
            cand --exit 'End after the show instead of serving until Ctrl-C'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lbx;help'= {
            cand serve 'Run demo backends: GET / answers with the server id; fault knobs for demos and tests'
            cand balance 'Load-balance HTTP over backends, with health checks'
            cand check 'Probe backends'' health endpoints; exit 0 when all are healthy'
            cand bench 'Generate HTTP load and report latency percentiles and the spread over backends'
            cand demo 'Show lbx in one command: three backends, a balancer, load, a failure and a recovery'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lbx;help;serve'= {
        }
        &'lbx;help;balance'= {
        }
        &'lbx;help;check'= {
        }
        &'lbx;help;bench'= {
        }
        &'lbx;help;demo'= {
        }
        &'lbx;help;help'= {
        }
    ]
    $completions[$command]
}
