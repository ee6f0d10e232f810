# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_lbx_global_optspecs
    string join \n h/help V/version
end

function __fish_lbx_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_lbx_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_lbx_using_subcommand
    set -l cmd (__fish_lbx_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c lbx -n "__fish_lbx_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lbx -n "__fish_lbx_needs_command" -s V -l version -d 'Print version'
complete -c lbx -n "__fish_lbx_needs_command" -f -a "serve" -d 'Run demo backends: GET / answers with the server id; fault knobs for demos and tests'
complete -c lbx -n "__fish_lbx_needs_command" -f -a "balance" -d 'Load-balance HTTP over backends, with health checks'
complete -c lbx -n "__fish_lbx_needs_command" -f -a "check" -d 'Probe backends\' health endpoints; exit 0 when all are healthy'
complete -c lbx -n "__fish_lbx_needs_command" -f -a "bench" -d 'Generate HTTP load and report latency percentiles and the spread over backends'
complete -c lbx -n "__fish_lbx_needs_command" -f -a "demo" -d 'Show lbx in one command: three backends, a balancer, load, a failure and a recovery'
complete -c lbx -n "__fish_lbx_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l id -d 'Server id reported by GET / and the x-server-id header; counts up over a port range' -r
complete -c lbx -n "__fish_lbx_using_subcommand serve" -s p -l port -d 'Port, or a range like 9001-9003 for one server per port; 0 picks a free port' -r
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l host -d 'Address to listen on' -r
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l delay -d 'Delay added to every response, e.g. 20ms' -r
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l fail-rate -d 'Share of GET / requests answered 500, from 0 to 1' -r
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l workers -d 'Worker threads (default: available cores)' -r
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l tls-cert -d 'Serve HTTPS with this certificate chain (PEM); ALPN offers h2 and http/1.1' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l tls-key -d 'Private key (PEM) of --tls-cert' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l max-streams -d 'Concurrent HTTP/2 streams allowed per connection (SETTINGS_MAX_CONCURRENT_STREAMS)' -r
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l register -d 'Register each listener in etcd under this key prefix, e.g. etcd://127.0.0.1:2379/lbx/backends/, on a lease kept alive while running; the key is deleted at shutdown and expires with the lease if the process dies' -r
complete -c lbx -n "__fish_lbx_using_subcommand serve" -l register-ttl -d 'Lease time-to-live for --register: how long a dead server stays registered' -r
complete -c lbx -n "__fish_lbx_using_subcommand serve" -s h -l help -d 'Print help'
complete -c lbx -n "__fish_lbx_using_subcommand serve" -s V -l version -d 'Print version'
complete -c lbx -n "__fish_lbx_using_subcommand balance" -s b -l backend -d 'Backends, comma-separated or repeated: -b :9001,:9002 -b host:9003; `:9001=3` gives a weight (weighted and least-conn use it). h2c://HOST:PORT speaks HTTP/2 with prior knowledge, https:// HTTP/2 or HTTP/1.1 by ALPN. dns://NAME:PORT (A/AAAA) and srv://_http._tcp.NAME (SRV) are re-resolved every --dns-refresh; dns://h2c://NAME:PORT finds h2c backends' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -s p -l port -d 'Port to listen on; 0 picks a free port' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l host -d 'Address to listen on' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l interval -d 'Time between health checks' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l timeout -d 'Health check timeout' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l health-path -d 'Health check path' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l rise -d 'Successful checks in a row before a down backend takes traffic again' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l fall -d 'Failed checks in a row before a backend is taken out' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l connect-timeout -d 'Time to connect to a backend' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l grace -d 'At shutdown, how long in-flight requests may take to finish' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l workers -d 'Worker threads, each with its own listener and backend connections (default: cores)' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l algorithm -d 'How requests are spread over backends' -r -f -a "round-robin\t'Each routable backend in turn'
weighted\t'Smooth weighted round robin (nginx\'s): shares follow `:PORT=WEIGHT`, without bursts'
least-conn\t'Fewest requests in flight (per weight), ties in turn'
p2c\t'Power of two random choices by peak-EWMA latency times requests in flight'
hash\t'Consistent hashing of `--hash-key` over a Maglev table'
random\t'Uniformly at random'"
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l hash-key -d 'What `--algorithm hash` hashes: ip, header:NAME or cookie:NAME' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l eject-after -d 'Failed requests in a row (connect errors, timeouts, 5xx) that eject a backend for 30s, doubling with each ejection up to 5m; 0 turns passive health checking off' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l slow-start -d 'Time over which a backend coming back ramps up to its full share; 0 is off' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l retries -d 'Times a failed idempotent request is retried on another backend (within a budget of 20% of requests plus 10/s)' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l response-timeout -d 'Time a backend has to send its response head (beyond it the client gets 504), and the longest pause within its response body (beyond it the response is cut short)' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l header-timeout -d 'Time a client has to send its first request head on a new connection (slowloris)' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l idle-timeout -d 'Time a client keep-alive connection may sit idle before the next request head' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l max-connections -d 'Client connections open at once; beyond it new ones wait in the accept queue' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l max-body -d 'Largest request body, e.g. 64k or 10m; beyond it the client gets 413' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l rate-limit -d 'Requests per second per client IP (token bucket, per worker thread), e.g. 100/s; beyond it the client gets 429 with Retry-After' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l trusted-proxies -d 'Proxies whose X-Forwarded-For is believed for --hash-key ip and --rate-limit, as addresses or blocks (10.0.0.0/8,192.0.2.7); by default the socket peer is the client' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l config -d 'Read settings from this TOML file (flags given on the command line override it); SIGHUP or POST /reload re-reads it' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l admin -d 'Serve the admin API (backends, metrics, healthz, reload) on this address; :9900 means 127.0.0.1:9900' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l admin-token -d 'Bearer token the admin API requires' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l access-log -d 'Write one line per request to PATH, or to stdout when no PATH is given' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l access-log-format -d 'Access log line format' -r -f -a "text\t'Combined-like text: `client - - [time] "METHOD path" status bytes duration backend attempts request_id`'
json\t'One JSON object per line'"
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l log-level -d 'Operational log level (error, warn, info, debug, trace, off) or RUST_LOG-style filter; overrides RUST_LOG [default: info]' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l tls-cert -d 'Certificate chain (PEM) to terminate TLS with; repeat with --tls-key for several certificates, chosen by SNI (the first is the default). Re-read on reload' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l tls-key -d 'Private key (PEM) of the --tls-cert given in the same position' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l tls-port -d 'Serve TLS on this port beside the plain one on --port (without it, --port serves TLS when certificates are given); 0 picks a free port' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l tunnel-timeout -d 'Time a WebSocket (or other upgraded) tunnel may pass no bytes either way before it is closed' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l allow-upgrade -d 'Also tunnel this upgrade protocol besides websocket (repeatable); other upgrade requests are refused' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l backend-cacert -d 'Also trust the CA certificates in this PEM file when verifying https:// backends (and their health checks)' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l discover -d 'Follow the backends under an etcd key prefix (repeatable), e.g. etcd://127.0.0.1:2379/lbx/backends/; each key\'s value is {"address": ":9001", "weight": 1}' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l dns-refresh -d 'Longest time between two lookups of a dns:// or srv:// backend (sooner when the record\'s TTL is shorter, at least 1s)' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l dns-server -d 'DNS server for dns:// and srv:// backends, IP or IP:PORT [default: the system\'s resolver]' -r
complete -c lbx -n "__fish_lbx_using_subcommand balance" -l backend-insecure -d 'Do not verify the certificates of https:// backends'
complete -c lbx -n "__fish_lbx_using_subcommand balance" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lbx -n "__fish_lbx_using_subcommand balance" -s V -l version -d 'Print version'
complete -c lbx -n "__fish_lbx_using_subcommand check" -l path -d 'Path (and query) to request' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -s m -l method -d 'HTTP method' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -s H -l header -d 'Request header \'Name: value\' (repeatable)' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l expect-status -d 'Statuses that count as healthy: 200, 2xx, 200-399, or a comma list of these' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l expect-body -d 'Text the response body must contain (its first 64 KiB are read)' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l expect-body-regex -d 'Regular expression the response body must match (its first 64 KiB are read)' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l timeout -d 'Time allowed for each probe, connect included [default: 2s]. With --wait-healthy: the whole wait [default: 30s], each probe then getting at most 2s' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l connect-timeout -d 'Time allowed to connect: DNS, TCP and TLS [default: the probe timeout]' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l cacert -d 'Also trust the CA certificates in this PEM file' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand check" -l cert-warn-days -d 'Warn when a certificate expires within this many days' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l watch -d 'Re-probe every INTERVAL [default: 2s] until Ctrl-C, printing only state changes with timestamps (NDJSON with --json). Exit status then reflects the last state' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l rise -d 'Successful probes in a row before a down target counts as up (--watch, --wait-healthy)' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l fall -d 'Failed probes in a row before an up target counts as down (--watch, --wait-healthy)' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l admin -d 'Show the pool as a balancer\'s admin API at ADDR sees it, instead of probing targets' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -l admin-token -d 'Bearer token for --admin' -r
complete -c lbx -n "__fish_lbx_using_subcommand check" -s k -l insecure -d 'Do not verify TLS certificates'
complete -c lbx -n "__fish_lbx_using_subcommand check" -l wait-healthy -d 'Re-probe twice a second until every target is healthy (exit 0) or --timeout runs out (exit 1). State changes are logged to stderr, the last round printed as usual'
complete -c lbx -n "__fish_lbx_using_subcommand check" -l json -d 'Print JSON: an array of objects, one per target (NDJSON events with --watch)'
complete -c lbx -n "__fish_lbx_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lbx -n "__fish_lbx_using_subcommand check" -s V -l version -d 'Print version'
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s n -l requests -d 'Number of requests (accepts 10k, 1m); default 200 when no --duration is given' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s c -l connections -d 'Connections (concurrent requests)' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s z -l duration -d 'Run for this long (with -n too, whichever ends first)' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s q -l rate -d 'Open model: send this many requests per second in total on a fixed schedule, and report latency from the scheduled send time (coordinated-omission correction)' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s m -l method -d 'HTTP method' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s H -l header -d 'Request header \'Name: value\' (repeatable)' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s d -l body -d 'Request body' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s D -l body-file -d 'Request body read from a file' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s t -l timeout -d 'Per-request timeout' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l connect-timeout -d 'Time to connect' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s p -l streams -d 'With HTTP/2 (--http2 or an h2c:// URL), concurrent streams per connection' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l cacert -d 'Also trust the CA certificates in this PEM file' -r -F
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l threads -d 'Worker threads (default: available cores, at most one per connection)' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l warmup -d 'Send load for this long first without counting it' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l group-by -d 'Response header whose values the spread is counted over' -r
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l disable-keepalive -d 'A new connection for every request (sends Connection: close)'
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l http2 -d 'Speak HTTP/2: ALPN h2 over TLS, prior knowledge (h2c) over http://'
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l insecure -d 'Accept any TLS certificate'
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l fail-on-error -d 'Exit 1 when any request failed (a connection error, a timeout or a 5xx answer)'
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l json -d 'Print one JSON object instead of the text report'
complete -c lbx -n "__fish_lbx_using_subcommand bench" -l no-progress -d 'No progress bar'
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s h -l help -d 'Print help'
complete -c lbx -n "__fish_lbx_using_subcommand bench" -s V -l version -d 'Print version'
complete -c lbx -n "__fish_lbx_using_subcommand demo" -s p -l port -d 'Port for the demo balancer; 0 picks a free port' -r
complete -c lbx -n "__fish_lbx_using_subcommand demo" -l exit -d 'End after the show instead of serving until Ctrl-C'
complete -c lbx -n "__fish_lbx_using_subcommand demo" -s h -l help -d 'Print help'
complete -c lbx -n "__fish_lbx_using_subcommand demo" -s V -l version -d 'Print version'
complete -c lbx -n "__fish_lbx_using_subcommand help; and not __fish_seen_subcommand_from serve balance check bench demo help" -f -a "serve" -d 'Run demo backends: GET / answers with the server id; fault knobs for demos and tests'
complete -c lbx -n "__fish_lbx_using_subcommand help; and not __fish_seen_subcommand_from serve balance check bench demo help" -f -a "balance" -d 'Load-balance HTTP over backends, with health checks'
complete -c lbx -n "__fish_lbx_using_subcommand help; and not __fish_seen_subcommand_from serve balance check bench demo help" -f -a "check" -d 'Probe backends\' health endpoints; exit 0 when all are healthy'
complete -c lbx -n "__fish_lbx_using_subcommand help; and not __fish_seen_subcommand_from serve balance check bench demo help" -f -a "bench" -d 'Generate HTTP load and report latency percentiles and the spread over backends'
complete -c lbx -n "__fish_lbx_using_subcommand help; and not __fish_seen_subcommand_from serve balance check bench demo help" -f -a "demo" -d 'Show lbx in one command: three backends, a balancer, load, a failure and a recovery'
complete -c lbx -n "__fish_lbx_using_subcommand help; and not __fish_seen_subcommand_from serve balance check bench demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
