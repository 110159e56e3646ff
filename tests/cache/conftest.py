"""Fixtures for the shared cache: a signing key made by the CLI, a project to build, S3 served by moto."""

from __future__ import annotations

import os
import shutil
import socket

import psutil
import pytest

from tests.conftest import Cli

# Two command steps; the first makes a folder, a duplicate file, an executable and a link inside its output.
RECIPE = """
name: shared
steps:
  prepare:
    builder: command
    params:
      cmd: >-
        echo pear > "$MB_OUT/fruit.txt" && mkdir "$MB_OUT/d" && echo pear > "$MB_OUT/d/same.txt" &&
        printf '#!/bin/sh\\necho hi\\n' > "$MB_OUT/run.sh" && chmod +x "$MB_OUT/run.sh" &&
        ln -s ../fruit.txt "$MB_OUT/d/link"
  train:
    builder: command
    inputs: [prepare]
    params: {cmd: 'cat "$MB_IN_PREPARE/fruit.txt" "$MB_IN_PREPARE/d/link" > "$MB_OUT/model.txt"'}
"""

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


@pytest.fixture
def built(cli):
    """Store A with the recipe built; returns its Cli."""
    cli.project.write("recipe.yaml", RECIPE)
    cli.build()
    return cli


@pytest.fixture
def keys(cli, tmp_path):
    """(secret key file, public key line), made by `modelbuild key generate`."""
    secret = tmp_path / "keys" / "team-1.secret"
    secret.parent.mkdir()
    public = cli("key", "generate", "team-1", "-o", secret).stdout.strip()
    return secret, public


@pytest.fixture
def store_b(cli, tmp_path):
    """A fresh clone of the project (its files, no store) with an empty store B."""
    clone = tmp_path / "clone"
    shutil.copytree(cli.project, clone, ignore=shutil.ignore_patterns("store"))
    return Cli(type(cli.project)(clone), tmp_path / "storeB")


@pytest.fixture
def s3(tmp_path):
    """A bucket on moto's S3 on 127.0.0.1 (a free port): yields the cache URL; the server is stopped after."""
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    old = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        import boto3
        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="team-cache")
        yield f"s3://team-cache/modelbuild?endpointurl=http://{host}:{port}"
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    listening = [c for c in psutil.Process().net_connections() if c.laddr and c.laddr.port == port
                 and c.status == psutil.CONN_LISTEN]
    assert not listening, "the moto server is still listening"
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1).close()


def tree(root):
    """Every file of a store's objects/ (and .links), with its bytes or link target, for byte-identity."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root / "objects"):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            out[rel] = ("link", os.readlink(path)) if os.path.islink(path) else \
                (open(path, "rb").read(), os.stat(path).st_mode & 0o777)
    return out
