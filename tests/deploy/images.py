"""Test images made from this machine's own files: a Python base small enough to build in a few seconds, and
wheels made from a module's text. Both are written as a user would find them: an OCI layout and .whl files."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

from modelbuild import oci

SKIP = {"test", "idlelib", "tkinter", "ensurepip", "lib2to3", "pydoc_data", "turtledemo", "__pycache__",
        "site-packages", "dist-packages", "config-3.11-x86_64-linux-gnu"}


MANYLINUX = ("libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
             "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1")


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return [part for line in out.splitlines() for part in line.split() if part.startswith("/")]


def python_base(layout: Path) -> Path:
    """An OCI layout `layout:3.11` holding /usr/bin/python3.11 (and python3, env), its shared libraries and
    the standard library: the image a `python:3.11-slim` base plays in production."""
    python = "/usr/bin/python3.11"
    files = oci.tree_files(Path("/usr/lib/python3.11"), "usr/lib/python3.11", exclude=tuple(SKIP))
    dynload = sorted(str(p) for p in Path("/usr/lib/python3.11/lib-dynload").glob("*.so"))
    for binary in (python, "/usr/bin/env", *dynload):  # _sqlite3, _ssl, ... need their libraries too
        files[binary.lstrip("/")] = Path(binary).resolve()
        files.update({lib.lstrip("/"): Path(lib).resolve() for lib in _libraries(binary)})
    for lib in MANYLINUX:  # what manylinux wheels (torch, pyarrow) may link against, as any glibc system has
        path = Path("/lib/x86_64-linux-gnu", lib)
        if path.exists():
            files[f"lib/x86_64-linux-gnu/{lib}"] = path.resolve()
    files["usr/bin/python3"] = Path(python)
    files["tmp/.keep"] = b""
    blobs = layout / "blobs" / "sha256"
    layer = oci.write_layer(blobs, files)
    oci.write_layout(layout, [oci.Image([layer], {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                                                  "Cmd": ["python3"]}, "3.11")])
    return layout


def wheel(folder: Path, name: str, version: str, modules: dict[str, str]) -> Path:
    """A pure-Python wheel `name-version-py3-none-any.whl` holding `modules` ({file name: source})."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {**modules, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(v.encode())}" for k, v in files.items()]
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in sorted(files.items()):
            z.writestr(zipfile.ZipInfo(k, (1980, 1, 1, 0, 0, 0)), v)
    return path
