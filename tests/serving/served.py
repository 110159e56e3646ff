"""A `modelbuild serve` process for tests: started on a free port, stopped with SIGTERM, checked to leave
nothing behind (no child process, the port free, exit 0)."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil

READY = re.compile(r"serving .* on (http://127\.0\.0\.1:(\d+))")


class Served:
    def __init__(self, cli, *args, env=None, timeout: float = 120):
        self.proc = cli.popen("serve", *args, "--port", "0", env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        self.lines, self.err = queue.Queue(), []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append), daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                line = None
            if line and READY.search(line):
                self.url, self.port = READY.search(line).group(1), int(READY.search(line).group(2))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"serve did not start (exit {self.proc.poll()}):\n{''.join(self.err)}")
        self.pid = self.proc.pid

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line)

    def stop(self, sig=signal.SIGTERM, within: float = 10) -> float:
        """Signal the server; assert it exits 0 in time, with no child left and the port free; the seconds."""
        children = psutil.Process(self.pid).children(recursive=True)
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=within + 5)
        seconds = time.monotonic() - started
        assert code == 0, f"serve exited {code}:\n{''.join(self.err)}"
        assert seconds < within, seconds
        _, alive = psutil.wait_procs(children, timeout=2)
        alive = [p for p in alive if _running(p)]  # a zombie has exited: it waits only for its reaper (init)
        assert not alive, f"children left behind: {alive}"
        listening = [c for c in psutil.net_connections("inet") if c.laddr and c.laddr.port == self.port
                     and c.status == psutil.CONN_LISTEN]
        assert not listening, listening
        with socket.socket() as s:  # a new server can take the port (client sockets may linger in TIME_WAIT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))
        return seconds

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            if exc[0] is None:
                self.stop()
            else:  # the test failed: take the whole tree down, not only the server
                for child in psutil.Process(self.pid).children(recursive=True):
                    child.kill()
                self.proc.kill()
                print("".join(self.err)[-6000:], file=sys.stderr)  # the server's side of the failure


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
