"""The README's two set-up commands are the ones CI and users run; keep them in step with .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def test_readme_has_exactly_two_setup_commands_that_make_a_venv():
    commands = readme_commands()
    assert len(commands) == 2
    assert all(c.startswith("python3 -m venv .venv && .venv/bin/pip install") for c in commands)


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    test_command = readme_commands()[1]
    assert "pytest" in test_command
    assert test_command in ci_lines


def test_main_command_runs_a_chaincomp_subcommand():
    main = readme_commands()[0]
    assert ".venv/bin/chaincomp " in main


def test_main_command_succeeds():
    import shlex
    import subprocess
    import sys

    args = shlex.split(readme_commands()[0].split(".venv/bin/chaincomp ", 1)[1])
    done = subprocess.run([sys.executable, "-m", "chaincomp", *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "BitOpsCR" in done.stdout


def test_python_api_section_runs_as_written_without_torch():
    """The README's Python API block, executed in a fresh interpreter where importing torch fails."""
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.+?)\n```", section, flags=re.S)
    assert len(blocks) == 1
    blocker = ("import sys\n"
               "class _NoTorch:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
               "            raise ImportError('torch is blocked in this test')\n"
               "sys.meta_path.insert(0, _NoTorch())\n")
    done = subprocess.run([sys.executable, "-c", blocker + blocks[0]], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("BitOpsCR ") and "x, CR " in lines[0]
    assert lines[-1] == "w_bits must be an integer in 1..32, got 0"
