"""`modelbuild serve`: one model artifact behind LitServe, on 127.0.0.1 unless told otherwise.

LitServe runs the model in an inference worker process and the HTTP front (uvicorn) wherever `run()` puts
it; its `run()` binds 0.0.0.0 and, on SIGTERM, leaves the worker, the queue manager and the port behind. So
this module starts LitServe's parts itself: it binds the socket first (a port in use is a clear error before
any model loads), starts the workers, runs uvicorn in this process's main thread (uvicorn's own graceful
shutdown: stop accepting, finish in-flight requests), and then stops the workers and the manager, closes
the logs and returns. SIGTERM and Ctrl-C both end in exit 0 with no child left.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError, UsageError
from .artifact import Servable

GRACE_SECONDS = 8  # in-flight requests get this long after SIGTERM; the whole stop stays under 10 s


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch_size: int = 1
    batch_timeout: float = 0.0
    max_body_bytes: int = 1 << 20
    log_dir: Path = Path("serve-logs")
    threads: int = 0  # torch threads per worker; 0: all cores
    timeout: float = 60.0  # seconds a request may wait for the model


class _Stop(Exception):
    """SIGTERM before the server is up: stop starting it."""


def serve(model: Servable, opts: Options, announce=print) -> int:
    sock = bind(opts.host, opts.port)
    metrics_dir = Path(tempfile.mkdtemp(prefix="modelbuild-metrics-"))
    from . import metrics

    metrics.multiprocess(metrics_dir)
    # Ctrl-C in a terminal signals the whole process group: the children ignore SIGINT (they inherit that
    # disposition) and are stopped by this process, in order, like on SIGTERM.
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_stop),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    server = manager = None
    logs = []
    from .apis import die_with_parent

    os.register_at_fork(after_in_child=die_with_parent)  # LitServe's queue manager is forked: SIGKILL-safe too
    try:
        server = _litserver(model, opts)
        manager = server._init_manager(1)
        server.inference_workers = [w for api in server.litapi_connector for w in server.launch_inference_worker(api)]
        signal.signal(signal.SIGINT, _raise_stop)
        try:
            server.verify_worker_status()
        except RuntimeError:
            raise BuildError(f"the model {model.path} failed to load in the inference worker (its error is "
                             "above)") from None
        logs = _attach_front(server, model, opts)
        for s in previous:  # uvicorn re-raises the signal it caught once it has stopped: let that pass
            signal.signal(s, lambda *_: None)
        _run_uvicorn(server, sock, model, opts, announce)
    except _Stop:
        pass
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        _stop(server, manager)
        for log in logs:
            log.close()
        sock.close()
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def _raise_stop(signum, frame):
    raise _Stop()


def bind(host: str, port: int) -> socket.socket:
    """The listening address, taken before anything loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is already in use{_holder(port)}: stop what holds it, or "
                             "serve on another port with --port N (--port 0 picks a free one)") from None
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}. Check --host and --port") from None
    sock.set_inheritable(True)
    return sock


def _holder(port: int) -> str:
    try:
        import psutil

        for c in psutil.net_connections("inet"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                return f" (by process {c.pid}, {psutil.Process(c.pid).name()})"
    except Exception:  # noqa: BLE001 - naming the holder is a courtesy; not being allowed to is fine
        pass
    return ""


def _litserver(model: Servable, opts: Options):
    import litserve as ls

    from . import apis
    from .completions import CompletionSpec

    threads = opts.threads or os.cpu_count() or 1
    common = {"model": model.path, "threads": threads}
    if model.task.startswith("tabular-"):
        from .schema import tabular_schema

        lit_apis = [apis.TabularAPI(**common, schema=tabular_schema(model.path))]
    elif model.task == "sequence-classification":
        lit_apis = [apis.TextClassifierAPI(**common, max_batch_size=opts.max_batch_size,
                                           batch_timeout=opts.batch_timeout)]
    else:
        from .prompts import PromptFormat

        fmt = PromptFormat(model.meta)
        lit_apis = [apis.ChatAPI(**common, prompt_format=fmt, spec=ls.OpenAISpec()),
                    apis.CompletionAPI(**common, prompt_format=fmt, spec=CompletionSpec())]
    return ls.LitServer(lit_apis, accelerator="cpu" if not _cuda() else "auto", devices=1, timeout=opts.timeout,
                        healthcheck_path="/litserve/health", info_path="/litserve/info", disable_openapi_url=True)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _attach_front(server, model: Servable, opts: Options) -> list:
    """Our routes and the front middleware, on LitServe's app; the logs they write."""
    from . import metrics, routes
    from .front import Front
    from .requestlog import SegmentLog

    requests = SegmentLog(opts.log_dir, "requests")
    feedback = SegmentLog(opts.log_dir, "feedback")
    m = metrics.ServerMetrics()
    m.model_info.labels(model.digest, model.name, model.task).set(1)
    routes.add(server, model, feedback)
    server.app.add_middleware(Front, digest=model.digest, api_key=opts.api_key, max_body=opts.max_body_bytes,
                              metrics=m, log=requests)
    return [requests, feedback]


def _run_uvicorn(server, sock, model: Servable, opts: Options, announce) -> None:
    import uvicorn

    server.app.response_queue_id = 0
    for api in server.litapi_connector:
        if api.spec:
            api.spec.response_queue_id = 0
    host, port = sock.getsockname()[:2]

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if not self.should_exit:
                announce(f"serving {model.name} ({model.task}, digest {model.digest}) on http://{host}:{port}  "
                         f"(requests logged to {opts.log_dir}/)")
                sys.stdout.flush()

    config = uvicorn.Config(server.app, log_level="warning", timeout_graceful_shutdown=GRACE_SECONDS,
                            lifespan="on")
    Server(config).run(sockets=[sock])


def _stop(server, manager) -> None:
    """The inference workers and LitServe's queue manager, stopped and reaped."""
    if server is None:
        return
    for w in getattr(server, "inference_workers", []) or []:
        w.terminate()
    for w in getattr(server, "inference_workers", []) or []:
        w.join(timeout=3)
        if w.is_alive():
            w.kill()
            w.join(timeout=1)
    if manager is not None:
        manager.shutdown()
