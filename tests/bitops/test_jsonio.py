"""Output checks made before any work, and the atomic writer (bitops.jsonio)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bitops.errors import InputError
from bitops.jsonio import MAX_NAME_BYTES, check_plot, check_writable, read_json, write_checked


def test_a_name_longer_than_a_file_system_takes_is_refused(tmp_path: Path) -> None:
    check_writable("out", tmp_path / ("a" * (MAX_NAME_BYTES - 5) + ".json"))  # 255 bytes: fine
    with pytest.raises(InputError, match=r"^out: the file name .* is 256 bytes long; at most 255"):
        check_writable("out", tmp_path / ("a" * (MAX_NAME_BYTES - 4) + ".json"))


def test_the_longest_name_is_written_atomically(tmp_path: Path) -> None:
    # The temporary file beside it must fit the same limit, so its stem is cut, not the target's name.
    target = tmp_path / ("b" * (MAX_NAME_BYTES - 5) + ".json")
    write_checked("out", target, lambda tmp: tmp.write_text("{}", encoding="utf-8"))
    assert read_json(target, "out") == {}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_directory_that_cannot_be_written_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root passes chmod checks, so the refusal of the file system is stood in for by os.access.
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    with pytest.raises(InputError, match=r"^plot: cannot write .* is not writable"):
        check_writable("plot", tmp_path / "f.png")


@pytest.mark.parametrize("name", ["fronts.xyz", "plotfile", "plot.png.json"])
def test_a_plot_must_name_a_format(name: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^plot: .* must end in \.png, \.pdf, \.svg"):
        check_plot("plot", tmp_path / name)
    check_plot("plot", tmp_path / "fronts.PNG")


def test_an_os_error_while_writing_names_the_field(tmp_path: Path) -> None:
    def fail(_tmp: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match=r"^out: cannot write .*No space left on device"):
        write_checked("out", tmp_path / "r.json", fail)
    assert list(tmp_path.iterdir()) == []


def test_a_lock_left_by_a_dead_writer_is_taken_over_and_removed(tmp_path: Path) -> None:
    from bitops.jsonio import hold_lock

    out = tmp_path / "run.json"
    (tmp_path / ".run.json.lock").write_text("99999999", encoding="utf-8")  # no process holds it
    with hold_lock("out", out):
        assert (tmp_path / ".run.json.lock").read_text(encoding="utf-8") == str(os.getpid())
        with pytest.raises(InputError, match=rf"^out '.*run\.json' is being written by process {os.getpid()}"):
            with hold_lock("out", out):
                pass  # a second writer, even in the same process, is refused
    assert list(tmp_path.iterdir()) == []


def test_a_folder_named_dot_or_empty_is_locked_beside_it(tmp_path, monkeypatch):
    from bitops.jsonio import hold_lock

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path / "runs")
    for name in (".", "", "../runs"):  # all the same folder: one lock, beside it
        with hold_lock("out_dir", name):
            assert (tmp_path / ".runs.lock").exists()
            with pytest.raises(InputError, match="is being written by process"):
                with hold_lock("out_dir", tmp_path / "runs"):
                    pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_lock_that_cannot_be_created_is_one_line(tmp_path):
    from bitops.jsonio import hold_lock

    if os.geteuid() == 0:  # root writes into read-only folders: use a path under a file instead
        target = tmp_path / "file" / "runs"
        (tmp_path / "file").write_text("x", encoding="utf-8")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        target = tmp_path / "ro" / "runs"
    with pytest.raises(InputError, match="^out_dir: cannot create the lock"):
        with hold_lock("out_dir", target):
            pass
