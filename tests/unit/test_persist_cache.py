"""The cache that keeps code hashes and the distributions' map between runs must never answer stale: an edited
module changes its step's key whatever the cache holds, and a damaged cache file is an empty cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

CODE = """
import json, sys
from modelbuild import persist
persist.configure(sys.argv[1])
from modelbuild.codehash import project_code
from pathlib import Path
project = Path(sys.argv[2])
print(json.dumps(project_code(project / "steps.py", project)))
persist.flush()
"""


def code_identity(cache: Path, project: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CODE, str(cache), str(project)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text).lstrip())


def test_an_edit_to_an_imported_module_changes_the_identity_even_with_a_warm_cache(tmp_path):
    project, cache = tmp_path / "project", tmp_path / "cache"
    project.mkdir()
    write(project / "steps.py", "import helper\nimport yaml\n\ndef run(ctx):\n    return helper.f()\n")
    write(project / "helper.py", "def f():\n    return 1\n")
    cold = code_identity(cache, project)
    assert (cache / "code.json").is_file() and (cache / "environment.json").is_file()
    assert code_identity(cache, project) == cold  # warm: the same answer from the cache
    assert "PyYAML" in cold["packages"] or "pyyaml" in {k.lower() for k in cold["packages"]}

    st = os.stat(project / "helper.py")
    write(project / "helper.py", "def f():\n    return 2\n")  # same size, same mtime restored
    os.utime(project / "helper.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = code_identity(cache, project)
    assert edited["source"] != cold["source"]

    write(project / "steps.py", "import helper\nimport other\n\ndef run(ctx):\n    return helper.f()\n")
    write(project / "other.py", "X = 1\n")
    assert code_identity(cache, project)["source"] != edited["source"]  # a new import is followed


def test_a_damaged_cache_file_is_an_empty_cache(tmp_path):
    project, cache = tmp_path / "project", tmp_path / "cache"
    project.mkdir()
    write(project / "steps.py", "def run(ctx):\n    pass\n")
    fresh = code_identity(cache, project)
    for name in ("code.json", "environment.json"):
        (cache / name).write_bytes(b"\x00garbage{")
    assert code_identity(cache, project) == fresh
    json.loads((cache / "code.json").read_text())  # rewritten whole



def test_a_module_added_or_removed_where_an_import_is_looked_for_changes_the_identity(tmp_path):
    """The cached closure is trusted only while no file appears or disappears where an import was searched: a
    project module that now shadows an installed package (or a package's new __init__) is followed."""
    project, cache = tmp_path / "project", tmp_path / "cache"
    project.mkdir()
    write(project / "steps.py", "import yaml\nfrom lib import tools\n\ndef run(ctx):\n    pass\n")
    cold = code_identity(cache, project)
    assert (cache / "closures.json").is_file() and code_identity(cache, project) == cold
    write(project / "yaml.py", "X = 1\n")  # shadows PyYAML from now on
    shadowed = code_identity(cache, project)
    assert shadowed["source"] != cold["source"] and "PyYAML" not in shadowed["packages"]
    (project / "lib").mkdir()
    write(project / "lib" / "tools.py", "Y = 1\n")  # in a folder created after the closure was cached
    with_lib = code_identity(cache, project)
    assert with_lib["source"] != shadowed["source"]
    write(project / "lib" / "__init__.py", "")
    assert code_identity(cache, project)["source"] != with_lib["source"]
    (project / "yaml.py").unlink()
    assert code_identity(cache, project)["packages"] == cold["packages"]
