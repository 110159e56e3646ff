"""Specification of the content-addressed store: commit, lookup, early cutoff, dedup, damage, roots, locks."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import tempfile
import time
import traceback
from pathlib import Path

import pytest

from modelbuild.errors import USAGE, HashMismatch, StoreUnavailable, UsageError
from modelbuild.hashing import META_FILE, hash_json, hash_tree
from modelbuild.store import Store, inside, safe_name

KEY1, KEY2, KEY3 = "1" * 32, "2" * 32, "3" * 32
FILES = {"model.bin": b"\x00weights\x01" * 100, "config.json": '{"lr": 0.0003}', "sub/tokenizer.txt": "a b c"}

fork = multiprocessing.get_context("fork")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store").init()
    yield s
    s.close()


def make_out(store: Store, key: str, files: dict[str, bytes | str] = FILES) -> Path:
    """A finished build in tmp/, as a builder would leave it."""
    out = store.new_tmp(key)
    for rel, content in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    return out


def commit(store: Store, key: str, name: str = "train", files=FILES) -> Path:
    return store.commit(key, name, make_out(store, key, files), {"key": key, "step": name}, refs=[])


def flip_a_byte(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    with open(path, "r+b") as f:  # in place: same inode, same size
        f.write(data)


# ---- commit and lookup ------------------------------------------------------------------------------

def test_init_creates_the_layout(store):
    for d in ("objects", "drv", "logs", "roots", "tmp"):
        assert (store.root / d).is_dir()
    assert (store.root / "trace.sqlite").is_file()
    assert store.exists()


def test_commit_names_the_artifact_by_the_hash_of_its_content(store, tmp_path):
    expected = hash_tree(_plain_tree(tmp_path / "expected", FILES)).digest
    path = commit(store, KEY1)
    assert path == store.objects / f"{expected}-train"
    assert path.is_dir()
    assert hash_tree(path).digest == expected  # .meta.json, added beside the content, is not part of it
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert files == set(FILES) | {META_FILE}


def test_committed_files_and_folders_are_read_only(store):
    path = commit(store, KEY1)
    for p in [path, *path.rglob("*")]:
        if p.name != META_FILE:
            assert p.stat().st_mode & 0o222 == 0, f"{p} is writable"


def test_the_lineage_record_is_read_only_too(store):
    path = commit(store, KEY1)
    assert (path / META_FILE).stat().st_mode & 0o222 == 0


def test_meta_json_records_the_key_digest_and_files(store):
    path = commit(store, KEY1)
    meta = json.loads((path / META_FILE).read_text())
    assert meta["key"] == KEY1
    assert meta["digest"] == path.name[:32]
    assert meta["path"] == f"objects/{path.name}"
    assert set(meta["files"]) == set(FILES)
    assert store.meta_of(path)["key"] == KEY1


def test_lookup_returns_the_artifact_and_its_meta(store):
    path = commit(store, KEY1)
    hit = store.lookup(KEY1)
    assert hit is not None
    assert hit[0] == path and hit[1]["key"] == KEY1
    assert store.lookup(KEY2) is None


def test_the_trace_survives_reopening_the_store(store):
    path = commit(store, KEY1)
    store.close()
    again = Store(store.root)
    assert again.lookup(KEY1)[0] == path
    again.close()


def test_a_build_killed_before_its_trace_row_is_recorded_again_from_the_artifacts_own_record(store):
    from modelbuild.gc import verify

    path = commit(store, KEY1)
    own = json.loads((path / META_FILE).read_text())
    with store.db:  # killed between moving the artifact in and writing its trace row (the commit point)
        store.db.execute("DELETE FROM trace WHERE key=?", (KEY1,))
    out = make_out(store, KEY1)
    again = store.commit(KEY1, "train", out, {"key": KEY1, "step": "train", "started": 1.0}, refs=[])
    assert again == path
    assert store.lookup(KEY1)[1] == own  # the trace agrees with the .meta.json kept in objects/
    assert verify(store) == []


def test_identical_content_under_another_key_is_the_same_artifact(store):
    first = commit(store, KEY1)
    second = commit(store, KEY2)  # rebuilt (another key), same bytes: early cutoff
    assert second == first
    assert store.lookup(KEY1)[0] == first and store.lookup(KEY2)[0] == first
    assert store.keys_of(first) == [KEY1, KEY2]
    assert json.loads((first / META_FILE).read_text())["key"] == KEY1  # the lineage of the first build stays
    assert store.artifacts() == [first]


def test_different_content_is_a_different_artifact(store):
    a = commit(store, KEY1)
    b = commit(store, KEY2, files={**FILES, "config.json": '{"lr": 0.001}'})
    assert a != b and a.is_dir() and b.is_dir()


def test_identical_files_in_two_artifacts_are_one_inode(store):
    a = commit(store, KEY1)
    b = commit(store, KEY2, files={**FILES, "config.json": "other"})
    assert a != b
    sa, sb = (a / "model.bin").stat(), (b / "model.bin").stat()
    assert sa.st_ino == sb.st_ino
    assert sa.st_nlink > 1
    assert (a / "config.json").stat().st_ino != (b / "config.json").stat().st_ino


def test_commit_records_references(store):
    dep = commit(store, KEY1, name="data")
    out = make_out(store, KEY2, {"m": "model"})
    path = store.commit(KEY2, "train", out, {"key": KEY2}, refs=[dep])
    assert store.refs_of(path) == [dep]


# ---- checking and damage -----------------------------------------------------------------------------

def test_a_fresh_artifact_checks_out(store):
    path = commit(store, KEY1)
    assert store.check_artifact(path)
    assert store.check_artifact(path, deep=True)


def test_an_intact_artifact_has_no_changed_files(store):
    path = commit(store, KEY1)
    assert store.changed_files(path) == []


def test_a_flipped_byte_is_detected_and_named(store):
    path = commit(store, KEY1)
    flip_a_byte(path / "model.bin")
    assert not store.check_artifact(path)
    assert not store.check_artifact(path, deep=True)
    assert "model.bin" in store.changed_files(path)


def test_changed_files_names_only_the_damaged_file(store):
    path = commit(store, KEY1)
    flip_a_byte(path / "model.bin")
    assert store.changed_files(path) == ["model.bin"]


def test_a_damaged_file_with_restored_mtime_and_mode_is_still_detected(store):
    path = commit(store, KEY1)
    target = path / "model.bin"
    before = target.stat()
    time.sleep(0.05)
    flip_a_byte(target)
    target.chmod(stat.S_IMODE(before.st_mode))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not store.check_artifact(path)


def test_a_removed_file_is_detected(store):
    path = commit(store, KEY1)
    (path / "sub").chmod(0o755)
    (path / "sub" / "tokenizer.txt").unlink()
    assert not store.check_artifact(path)
    assert "sub/tokenizer.txt" in store.changed_files(path)


def test_quarantine_moves_a_damaged_artifact_aside_and_forgets_it(store):
    path = commit(store, KEY1)
    flip_a_byte(path / "model.bin")
    bad = store.quarantine(path)
    assert not path.exists()
    assert bad.parent == store.root / "corrupt" and bad.is_dir()
    assert (bad / "model.bin").exists()
    assert store.lookup(KEY1) is None
    assert store.artifacts() == []


def test_a_damaged_copy_is_not_reused_by_the_next_commit(store):
    path = commit(store, KEY1)
    flip_a_byte(path / "model.bin")
    again = commit(store, KEY2)  # the same content built again
    assert again == path
    assert store.check_artifact(again, deep=True)
    assert (again / "model.bin").read_bytes() == FILES["model.bin"]
    assert list((store.root / "corrupt").iterdir())  # the damaged one was moved aside


def test_commit_works_for_a_user_without_root():
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)
        error = _run_unprivileged(_commit_and_check, str(Path(d) / "store"))
        assert error is None, error


def _commit_and_check(root: str) -> None:
    s = Store(root).init()
    path = commit(s, KEY1)
    assert s.lookup(KEY1)[0] == path and s.check_artifact(path, deep=True)


def _run_unprivileged(fn, *args) -> str | None:
    """Run fn in a child process, as 'nobody' when we are root; return its error text, or None."""
    q = fork.Queue()

    def child():
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            fn(*args)
            q.put(None)
        except BaseException:
            q.put(traceback.format_exc())

    p = fork.Process(target=child)
    p.start()
    result = q.get(timeout=60)
    p.join(60)
    return result


def _plain_tree(root: Path, files) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


# ---- roots and names ------------------------------------------------------------------------------------

def test_set_root_records_it_and_links_it_under_roots(store):
    path = commit(store, KEY1)
    store.set_root("demo:train", path, KEY1)
    assert store.get_root("demo:train") == (path, KEY1)
    link = store.roots_dir / "demo" / "train"
    assert link.is_symlink()
    assert link.resolve() == path.resolve()
    assert not os.path.isabs(os.readlink(link))  # relative: the store can be moved
    assert store.get_root("demo:other") is None


def test_a_root_moves_to_the_latest_build(store):
    a = commit(store, KEY1)
    b = commit(store, KEY2, files={"x": "2"})
    store.set_root("demo:train", a, KEY1)
    store.set_root("demo:train", b, KEY2)
    assert store.get_root("demo:train") == (b, KEY2)
    assert (store.roots_dir / "demo" / "train").resolve() == b.resolve()
    assert [n for n, _, _ in store.roots()] == ["demo:train"]


def test_resolve_by_recipe_and_step(store):
    path = commit(store, KEY1)
    store.set_root("demo:train", path, KEY1)
    assert store.resolve("demo:train") == path


def test_resolve_by_tag(store):
    path = commit(store, KEY1)
    store.set_root("tag:best", path, None)
    assert store.resolve("best") == path
    assert (store.roots_dir / "tag" / "best").is_symlink()


def test_resolve_by_digest_prefix_and_by_path(store):
    path = commit(store, KEY1)
    assert store.resolve(path.name[:8]) == path
    assert store.resolve(path.name) == path
    assert store.resolve(str(path)) == path


def test_resolve_an_ambiguous_prefix_asks_for_more(store):
    (store.objects / ("abcdef01" + "0" * 24 + "-a")).mkdir()
    (store.objects / ("abcdef02" + "0" * 24 + "-b")).mkdir()
    with pytest.raises(UsageError, match="give more of the digest"):
        store.resolve("abcdef0")
    assert store.resolve("abcdef01").name.endswith("-a")


def test_resolve_an_unknown_name_is_a_usage_error_with_a_hint(store):
    path = commit(store, KEY1)
    store.set_root("demo:train", path, KEY1)
    with pytest.raises(UsageError) as e:
        store.resolve("demo:trian")
    assert e.value.exit_code == USAGE
    assert "no artifact named 'demo:trian'" in str(e.value)
    assert "did you mean 'demo:train'" in str(e.value)


def test_resolve_without_a_store_says_so(tmp_path):
    with pytest.raises(UsageError, match="there is no store"):
        Store(tmp_path / "nothing").resolve("demo:train")


# ---- locks and tmp ---------------------------------------------------------------------------------------

def _hold_lock(root: str, key: str, held, release) -> None:
    s = Store(root)
    with s.lock(key) as got:
        assert got
        held.set()
        release.wait(30)


def _hold_lock_and_die(root: str, key: str, held) -> None:
    s = Store(root)
    cm = s.lock(key)
    cm.__enter__()
    held.set()
    os._exit(0)  # no cleanup: the kernel must release the lock


def test_two_processes_cannot_hold_one_keys_lock(store):
    held, release = fork.Event(), fork.Event()
    p = fork.Process(target=_hold_lock, args=(str(store.root), KEY1, held, release))
    p.start()
    try:
        assert held.wait(30)
        with store.lock(KEY1, blocking=False) as got:
            assert got is False
        with store.lock(KEY2, blocking=False) as got:  # another key is independent
            assert got is True
    finally:
        release.set()
        p.join(30)
    assert p.exitcode == 0
    with store.lock(KEY1, blocking=False) as got:
        assert got is True


def test_a_lock_is_released_when_its_holder_dies(store):
    held = fork.Event()
    p = fork.Process(target=_hold_lock_and_die, args=(str(store.root), KEY1, held))
    p.start()
    assert held.wait(30)
    p.join(30)
    with store.lock(KEY1, blocking=False) as got:
        assert got is True


def test_a_lock_is_exclusive_within_one_process_too(store):
    with store.lock(KEY1) as got:
        assert got
        with store.lock(KEY1, blocking=False) as again:
            assert again is False


def _make_out_and_die(root: str, key: str, made) -> None:
    """A build killed mid-write: its tmp folder stays, and nothing holds it any more."""
    s = Store(root)
    made.send(str(make_out(s, key)))  # a pipe's send is written before it returns, unlike a queue's put
    os._exit(0)


def _leftover(store: Store, key: str) -> Path:
    receive, made = fork.Pipe(duplex=False)
    p = fork.Process(target=_make_out_and_die, args=(str(store.root), key, made))
    p.start()
    p.join(30)
    assert receive.poll(5)
    return Path(receive.recv())


def test_clean_tmp_removes_leftovers_and_keeps_builds_in_progress(store):
    leftover = _leftover(store, KEY1)  # a killed build: nobody holds its lock
    running = _leftover(store, KEY2)
    (leftover / "sub").chmod(0o555)  # leftovers may be partly read-only
    kept_area = store.tmp / "work"  # not a key: owned by builders (checkpoints)
    kept_area.mkdir()
    held, release = fork.Event(), fork.Event()
    p = fork.Process(target=_hold_lock, args=(str(store.root), KEY2, held, release))
    p.start()
    try:
        assert held.wait(30)
        assert store.clean_tmp() == 1
    finally:
        release.set()
        p.join(30)
    assert not leftover.exists()
    assert running.is_dir() and (running / "model.bin").exists()
    assert kept_area.is_dir()


def test_clean_tmp_keeps_a_folder_made_outside_its_keys_lock_while_its_process_lives(store):
    """`build --check` and the extra ranks of a distributed build write to tmp without the key's lock: another
    build's clean must not remove their folder mid-build (it did, and the check saw its files vanish)."""
    checking = make_out(store, KEY1)
    other = Store(store.root)
    try:
        assert other.clean_tmp() == 0
        assert (checking / "model.bin").exists()
        store.drop_tmp(checking)
        assert not checking.exists()
        dead = _leftover(store, KEY3)  # its process is gone, and so is the flock
        assert other.clean_tmp() == 1 and not dead.exists()
    finally:
        other.close()


def test_new_tmp_dirs_are_distinct_and_empty(store):
    a, b = store.new_tmp(KEY1), store.new_tmp(KEY1)
    assert a != b and a.parent == b.parent == store.tmp
    assert a.name.startswith(KEY1 + ".") and not any(a.iterdir())


# ---- the source stat cache kept in trace.sqlite ------------------------------------------------------

def test_sqlite_stat_cache_remembers_until_the_file_changes(store, tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("a,b\n1,2\n")
    cache = store.stat_cache()
    digest = hash_tree(p, cache).digest
    cache.flush()
    st = os.stat(p)
    assert store.stat_cache().get(str(p), st) is not None
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert store.stat_cache().get(str(p), os.stat(p)) is None
    assert hash_tree(p, store.stat_cache()).digest == digest


def test_drv_files_are_written_once(store):
    drv = {"a": 1}
    key = hash_json(drv)
    store.write_drv(key, drv)
    before = (store.drv_dir / f"{key}.json").stat()
    store.write_drv(key, drv)
    assert (store.drv_dir / f"{key}.json").stat().st_ino == before.st_ino
    assert store.read_drv(key) == drv
    assert store.read_drv(KEY2) is None


@pytest.mark.parametrize("damage", ["garbage{", "", '{"a": 2}', "[1, 2]"])
def test_a_damaged_drv_reads_as_none_and_is_replaced(store, damage):
    drv = {"a": 1}
    key = hash_json(drv)
    (store.drv_dir / f"{key}.json").write_text(damage)
    assert store.read_drv(key) is None
    store.write_drv(key, drv)
    assert store.read_drv(key) == drv


def test_read_drv_refuses_a_key_that_is_not_one(store):
    (store.root / "evil.json").write_text('{"a": 1}')
    assert store.read_drv("../evil") is None


def test_gc_removes_work_areas_of_killed_builds_but_not_of_running_ones(store):
    from modelbuild.gc import collect

    for key in (KEY1, KEY2):
        ckpt = store.tmp / "work" / key / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"\x00" * 4096)
    with store.lock(KEY2):  # a build of KEY2 is training now
        dry = collect(store, dry_run=True)
        assert dry.work_areas == [store.tmp / "work" / KEY1] and dry.bytes_freed >= 4096
        assert (store.tmp / "work" / KEY1).exists()
        report = collect(store)
    assert report.work_areas == [store.tmp / "work" / KEY1]
    assert not (store.tmp / "work" / KEY1).exists() and (store.tmp / "work" / KEY2 / "checkpoints").exists()


# ---- names that become paths ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/etc", "", ".hidden", "x\n", "a b", "-rf"])
def test_a_name_that_is_not_one_path_component_is_refused(name):
    with pytest.raises(UsageError, match="must be letters, digits"):
        safe_name(name, "tag name")


@pytest.mark.parametrize("name", ["prod", "v1.2", "best_model-2", "A"])
def test_plain_names_pass(name):
    assert safe_name(name) == name


@pytest.mark.parametrize("rel", ["../x", "objects/../../x", "/etc/passwd", "", None, 3])
def test_a_record_path_leading_outside_is_tampering(store, rel):
    with pytest.raises(HashMismatch):
        inside(store.root, rel, "a path")


def test_a_symlink_out_of_the_store_is_outside(store, tmp_path):
    (store.objects / ("a" * 32 + "-evil")).symlink_to(tmp_path)
    with pytest.raises(HashMismatch, match="leads outside"):
        store.object_path(f"objects/{'a' * 32}-evil", "a path")
    assert store.object_path(f"objects/{'b' * 32}-x", "a path") == store.objects / f"{'b' * 32}-x"
    with pytest.raises(HashMismatch):
        store.object_path("logs/x.log", "a path")  # in the store, but not an artifact


def test_tags_are_set_and_deleted_by_name_only(store, tmp_path):
    path = commit(store, KEY1)
    store.set_tag("best", path, KEY1)
    assert store.resolve("best") == path
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    with pytest.raises(UsageError):
        store.delete_tag("../../../victim.txt")
    with pytest.raises(UsageError):
        store.set_root("demo:../../x", path, KEY1)
    assert victim.exists()
    assert store.delete_tag("best") and not store.delete_tag("best")
    assert not (store.roots_dir / "tag" / "best").is_symlink()


def test_a_tampered_trace_path_is_never_followed(store):
    commit(store, KEY1)
    with store.db:
        store.db.execute("UPDATE trace SET path='../../etc' WHERE key=?", (KEY1,))
    with pytest.raises(HashMismatch, match="leads outside"):
        store.lookup(KEY1)


# ---- a store that cannot be written ------------------------------------------------------------------------

def test_a_store_path_that_is_a_file_is_unavailable(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnavailable, match="is a file, not a directory"):
        Store(tmp_path / "file").init()


def test_a_damaged_trace_is_a_corrupt_store(tmp_path):
    s = Store(tmp_path / "store").init()
    s.close()
    (s.root / "trace.sqlite").write_bytes(b"garbage" * 1000)
    with pytest.raises(HashMismatch, match="verify --repair"):
        Store(s.root).lookup(KEY1)


def test_a_store_the_user_may_not_write_is_read_only_for_them():
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        s = Store(Path(d) / "store").init()
        path = commit(s, KEY1)
        s.close()
        os.system(f"chmod -R a+rX {d}")
        error = _run_unprivileged(_read_but_not_write, str(s.root), str(path))
        assert error is None, error


def _read_but_not_write(root: str, path: str) -> None:
    s = Store(root)
    assert not s.writable()
    assert s.lookup(KEY1)[0] == Path(path) and s.check_artifact(Path(path))
    assert s.read_only
    with pytest.raises(StoreUnavailable, match="permission denied"):
        s.require_writable()


# ---- shared files and files a build does not own -------------------------------------------------------------

def test_a_users_hard_linked_file_is_copied_not_frozen(store, tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    os.chmod(mine, 0o644)
    out = store.new_tmp(KEY1)
    os.link(mine, out / "mine.txt")
    path = store.commit(KEY1, "x", out, {"key": KEY1}, refs=[])
    assert stat.S_IMODE(mine.stat().st_mode) == 0o644
    assert mine.stat().st_nlink == 1 and (path / "mine.txt").read_text() == "mine"


def test_one_rebuild_heals_every_artifact_sharing_a_damaged_file(store):
    a = commit(store, KEY1)
    b = commit(store, KEY2, files={**FILES, "config.json": "other"})
    flip_a_byte(a / "model.bin")  # the same inode in b
    assert not store.check_artifact(b, deep=True)
    store.quarantine(a)
    again = commit(store, KEY3)  # a's content, rebuilt
    assert again == a and store.check_artifact(a, deep=True)
    assert store.check_artifact(b, deep=True)
    assert (b / "model.bin").stat().st_ino == (a / "model.bin").stat().st_ino
    assert not list(store.links.glob("*.damaged"))


def test_resolve_takes_paths_into_objects_only(store, tmp_path, monkeypatch):
    path = commit(store, KEY1)
    store.set_root("tag:best", path, KEY1)
    monkeypatch.chdir(tmp_path)
    for name in (str(path), f"objects/{path.name}", f"objects/{path.name[:8]}", str(store.roots_dir / "tag" / "best")):
        assert store.resolve(name) == path, name
    copy = tmp_path / "elsewhere" / path.name
    copy.mkdir(parents=True)
    for name in (str(copy), "objects/.links", "../../etc", "/etc"):
        with pytest.raises(UsageError, match="is not an artifact of the store"):
            store.resolve(name)
