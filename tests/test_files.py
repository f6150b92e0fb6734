"""Folders put in place in one step: replace_dir, place_new_dir, staging_dir, delete_dir."""

import errno
import os
from pathlib import Path

import pytest

from core.store import files
from core.store.files import delete_dir, place_new_dir, replace_dir, staging_dir


def folder(path: Path, content: str) -> Path:
    """A small 'model' folder: two files that must always be found together."""
    path.mkdir()
    (path / "config.json").write_text(content)
    (path / "weights.bin").write_text(content * 3)
    return path


def content(path: Path) -> str:
    """The folder's content, checked to be complete (both files, from the same version)."""
    text = (path / "config.json").read_text()
    assert (path / "weights.bin").read_text() == text * 3, "a half-replaced folder"
    return text


@pytest.fixture(params=["exchange", "two renames"])
def swap(request, monkeypatch, tmp_path_factory):
    """Run a test with Linux's atomic exchange and with the two-rename fallback used elsewhere."""
    if request.param == "exchange":
        probe = tmp_path_factory.mktemp("probe")
        (probe / "a").mkdir()
        (probe / "b").mkdir()
        if not files._exchange(probe / "a", probe / "b"):
            pytest.skip("no atomic exchange on this system")
    else:
        monkeypatch.setattr(files, "_exchange", lambda first, second: False)
    return request.param


def fail_on_call(monkeypatch, number: int, error: BaseException) -> list[tuple[str, str]]:
    """Make the `number`-th os.rename raise `error` (a failure, or a crash when it is not an
    Exception); return the list of the renames asked for."""
    calls: list[tuple[str, str]] = []
    real = os.rename

    def rename(source, target):
        calls.append((str(source), str(target)))
        if len(calls) == number:
            raise error
        real(source, target)

    monkeypatch.setattr(files.os, "rename", rename)
    return calls


def test_replace_dir_replaces_an_existing_folder(tmp_path, swap):
    target = folder(tmp_path / "merged", "old")
    with staging_dir(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".merged.")
        assert not any(staging.iterdir())
        (staging / "config.json").write_text("new")
        (staging / "weights.bin").write_text("new" * 3)
        replace_dir(staging, target)
    assert content(target) == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # nothing hidden left behind


def test_replace_dir_puts_a_folder_where_there_was_none(tmp_path, swap):
    staging = folder(tmp_path / ".adapter.1234.partial", "first")
    replace_dir(staging, tmp_path / "adapter")
    assert content(tmp_path / "adapter") == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_a_missing_staging_folder_changes_nothing(tmp_path, swap):
    target = folder(tmp_path / "merged", "old")
    with pytest.raises(FileNotFoundError):
        replace_dir(tmp_path / ".merged.gone.partial", target)
    assert content(target) == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


@pytest.mark.parametrize("error", [OSError(errno.EIO, "I/O error"), KeyboardInterrupt("killed in between")])
def test_a_failure_between_the_two_renames_puts_the_old_folder_back(tmp_path, monkeypatch, error):
    monkeypatch.setattr(files, "_exchange", lambda first, second: False)
    target = folder(tmp_path / "merged", "old")
    staging = folder(tmp_path / ".merged.1234.partial", "new")
    calls = fail_on_call(monkeypatch, 2, error)  # the first rename sets the old folder aside
    with pytest.raises(type(error)):
        replace_dir(staging, target)
    assert calls[0][0] == str(target) and calls[1] == (str(staging), str(target))
    assert content(target) == "old"  # complete, under its own name
    assert content(staging) == "new"  # the staging folder is the caller's to delete (staging_dir does)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".merged.1234.partial", "merged"]


def test_without_exchange_the_folder_set_aside_is_hidden_and_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_exchange", lambda first, second: False)
    target = folder(tmp_path / "merged", "old")
    seen: list[list[str]] = []
    real = os.rename

    def rename(source, destination):  # what the folder holds between the two renames
        real(source, destination)
        seen.append(sorted(p.name for p in tmp_path.iterdir()))

    monkeypatch.setattr(files.os, "rename", rename)
    replace_dir(folder(tmp_path / ".merged.1234.partial", "new"), target)
    assert all(name.startswith(".") for name in seen[0])  # the old folder set aside under a hidden name
    assert content(target) == "new" and [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_a_crash_after_the_swap_leaves_the_new_folder_and_a_hidden_leftover(tmp_path, monkeypatch, swap):
    def crash(path):
        raise KeyboardInterrupt("killed before the old folder was deleted")

    monkeypatch.setattr(files, "_remove", crash)
    target = folder(tmp_path / "merged", "old")
    with pytest.raises(KeyboardInterrupt):
        replace_dir(folder(tmp_path / ".merged.1234.partial", "new"), target)
    assert content(target) == "new"
    leftovers = [p for p in tmp_path.iterdir() if p.name != "merged"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".") and content(leftovers[0]) == "old"


def test_on_linux_the_swap_is_one_step_with_no_moment_without_the_target(tmp_path, monkeypatch):
    if files._renameat2() is None:
        pytest.skip("no renameat2 here: the two-rename fallback has a moment without the target")
    calls = fail_on_call(monkeypatch, 1, KeyboardInterrupt("no rename may be needed"))
    target = folder(tmp_path / "merged", "old")
    replace_dir(folder(tmp_path / ".merged.1234.partial", "new"), target)
    assert calls == [] and content(target) == "new"


def test_staging_dir_deletes_what_a_failed_build_left(tmp_path):
    target = tmp_path / "cache" / "tiny"
    with pytest.raises(RuntimeError), staging_dir(target) as staging:
        (staging / "half.bin").write_text("half")
        raise RuntimeError("the build failed")
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("renameat2", [True, False])
def test_place_new_dir_never_replaces_what_is_there(tmp_path, monkeypatch, renameat2):
    if not renameat2:
        monkeypatch.setattr(files, "_rename_with", lambda flag, source, target: False)
    elif files._renameat2() is None:
        pytest.skip("no renameat2 here")
    staging = folder(tmp_path / ".run.1234.partial", "mine")
    assert place_new_dir(staging, tmp_path / "run")
    assert content(tmp_path / "run") == "mine" and not staging.exists()
    other = folder(tmp_path / ".run.5678.partial", "theirs")
    assert not place_new_dir(other, tmp_path / "run")
    monkeypatch.setattr(files.os.path, "lexists", lambda path: False)  # the run appears after the check
    assert not place_new_dir(other, tmp_path / "run")
    assert content(tmp_path / "run") == "mine" and content(other) == "theirs"
    (tmp_path / "empty").mkdir()
    if renameat2:  # even an empty folder stays; a plain rename would replace it
        assert not place_new_dir(other, tmp_path / "empty")
        assert content(other) == "theirs" and not any((tmp_path / "empty").iterdir())


def test_delete_dir_takes_the_folder_away_first(tmp_path, monkeypatch):
    target = folder(tmp_path / "run", "x")
    delete_dir(target)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        delete_dir(target)

    def crash(path):
        raise KeyboardInterrupt("killed while deleting")

    monkeypatch.setattr(files, "_remove", crash)
    target = folder(tmp_path / "run", "x")
    with pytest.raises(KeyboardInterrupt):
        delete_dir(target)
    assert [p.name.startswith(".run.") for p in tmp_path.iterdir()] == [True]  # hidden, not half a run
