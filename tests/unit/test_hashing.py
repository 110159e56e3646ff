"""Specification of content hashing: one spelling per value, files by bytes, trees by content.

Everything that enters a derivation key or an artifact digest goes through this module, so each rule
here is a promise about when two builds are "the same".
"""

from __future__ import annotations

import math
import os
import random
import socket
import time
from pathlib import Path

import pytest
import xxhash

from modelbuild import hashing
from modelbuild.hashing import (
    META_FILE,
    Unhashable,
    canonical_json,
    hash_file,
    hash_file_cached,
    hash_json,
    hash_tree,
    pseudo_devices,
    stat_identity,
)


def write(root: Path, files: dict[str, bytes | str]) -> Path:
    """Create `files` (relative path -> content) under root; return root."""
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        p.write_bytes(content)
    return root


class CountingCache:
    """A StatCache that remembers digests by stat identity and counts how it is used."""

    def __init__(self):
        self.data: dict[str, tuple[tuple, str]] = {}
        self.gets = self.puts = self.hits = 0

    def get(self, path, st):
        self.gets += 1
        entry = self.data.get(path)
        if entry and entry[0] == stat_identity(st):
            self.hits += 1
            return entry[1]
        return None

    def put(self, path, st, digest):
        self.puts += 1
        self.data[path] = (stat_identity(st), digest)


@pytest.fixture
def file_reads(monkeypatch):
    """Counts every real read of file content (hashing.hash_file) during the test."""
    calls = []
    real = hashing.hash_file

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(hashing, "hash_file", counting)
    return calls


# ---- canonical JSON ---------------------------------------------------------------------------------

class TestCanonicalJson:
    def test_keys_are_sorted_at_every_depth_and_there_are_no_spaces(self):
        value = {"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": None}}
        assert canonical_json(value) == '{"a":{"c":null,"z":[1,{"x":3,"y":2}]},"b":1}'

    def test_insertion_order_does_not_matter(self):
        a, b = {"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"d": 3, "c": 2}, "a": 1}
        assert canonical_json(a) == canonical_json(b)
        assert hash_json({"a": 1, "b": 2}) == hash_json({"b": 2, "a": 1})

    def test_a_float_has_one_spelling_however_it_was_written(self):
        assert canonical_json(3e-4) == canonical_json(0.0003) == "0.0003"
        assert canonical_json({"lr": 1e-3}) == '{"lr":0.001}'
        assert canonical_json(float("1.50")) == "1.5"

    def test_floats_round_trip_exactly(self):
        x = 0.1 + 0.2
        assert float(canonical_json(x)) == x

    def test_negative_zero_is_zero(self):
        assert canonical_json(-0.0) == canonical_json(0.0) == "0.0"
        assert hash_json({"w": -0.0}) == hash_json({"w": 0.0})

    def test_ints_floats_and_bools_stay_distinct(self):
        spellings = {canonical_json(v) for v in (1, 1.0, True)}
        assert spellings == {"1", "1.0", "true"}

    def test_tuples_are_lists(self):
        assert canonical_json((1, 2, (3,))) == canonical_json([1, 2, [3]]) == "[1,2,[3]]"

    def test_nan_and_infinities_are_hashable_and_distinct(self):
        nan, inf = canonical_json(float("nan")), canonical_json(float("inf"))
        assert nan == canonical_json(math.nan)  # NaN != NaN as a float, but hashes as one value
        assert len({nan, inf, canonical_json(float("-inf")), canonical_json(0.0)}) == 4
        assert "NaN" not in nan and "Infinity" not in inf  # valid JSON, not Python's extension

    def test_paths_are_their_string(self):
        assert canonical_json(Path("data/x.csv")) == canonical_json("data/x.csv")

    def test_unicode_is_kept_verbatim(self):
        assert canonical_json("héllo") == '"héllo"'

    def test_numpy_scalars_hash_as_python_numbers(self):
        np = pytest.importorskip("numpy")
        assert canonical_json(np.float64(3e-4)) == canonical_json(3e-4)
        assert canonical_json(np.int64(7)) == canonical_json(7)

    @pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes", bytearray(b"x"), 1 + 2j])
    def test_an_unsupported_type_raises_type_error(self, value):
        with pytest.raises(TypeError, match="cannot hash"):
            canonical_json({"nested": [value]})

    def test_a_numpy_array_is_not_mistaken_for_a_scalar(self):
        np = pytest.importorskip("numpy")
        with pytest.raises(TypeError):
            canonical_json(np.array([1, 2]))
        with pytest.raises(TypeError):
            canonical_json(np.array([5]))  # would otherwise hash like the number 5

    def test_keys_that_spell_alike_are_refused_rather_than_dropped(self):
        # {1: "a", "1": "b"} must not hash like {"1": "b"}: that would be two values with one key
        with pytest.raises(TypeError):
            canonical_json({1: "a", "1": "b"})
        assert canonical_json({1: "a"}) == '{"1":"a"}'


# ---- files --------------------------------------------------------------------------------------------

class TestHashFile:
    def test_is_xxh3_128_of_the_bytes(self, tmp_path):
        p = tmp_path / "f.bin"
        p.write_bytes(b"hello\n")
        assert hash_file(p) == xxhash.xxh3_128_hexdigest(b"hello\n")
        assert len(hash_file(p)) == hashing.DIGEST_CHARS

    def test_empty_file(self, tmp_path):
        p = tmp_path / "empty"
        p.write_bytes(b"")
        assert hash_file(p) == xxhash.xxh3_128_hexdigest(b"")

    def test_file_larger_than_one_mebibyte(self, tmp_path):
        data = random.Random(0).randbytes(3 * 1024 * 1024 + 7)
        p = tmp_path / "big.bin"
        p.write_bytes(data)
        assert hash_file(p) == xxhash.xxh3_128_hexdigest(data)

    def test_same_as_hash_bytes(self, tmp_path):
        p = tmp_path / "t.txt"
        p.write_text("abc")
        assert hash_file(p) == hashing.hash_bytes("abc") == hashing.hash_bytes(b"abc")

    @pytest.mark.skipif(not Path("/proc/version").is_file(), reason="no /proc")
    def test_a_file_whose_size_says_0_is_read_not_taken_as_empty(self):
        assert os.stat("/proc/version").st_size == 0
        assert hash_file("/proc/version") == xxhash.xxh3_128_hexdigest(Path("/proc/version").read_bytes())
        assert hash_file("/proc/version") != xxhash.xxh3_128_hexdigest(b"")


# ---- trees --------------------------------------------------------------------------------------------

FILES = {"a.txt": "alpha", "sub/b.txt": "beta", "sub/deeper/c.bin": b"\x00\x01\x02"}


class TestHashTree:
    def test_same_content_in_two_directories_gives_the_same_digest(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        two = write(tmp_path / "two", dict(reversed(FILES.items())))  # created in another order
        assert hash_tree(one).digest == hash_tree(two).digest

    def test_changed_content_changes_it(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        two = write(tmp_path / "two", {**FILES, "sub/b.txt": "betA"})
        assert hash_tree(one).digest != hash_tree(two).digest

    def test_a_renamed_file_changes_it(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        before = hash_tree(one).digest
        (one / "a.txt").rename(one / "A.txt")
        assert hash_tree(one).digest != before

    def test_a_file_moved_to_another_folder_changes_it(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        before = hash_tree(one).digest
        (one / "a.txt").rename(one / "sub" / "a.txt")
        assert hash_tree(one).digest != before

    def test_the_executable_bit_changes_it(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        before = hash_tree(one)
        (one / "a.txt").chmod(0o755)
        after = hash_tree(one)
        assert after.digest != before.digest
        assert after.entries["a.txt"].executable and not before.entries["a.txt"].executable

    def test_other_mode_bits_and_mtime_do_not(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        before = hash_tree(one).digest
        (one / "a.txt").chmod(0o600)
        os.utime(one / "sub" / "b.txt", (1_000_000, 1_000_000))
        assert hash_tree(one).digest == before

    def test_an_empty_subdirectory_counts(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        before = hash_tree(one).digest
        (one / "empty").mkdir()
        after = hash_tree(one)
        assert after.digest != before
        assert "empty/" in after.entries

    def test_meta_json_at_the_top_is_ignored(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        before = hash_tree(one).digest
        (one / META_FILE).write_text('{"host": "anywhere"}')
        after = hash_tree(one)
        assert after.digest == before
        assert META_FILE not in after.entries

    def test_meta_json_below_the_top_is_content(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        before = hash_tree(one).digest
        (one / "sub" / META_FILE).write_text("{}")
        assert hash_tree(one).digest != before

    def test_a_single_files_digest_does_not_depend_on_its_name(self, tmp_path):
        a = tmp_path / "data.csv"
        b = tmp_path / "elsewhere" / "renamed.csv"
        b.parent.mkdir()
        a.write_text("x,y\n1,2\n")
        b.write_text("x,y\n1,2\n")
        assert hash_tree(a).digest == hash_tree(b).digest
        assert list(hash_tree(a).entries) == ["."]

    def test_a_single_files_digest_depends_on_its_content(self, tmp_path):
        a, b = tmp_path / "a", tmp_path / "b"
        a.write_text("1")
        b.write_text("2")
        assert hash_tree(a).digest != hash_tree(b).digest

    def test_a_symlink_is_hashed_by_its_target_not_followed(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        (one / "link").symlink_to("a.txt")
        tree = hash_tree(one)
        assert tree.entries["link"].link == "a.txt"
        (one / "link").unlink()
        (one / "link").symlink_to("sub/b.txt")
        assert hash_tree(one).digest != tree.digest

    def test_digests_of_ordinary_trees_and_plain_links_are_unchanged(self, tmp_path):
        # the digests before links were resolved: artifacts already in stores keep their names
        one = write(tmp_path / "one", FILES)
        assert hash_tree(one).digest == "973571b3fbd9515da3e9f98d57c4e9ed"
        (one / "a.txt").chmod(0o755)
        (one / "empty").mkdir()
        assert hash_tree(one).digest == "094da2478289758f9e1e7a9a27265bd4"
        (one / "link").symlink_to("a.txt")
        (one / "sub" / "l").symlink_to("b.txt")
        (one / "sub" / "deeper" / "up").symlink_to("../b.txt")
        assert hash_tree(one).digest == "0ea147e91eec21a0d0ef61a1fb69299f"
        assert hash_tree(one / "sub" / "b.txt").digest == "892a5376d4e98f87598efaccdc294e89"

    def test_entries_name_every_file_with_its_hash(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        tree = hash_tree(one)
        assert {k for k in tree.entries if not k.endswith("/")} == set(FILES)
        assert tree.entries["a.txt"].digest == hash_file(one / "a.txt")


class TestArtifactLinks:
    """Without follow_links (artifacts), a link is kept if it stays inside the tree, and refused otherwise."""

    def test_a_link_is_hashed_by_what_it_resolves_to_however_spelled(self, tmp_path):
        one, two = write(tmp_path / "one", FILES), write(tmp_path / "two", FILES)
        (one / "sub" / "l").symlink_to("b.txt")
        (two / "sub" / "l").symlink_to("../sub/./deeper/../b.txt")
        assert hash_tree(one).digest == hash_tree(two).digest
        assert hash_tree(two).entries["sub/l"].link == "b.txt"

    def test_a_link_to_a_link_is_hashed_by_the_final_target(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        (one / "first").symlink_to("second")
        (one / "second").symlink_to("sub/b.txt")
        assert hash_tree(one).entries["first"].link == "sub/b.txt"

    def test_a_link_to_a_folder_inside_is_kept(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        (one / "latest").symlink_to("sub", target_is_directory=True)
        assert hash_tree(one).entries["latest"].link == "sub"

    @pytest.mark.parametrize("target, why", [
        ("/etc/hostname", "absolute path"),
        ("../../outside.txt", "outside the output"),
        ("missing.txt", "does not exist"),
        ("escape", "or is a loop"),
        ("deeper/up/../outside.txt", "leads outside"),  # inside by its text, outside through deeper/up
    ])
    def test_a_link_out_of_the_tree_or_to_nothing_is_refused(self, tmp_path, target, why):
        (tmp_path / "outside.txt").write_text("not ours")
        one = write(tmp_path / "one", FILES)
        (one / "sub" / "deeper" / "up").symlink_to("../..", target_is_directory=True)
        (one / "sub" / "escape").symlink_to(target)
        with pytest.raises(Unhashable, match=why) as e:
            hash_tree(one)
        assert "copy a file rather than link to it" in str(e.value) and "output file 'sub/escape'" in str(e.value)

    def test_a_fifo_in_an_output_is_refused_without_opening_it(self, tmp_path):
        one = write(tmp_path / "one", FILES)
        os.mkfifo(one / "sub" / "pipe")
        with pytest.raises(Unhashable, match="named pipe"):
            hash_tree(one)


class TestSourceLinks:
    """With follow_links (sources), a link hashes as its target's content, as a copy would."""

    def test_a_link_hashes_like_a_copy_and_follows_edits_of_its_target(self, tmp_path):
        (tmp_path / "real.txt").write_text("v1")
        linked = write(tmp_path / "linked", FILES)
        (linked / "data.txt").symlink_to("../real.txt")
        copied = write(tmp_path / "copied", {**FILES, "data.txt": "v1"})
        assert hash_tree(linked, follow_links=True).digest == hash_tree(copied, follow_links=True).digest
        before = hash_tree(linked, follow_links=True).digest
        (tmp_path / "real.txt").write_text("v2")
        assert hash_tree(linked, follow_links=True).digest != before

    def test_a_linked_folder_is_walked(self, tmp_path):
        write(tmp_path / "shared", {"x.csv": "1"})
        one = write(tmp_path / "one", FILES)
        (one / "parts").symlink_to("../shared", target_is_directory=True)
        assert "parts/x.csv" in hash_tree(one, follow_links=True).entries

    def test_the_stat_cache_sees_an_edit_of_a_links_target(self, tmp_path, file_reads):
        (tmp_path / "real.txt").write_text("v1")
        one = write(tmp_path / "one", {"a": "a"})
        (one / "data.txt").symlink_to("../real.txt")
        cache = CountingCache()
        first = hash_tree(one, cache, follow_links=True).digest
        time.sleep(0.05)
        (tmp_path / "real.txt").write_text("v2")
        assert hash_tree(one, cache, follow_links=True).digest != first

    @pytest.mark.parametrize("make, why", [
        (lambda d: (d / "gone").symlink_to("nowhere"), "does not exist"),
        (lambda d: ((d / "a").symlink_to("b"), (d / "b").symlink_to("a")), "loop"),
        (lambda d: (d / "up").symlink_to("..", target_is_directory=True), "loop"),
        (lambda d: os.mkfifo(d / "pipe"), "named pipe"),
        (lambda d: (d / "zero").symlink_to("/dev/zero"), "character device"),
    ])
    def test_what_has_no_content_is_refused(self, tmp_path, make, why):
        one = write(tmp_path / "one", FILES)
        make(one / "sub")
        with pytest.raises(Unhashable, match=why) as e:
            hash_tree(one, follow_links=True)
        assert e.value.path.startswith(str(one / "sub")) and "regular file" in e.value.fix

    def test_a_socket_is_refused(self, tmp_path):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(tmp_path / "sock"))
            with pytest.raises(Unhashable, match="socket"):
                hash_tree(tmp_path / "sock", follow_links=True)

    @pytest.mark.skipif(not Path("/proc/version").is_file(), reason="no /proc")
    def test_a_proc_file_is_refused(self):
        with pytest.raises(Unhashable, match="proc pseudo file system"):
            hash_tree("/proc/version", follow_links=True)

    def test_pseudo_file_systems_are_found_by_device_in_mountinfo(self, tmp_path):
        info = tmp_path / "mountinfo"
        info.write_text("22 27 0:21 / /proc rw,relatime - proc proc rw\n"
                        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
                        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n")
        assert pseudo_devices(str(info)) == {os.makedev(0, 21): "proc", os.makedev(0, 38): "cgroup2"}
        assert pseudo_devices(str(tmp_path / "none")) == {}


# ---- the stat cache ----------------------------------------------------------------------------------

class TestStatCache:
    def test_second_hash_of_an_unchanged_file_is_a_cache_hit_without_reading(self, tmp_path, file_reads):
        p = tmp_path / "data.bin"
        p.write_bytes(b"payload" * 1000)
        cache = CountingCache()
        first = hash_file_cached(str(p), cache)
        assert (cache.gets, cache.puts, cache.hits, len(file_reads)) == (1, 1, 0, 1)
        second = hash_file_cached(str(p), cache)
        assert second == first
        assert (cache.gets, cache.puts, cache.hits, len(file_reads)) == (2, 1, 1, 1)  # no second read

    def test_a_whole_tree_is_not_read_again_when_unchanged(self, tmp_path, file_reads):
        one = write(tmp_path / "one", FILES)
        cache = CountingCache()
        first = hash_tree(one, cache).digest
        assert len(file_reads) == len(FILES)
        assert hash_tree(one, cache).digest == first
        assert len(file_reads) == len(FILES)
        assert cache.hits == len(FILES)

    def test_a_single_file_tree_uses_the_cache(self, tmp_path, file_reads):
        p = tmp_path / "data.csv"
        p.write_text("a,b\n")
        cache = CountingCache()
        assert hash_tree(p, cache).digest == hash_tree(p, cache).digest
        assert len(file_reads) == 1 and cache.hits == 1

    def test_a_touched_file_is_hashed_again(self, tmp_path, file_reads):
        p = tmp_path / "data.bin"
        p.write_bytes(b"same bytes")
        cache = CountingCache()
        digest = hash_file_cached(str(p), cache)
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # `touch`
        assert hash_file_cached(str(p), cache) == digest  # same content, so the same digest ...
        assert len(file_reads) == 2 and cache.hits == 0  # ... but found by reading, not trusted

    def test_a_rewritten_file_with_same_size_and_restored_mtime_is_hashed_again(self, tmp_path, file_reads):
        p = tmp_path / "weights.bin"
        p.write_bytes(b"A" * 4096)
        cache = CountingCache()
        old_digest = hash_file_cached(str(p), cache)
        before = p.stat()
        time.sleep(0.05)  # let the clock move past the first write (coarse timestamp kernels)
        with open(p, "r+b") as f:  # same inode, same size, other bytes
            f.write(b"B" * 4096)
        os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide the change from mtime
        after = p.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size,
                                                                     before.st_mtime_ns)
        assert after.st_ctime_ns != before.st_ctime_ns  # what gives it away
        new_digest = hash_file_cached(str(p), cache)
        assert new_digest != old_digest
        assert new_digest == xxhash.xxh3_128_hexdigest(b"B" * 4096)
        assert len(file_reads) == 2 and cache.hits == 0

    def test_a_replaced_file_is_hashed_again(self, tmp_path, file_reads):
        p = tmp_path / "data.bin"
        p.write_bytes(b"old!")
        cache = CountingCache()
        hash_file_cached(str(p), cache)
        st = p.stat()
        new = tmp_path / "new.bin"
        new.write_bytes(b"new!")
        os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(new, p)  # another inode under the same name
        assert hash_file_cached(str(p), cache) == xxhash.xxh3_128_hexdigest(b"new!")
        assert len(file_reads) == 2

    def test_a_file_whose_size_says_0_is_never_cached(self, tmp_path, file_reads):
        p = tmp_path / "empty"
        p.write_bytes(b"")
        cache = CountingCache()
        hash_file_cached(str(p), cache)
        hash_file_cached(str(p), cache)
        assert cache.puts == 0 and len(file_reads) == 2

    def test_without_a_cache_every_call_reads(self, tmp_path, file_reads):
        p = tmp_path / "f"
        p.write_bytes(b"x")
        hash_file_cached(str(p), None)
        hash_file_cached(str(p), None)
        assert len(file_reads) == 2
