#!/usr/bin/env python3
"""Opens N keep-alive connections to HOST:PORT, sends one GET on each, reads the answers, then
holds every connection open and idle until killed. Prints 'ready N' once all are idle. With
`tls`, each connection is TLS (offering ALPN http/1.1; the certificate is not verified).
Usage: idle-conns.py N HOST PORT [tls]"""
import resource, selectors, socket, ssl, sys, time

n, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
tls = None
if sys.argv[4:] == ["tls"]:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    tls.set_alpn_protocols(["http/1.1"])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 1024)), hard))
req = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
# epoll through selectors: select() cannot watch descriptors above 1023.
sel = selectors.DefaultSelector()
socks, pending = [], 0
for i in range(n):
    s = socket.create_connection((host, port), timeout=10)
    if tls:
        s = tls.wrap_socket(s, server_hostname="localhost")
    s.sendall(req)
    socks.append(s)
    sel.register(s, selectors.EVENT_READ)
    pending += 1
    if pending >= 500 or i == n - 1:
        # Read the answers of this batch (each fits one small read) before opening more.
        deadline = time.time() + 20
        while pending and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                if key.fileobj.recv(65536):
                    sel.unregister(key.fileobj)
                    pending -= 1
        if pending:
            sys.exit(f"{pending} connections got no answer")
print(f"ready {len(socks)}", flush=True)
while True:
    time.sleep(3600)
