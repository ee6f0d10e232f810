
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'lbx' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'lbx'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'lbx' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run demo backends: GET / answers with the server id; fault knobs for demos and tests')
            [CompletionResult]::new('balance', 'balance', [CompletionResultType]::ParameterValue, 'Load-balance HTTP over backends, with health checks')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Probe backends'' health endpoints; exit 0 when all are healthy')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Generate HTTP load and report latency percentiles and the spread over backends')
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Show lbx in one command: three backends, a balancer, load, a failure and a recovery')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lbx;serve' {
            [CompletionResult]::new('--id', '--id', [CompletionResultType]::ParameterName, 'Server id reported by GET / and the x-server-id header; counts up over a port range')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Port, or a range like 9001-9003 for one server per port; 0 picks a free port')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port, or a range like 9001-9003 for one server per port; 0 picks a free port')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to listen on')
            [CompletionResult]::new('--delay', '--delay', [CompletionResultType]::ParameterName, 'Delay added to every response, e.g. 20ms')
            [CompletionResult]::new('--fail-rate', '--fail-rate', [CompletionResultType]::ParameterName, 'Share of GET / requests answered 500, from 0 to 1')
            [CompletionResult]::new('--workers', '--workers', [CompletionResultType]::ParameterName, 'Worker threads (default: available cores)')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serve HTTPS with this certificate chain (PEM); ALPN offers h2 and http/1.1')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key (PEM) of --tls-cert')
            [CompletionResult]::new('--max-streams', '--max-streams', [CompletionResultType]::ParameterName, 'Concurrent HTTP/2 streams allowed per connection (SETTINGS_MAX_CONCURRENT_STREAMS)')
            [CompletionResult]::new('--register', '--register', [CompletionResultType]::ParameterName, 'Register each listener in etcd under this key prefix, e.g. etcd://127.0.0.1:2379/lbx/backends/, on a lease kept alive while running; the key is deleted at shutdown and expires with the lease if the process dies')
            [CompletionResult]::new('--register-ttl', '--register-ttl', [CompletionResultType]::ParameterName, 'Lease time-to-live for --register: how long a dead server stays registered')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lbx;balance' {
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backends, comma-separated or repeated: -b :9001,:9002 -b host:9003; `:9001=3` gives a weight (weighted and least-conn use it). h2c://HOST:PORT speaks HTTP/2 with prior knowledge, https:// HTTP/2 or HTTP/1.1 by ALPN. dns://NAME:PORT (A/AAAA) and srv://_http._tcp.NAME (SRV) are re-resolved every --dns-refresh; dns://h2c://NAME:PORT finds h2c backends')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backends, comma-separated or repeated: -b :9001,:9002 -b host:9003; `:9001=3` gives a weight (weighted and least-conn use it). h2c://HOST:PORT speaks HTTP/2 with prior knowledge, https:// HTTP/2 or HTTP/1.1 by ALPN. dns://NAME:PORT (A/AAAA) and srv://_http._tcp.NAME (SRV) are re-resolved every --dns-refresh; dns://h2c://NAME:PORT finds h2c backends')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Port to listen on; 0 picks a free port')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on; 0 picks a free port')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to listen on')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between health checks')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Health check timeout')
            [CompletionResult]::new('--health-path', '--health-path', [CompletionResultType]::ParameterName, 'Health check path')
            [CompletionResult]::new('--rise', '--rise', [CompletionResultType]::ParameterName, 'Successful checks in a row before a down backend takes traffic again')
            [CompletionResult]::new('--fall', '--fall', [CompletionResultType]::ParameterName, 'Failed checks in a row before a backend is taken out')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'Time to connect to a backend')
            [CompletionResult]::new('--grace', '--grace', [CompletionResultType]::ParameterName, 'At shutdown, how long in-flight requests may take to finish')
            [CompletionResult]::new('--workers', '--workers', [CompletionResultType]::ParameterName, 'Worker threads, each with its own listener and backend connections (default: cores)')
            [CompletionResult]::new('--algorithm', '--algorithm', [CompletionResultType]::ParameterName, 'How requests are spread over backends')
            [CompletionResult]::new('--hash-key', '--hash-key', [CompletionResultType]::ParameterName, 'What `--algorithm hash` hashes: ip, header:NAME or cookie:NAME')
            [CompletionResult]::new('--eject-after', '--eject-after', [CompletionResultType]::ParameterName, 'Failed requests in a row (connect errors, timeouts, 5xx) that eject a backend for 30s, doubling with each ejection up to 5m; 0 turns passive health checking off')
            [CompletionResult]::new('--slow-start', '--slow-start', [CompletionResultType]::ParameterName, 'Time over which a backend coming back ramps up to its full share; 0 is off')
            [CompletionResult]::new('--retries', '--retries', [CompletionResultType]::ParameterName, 'Times a failed idempotent request is retried on another backend (within a budget of 20% of requests plus 10/s)')
            [CompletionResult]::new('--response-timeout', '--response-timeout', [CompletionResultType]::ParameterName, 'Time a backend has to send its response head (beyond it the client gets 504), and the longest pause within its response body (beyond it the response is cut short)')
            [CompletionResult]::new('--header-timeout', '--header-timeout', [CompletionResultType]::ParameterName, 'Time a client has to send its first request head on a new connection (slowloris)')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'Time a client keep-alive connection may sit idle before the next request head')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'Client connections open at once; beyond it new ones wait in the accept queue')
            [CompletionResult]::new('--max-body', '--max-body', [CompletionResultType]::ParameterName, 'Largest request body, e.g. 64k or 10m; beyond it the client gets 413')
            [CompletionResult]::new('--rate-limit', '--rate-limit', [CompletionResultType]::ParameterName, 'Requests per second per client IP (token bucket, per worker thread), e.g. 100/s; beyond it the client gets 429 with Retry-After')
            [CompletionResult]::new('--trusted-proxies', '--trusted-proxies', [CompletionResultType]::ParameterName, 'Proxies whose X-Forwarded-For is believed for --hash-key ip and --rate-limit, as addresses or blocks (10.0.0.0/8,192.0.2.7); by default the socket peer is the client')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Read settings from this TOML file (flags given on the command line override it); SIGHUP or POST /reload re-reads it')
            [CompletionResult]::new('--admin', '--admin', [CompletionResultType]::ParameterName, 'Serve the admin API (backends, metrics, healthz, reload) on this address; :9900 means 127.0.0.1:9900')
            [CompletionResult]::new('--admin-token', '--admin-token', [CompletionResultType]::ParameterName, 'Bearer token the admin API requires')
            [CompletionResult]::new('--access-log', '--access-log', [CompletionResultType]::ParameterName, 'Write one line per request to PATH, or to stdout when no PATH is given')
            [CompletionResult]::new('--access-log-format', '--access-log-format', [CompletionResultType]::ParameterName, 'Access log line format')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Operational log level (error, warn, info, debug, trace, off) or RUST_LOG-style filter; overrides RUST_LOG [default: info]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Certificate chain (PEM) to terminate TLS with; repeat with --tls-key for several certificates, chosen by SNI (the first is the default). Re-read on reload')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key (PEM) of the --tls-cert given in the same position')
            [CompletionResult]::new('--tls-port', '--tls-port', [CompletionResultType]::ParameterName, 'Serve TLS on this port beside the plain one on --port (without it, --port serves TLS when certificates are given); 0 picks a free port')
            [CompletionResult]::new('--tunnel-timeout', '--tunnel-timeout', [CompletionResultType]::ParameterName, 'Time a WebSocket (or other upgraded) tunnel may pass no bytes either way before it is closed')
            [CompletionResult]::new('--allow-upgrade', '--allow-upgrade', [CompletionResultType]::ParameterName, 'Also tunnel this upgrade protocol besides websocket (repeatable); other upgrade requests are refused')
            [CompletionResult]::new('--backend-cacert', '--backend-cacert', [CompletionResultType]::ParameterName, 'Also trust the CA certificates in this PEM file when verifying https:// backends (and their health checks)')
            [CompletionResult]::new('--discover', '--discover', [CompletionResultType]::ParameterName, 'Follow the backends under an etcd key prefix (repeatable), e.g. etcd://127.0.0.1:2379/lbx/backends/; each key''s value is {"address": ":9001", "weight": 1}')
            [CompletionResult]::new('--dns-refresh', '--dns-refresh', [CompletionResultType]::ParameterName, 'Longest time between two lookups of a dns:// or srv:// backend (sooner when the record''s TTL is shorter, at least 1s)')
            [CompletionResult]::new('--dns-server', '--dns-server', [CompletionResultType]::ParameterName, 'DNS server for dns:// and srv:// backends, IP or IP:PORT [default: the system''s resolver]')
            [CompletionResult]::new('--backend-insecure', '--backend-insecure', [CompletionResultType]::ParameterName, 'Do not verify the certificates of https:// backends')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lbx;check' {
            [CompletionResult]::new('--path', '--path', [CompletionResultType]::ParameterName, 'Path (and query) to request')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'HTTP method')
            [CompletionResult]::new('--method', '--method', [CompletionResultType]::ParameterName, 'HTTP method')
            [CompletionResult]::new('-H', '-H ', [CompletionResultType]::ParameterName, 'Request header ''Name: value'' (repeatable)')
            [CompletionResult]::new('--header', '--header', [CompletionResultType]::ParameterName, 'Request header ''Name: value'' (repeatable)')
            [CompletionResult]::new('--expect-status', '--expect-status', [CompletionResultType]::ParameterName, 'Statuses that count as healthy: 200, 2xx, 200-399, or a comma list of these')
            [CompletionResult]::new('--expect-body', '--expect-body', [CompletionResultType]::ParameterName, 'Text the response body must contain (its first 64 KiB are read)')
            [CompletionResult]::new('--expect-body-regex', '--expect-body-regex', [CompletionResultType]::ParameterName, 'Regular expression the response body must match (its first 64 KiB are read)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Time allowed for each probe, connect included [default: 2s]. With --wait-healthy: the whole wait [default: 30s], each probe then getting at most 2s')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'Time allowed to connect: DNS, TCP and TLS [default: the probe timeout]')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'Also trust the CA certificates in this PEM file')
            [CompletionResult]::new('--cert-warn-days', '--cert-warn-days', [CompletionResultType]::ParameterName, 'Warn when a certificate expires within this many days')
            [CompletionResult]::new('--watch', '--watch', [CompletionResultType]::ParameterName, 'Re-probe every INTERVAL [default: 2s] until Ctrl-C, printing only state changes with timestamps (NDJSON with --json). Exit status then reflects the last state')
            [CompletionResult]::new('--rise', '--rise', [CompletionResultType]::ParameterName, 'Successful probes in a row before a down target counts as up (--watch, --wait-healthy)')
            [CompletionResult]::new('--fall', '--fall', [CompletionResultType]::ParameterName, 'Failed probes in a row before an up target counts as down (--watch, --wait-healthy)')
            [CompletionResult]::new('--admin', '--admin', [CompletionResultType]::ParameterName, 'Show the pool as a balancer''s admin API at ADDR sees it, instead of probing targets')
            [CompletionResult]::new('--admin-token', '--admin-token', [CompletionResultType]::ParameterName, 'Bearer token for --admin')
            [CompletionResult]::new('-k', '-k', [CompletionResultType]::ParameterName, 'Do not verify TLS certificates')
            [CompletionResult]::new('--insecure', '--insecure', [CompletionResultType]::ParameterName, 'Do not verify TLS certificates')
            [CompletionResult]::new('--wait-healthy', '--wait-healthy', [CompletionResultType]::ParameterName, 'Re-probe twice a second until every target is healthy (exit 0) or --timeout runs out (exit 1). State changes are logged to stderr, the last round printed as usual')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON: an array of objects, one per target (NDJSON events with --watch)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lbx;bench' {
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Number of requests (accepts 10k, 1m); default 200 when no --duration is given')
            [CompletionResult]::new('--requests', '--requests', [CompletionResultType]::ParameterName, 'Number of requests (accepts 10k, 1m); default 200 when no --duration is given')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Connections (concurrent requests)')
            [CompletionResult]::new('--connections', '--connections', [CompletionResultType]::ParameterName, 'Connections (concurrent requests)')
            [CompletionResult]::new('-z', '-z', [CompletionResultType]::ParameterName, 'Run for this long (with -n too, whichever ends first)')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Run for this long (with -n too, whichever ends first)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Open model: send this many requests per second in total on a fixed schedule, and report latency from the scheduled send time (coordinated-omission correction)')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'Open model: send this many requests per second in total on a fixed schedule, and report latency from the scheduled send time (coordinated-omission correction)')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'HTTP method')
            [CompletionResult]::new('--method', '--method', [CompletionResultType]::ParameterName, 'HTTP method')
            [CompletionResult]::new('-H', '-H ', [CompletionResultType]::ParameterName, 'Request header ''Name: value'' (repeatable)')
            [CompletionResult]::new('--header', '--header', [CompletionResultType]::ParameterName, 'Request header ''Name: value'' (repeatable)')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Request body')
            [CompletionResult]::new('--body', '--body', [CompletionResultType]::ParameterName, 'Request body')
            [CompletionResult]::new('-D', '-D ', [CompletionResultType]::ParameterName, 'Request body read from a file')
            [CompletionResult]::new('--body-file', '--body-file', [CompletionResultType]::ParameterName, 'Request body read from a file')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Per-request timeout')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Per-request timeout')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'Time to connect')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'With HTTP/2 (--http2 or an h2c:// URL), concurrent streams per connection')
            [CompletionResult]::new('--streams', '--streams', [CompletionResultType]::ParameterName, 'With HTTP/2 (--http2 or an h2c:// URL), concurrent streams per connection')
            [CompletionResult]::new('--cacert', '--cacert', [CompletionResultType]::ParameterName, 'Also trust the CA certificates in this PEM file')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'Worker threads (default: available cores, at most one per connection)')
            [CompletionResult]::new('--warmup', '--warmup', [CompletionResultType]::ParameterName, 'Send load for this long first without counting it')
            [CompletionResult]::new('--group-by', '--group-by', [CompletionResultType]::ParameterName, 'Response header whose values the spread is counted over')
            [CompletionResult]::new('--disable-keepalive', '--disable-keepalive', [CompletionResultType]::ParameterName, 'A new connection for every request (sends Connection: close)')
            [CompletionResult]::new('--http2', '--http2', [CompletionResultType]::ParameterName, 'Speak HTTP/2: ALPN h2 over TLS, prior knowledge (h2c) over http://')
            [CompletionResult]::new('--insecure', '--insecure', [CompletionResultType]::ParameterName, 'Accept any TLS certificate')
            [CompletionResult]::new('--fail-on-error', '--fail-on-error', [CompletionResultType]::ParameterName, 'Exit 1 when any request failed (a connection error, a timeout or a 5xx answer)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object instead of the text report')
            [CompletionResult]::new('--no-progress', '--no-progress', [CompletionResultType]::ParameterName, 'No progress bar')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lbx;demo' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Port for the demo balancer; 0 picks a free port')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port for the demo balancer; 0 picks a free port')
            [CompletionResult]::new('--exit', '--exit', [CompletionResultType]::ParameterName, 'End after the show instead of serving until Ctrl-C')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lbx;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run demo backends: GET / answers with the server id; fault knobs for demos and tests')
            [CompletionResult]::new('balance', 'balance', [CompletionResultType]::ParameterValue, 'Load-balance HTTP over backends, with health checks')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Probe backends'' health endpoints; exit 0 when all are healthy')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Generate HTTP load and report latency percentiles and the spread over backends')
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Show lbx in one command: three backends, a balancer, load, a failure and a recovery')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lbx;help;serve' {
            break
        }
        'lbx;help;balance' {
            break
        }
        'lbx;help;check' {
            break
        }
        'lbx;help;bench' {
            break
        }
        'lbx;help;demo' {
            break
        }
        'lbx;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
