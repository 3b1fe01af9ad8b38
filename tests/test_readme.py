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
    done = subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "BitOpsCR" in done.stdout
