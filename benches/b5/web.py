#!/usr/bin/env python3
"""B5's service, the same for Clarity and Ansible: a tiny HTTP server that reads its config file
(`listen = PORT`, `greeting = TEXT`, one `key = value` per line) and answers GET /health with
200 and `ok GREETING`. It listens on 127.0.0.1 only, inside its host's network namespace.

    web.py CONFIG
"""
import http.server
import sys

conf = {}
with open(sys.argv[1]) as f:
    for line in f:
        key, _, value = line.partition("=")
        conf[key.strip()] = value.strip()
body = f"ok {conf.get('greeting', '')}\n".encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body) if ok else 0))
        self.end_headers()
        if ok:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(conf["listen"])), Handler).serve_forever()
