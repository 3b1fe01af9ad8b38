"""Every file reader, fed what a user might hand it by mistake: random bytes, a valid file cut short,
a valid file with bytes changed, NaN and Infinity where numbers belong. The only acceptable outcomes
are a parsed file or one :class:`bitops.InputError` line that names the file (the CLI turns it into
exit 2); any other exception is a traceback a user would see.

The valid starting points are the project's own files (a shipped LayerTable, the shipped stage
profile, a run record written by ``trainer.record``, the paper's claims, bits and keep files), so a
mutation lands in real structure, not only in noise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitops.claims import EXAMPLES, load_claims
from bitops.errors import InputError
from bitops.files import read_bits_file, read_keep_file
from bitops.models import SHIPPED_DIR, zoo_names
from bitops.table import load_table
from simulator.profile import DEFAULT_PROFILE, load_profile
from trainer.record import read_record

BITS_FILE = b'[default]\nw_bits = 4\na_bits = 4\n\n[[layer]]\nname = "layer1.*"\nw_bits = 2\n'
KEEP_FILE = b'default = 0.8\n[groups]\n"stem.conv" = 0.5\n'
RECORD = {
    "_type": "chaincomp.RunRecord", "_version": 1, "status": "complete",
    "config": {"order": "P"}, "reference": {"model": "resnet8"},
    "stages": [{"stage": "base", "accuracy": 90.0}, {"stage": "P", "accuracy": 89.0, "config": {"ratio": 0.5}}],
}

READERS: dict[str, tuple[Callable[[Path], Any], bytes]] = {
    "table": (load_table, (SHIPPED_DIR / "resnet8-c10.json").read_bytes() if (SHIPPED_DIR / "resnet8-c10.json").exists()
              else next(SHIPPED_DIR.glob("*.json")).read_bytes()),
    "profile": (load_profile, DEFAULT_PROFILE.read_bytes()),
    "record": (read_record, json.dumps(RECORD).encode()),
    "claims": (lambda p: load_claims(p, zoo_names()), EXAMPLES["paper"].read_bytes()),
    "bits": (read_bits_file, BITS_FILE),
    "keep": (read_keep_file, KEEP_FILE),
}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read(reader: Callable[[Path], Any], path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        reader(path)
    except InputError as err:
        message = str(err)
        assert "\n" not in message.strip() and message.strip(), message
        assert str(path) in message or path.name in message, message


@pytest.mark.parametrize("name", list(READERS))
def test_the_valid_file_reads(name: str, tmp_path: Path) -> None:
    reader, valid = READERS[name]
    (tmp_path / "f").write_bytes(valid)
    reader(tmp_path / "f")


@pytest.mark.parametrize("name", list(READERS))
@FUZZ
@given(content=st.binary(max_size=512))
def test_random_bytes(name: str, content: bytes, tmp_path: Path) -> None:
    _read(READERS[name][0], tmp_path / f"{name}.in", content)


@pytest.mark.parametrize("name", list(READERS))
@FUZZ
@given(data=st.data())
def test_cut_and_mutated_valid_files(name: str, data: st.DataObject, tmp_path: Path) -> None:
    reader, valid = READERS[name]
    cut = data.draw(st.integers(0, len(valid)))
    content = bytearray(valid[:cut] if data.draw(st.booleans()) else valid)
    for _ in range(data.draw(st.integers(0, 4))):
        if content:
            content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    _read(reader, tmp_path / f"{name}.in", bytes(content))


@pytest.mark.parametrize("name", ["table", "profile", "record"])
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_are_refused(name: str, constant: str, tmp_path: Path) -> None:
    reader, valid = READERS[name]
    text = valid.decode()
    import re

    number = re.search(r'(?<=: )-?\d+(\.\d+)?', text)
    assert number is not None
    path = tmp_path / f"{name}.json"
    path.write_text(text[:number.start()] + constant + text[number.end():], encoding="utf-8")
    with pytest.raises(InputError, match=f"{constant.lstrip('-')} is not a number JSON allows"):
        reader(path)


@pytest.mark.parametrize("name", list(READERS))
def test_an_endless_file_is_refused_not_read_into_memory(name: str) -> None:
    """``/dev/zero`` never ends: a reader that reads it whole fills memory before failing."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    reader, _ = READERS[name]
    with pytest.raises(InputError, match="larger than 256 MiB"):
        reader(Path("/dev/zero"))
