"""A stand-in for `modelbuild serve`'s /metrics until the server is here: the server's own collectors
(serving/metrics.py), fed 10 requests per second of which 1 in 10 fails and every one takes a second.
Usage: python exporter.py PORT"""

import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from modelbuild.serving import metrics as M

M.multiprocess(tempfile.mkdtemp())
collectors = M.ServerMetrics()


def traffic():
    n = 0
    while True:
        n += 1
        status = "500" if n % 10 == 0 else "200"
        collectors.requests.labels(route="/predict", status=status).inc()
        collectors.latency.labels(route="/predict").observe(1.0)
        time.sleep(0.1)


class Metrics(BaseHTTPRequestHandler):
    def do_GET(self):
        body, content_type = M.exposition()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


threading.Thread(target=traffic, daemon=True).start()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Metrics).serve_forever()
