"""A Dask cluster on 127.0.0.1 for the module: a scheduler, two worker processes of one thread each, no
dashboard; closed afterwards, and checked to leave no process or listening port behind."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.cache.conftest import S3_ENV, keys, s3, tree  # noqa: F401 - the shared cache's fixtures, reused


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    # the HTTP server (health, metrics; the dashboard is off) on loopback too. The workers get moto's test
    # credentials now: they are started before any test's S3 server
    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                     env=S3_ENV)
    port = int(c.scheduler_address.rsplit(":", 1)[1])
    try:
        yield c
    finally:
        c.close()
    deadline = time.time() + 20
    while time.time() < deadline and left(me, before):
        time.sleep(0.2)
    assert not left(me, before), "cluster processes left behind"
    assert not [c for c in me.net_connections() if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN]


def left(me: psutil.Process, before: set[int]) -> list[psutil.Process]:
    """This process's children started since `before`, but for multiprocessing's resource tracker (which
    lives as long as this process: it outlives every cluster by design)."""
    out = []
    for p in me.children(recursive=True):
        try:
            if p.pid not in before and not any("resource_tracker" in a for a in p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def workers(cluster) -> set[str]:
    """The addresses of the cluster's workers now, as the scheduler knows them."""
    from distributed import Client

    with Client(cluster.scheduler_address, timeout=10) as client:
        return set(client.scheduler_info()["workers"])


def dask_url(cluster) -> str:
    return cluster.scheduler_address.replace("tcp://", "dask://")


def on_cluster(marker: str) -> list[tuple[psutil.Process, psutil.Process]]:
    """The processes whose command line holds `marker` (a step's command) that a cluster worker (a spawned
    process of this one) runs, each with that Dask worker."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if marker in " ".join(p.cmdline()):
                worker = next((a for a in p.parents() if any("spawn_main" in c for c in a.cmdline())), None)
                if worker is not None:
                    out.append((p, worker))
        except psutil.Error:
            pass
    return out
