"""A campaign of 8 short digits runs: ``--jobs 2`` against ``--jobs 1``, and Ray against the local pool.

Run: ``.venv/bin/python -m pytest benches/bench_campaign.py --benchmark-only`` from the repository
root, on an otherwise idle machine (the target is for 2 cores).

Group ``campaign: jobs 2 vs jobs 1 (8 runs)``: each round plans the same campaign afresh (8 runs of
order P, seeds 0-7, so no two share a base model and every run can go in parallel; 2 epochs of
base training and 2 of fine-tuning, digits at their native 8x8, and at 16x16) and runs it in fresh
``chaincomp campaign run`` processes, the order rotating between rounds so that a change of machine
load hits all of them: ``--jobs 1`` (in the process, torch on every core), ``--jobs 2`` (two worker
processes, cores / 2 threads each) and, at 8x8, ``--ray`` (a local Ray instance started by the
command, one CPU per run). Every run must complete, and all must record the same runs.

What bounds the ratio: ``--jobs 1`` is not one core idle; torch's intra-op threads already use both
(a 16x16 resnet20 trains 1.5x faster on two threads than on one, an 8x8 one 1.2x), so two processes
can gain at most 2 / that on top of it.

``extra_info``: median wall seconds of each, ``speedup`` (median over rounds of jobs 1 / jobs 2,
target >= 1.6 on an idle 2-core machine), ``meets_target``, and at 8x8 ``ray_overhead_s_per_run``
((ray - jobs 2) / 8, median over rounds: what a Ray task costs beyond a local worker, Ray's start
included) -- recorded, not asserted: a busy machine must not fail a run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNS = 8
TARGET_SPEEDUP = 1.6
ROUNDS = 2
PLAN = ["campaign", "plan", "--orders", "P", "--seeds", ",".join(map(str, range(RUNS))),
        "--epochs", "2", "--finetune-epochs", "2"]
ALL_WAYS = {"jobs 1": ["--jobs", "1"], "jobs 2": ["--jobs", "2"], "ray": ["--ray", "--cpus-per-run", "1"]}


def _chaincomp(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "chaincomp", *args], capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, run


@pytest.mark.benchmark(group=f"campaign: jobs 2 vs jobs 1 ({RUNS} runs)")
@pytest.mark.parametrize("image_size", [8, 16])
def test_jobs_2_against_jobs_1(benchmark, image_size: int) -> None:
    pytest.importorskip("ray")
    WAYS = ALL_WAYS if image_size == 8 else {k: v for k, v in ALL_WAYS.items() if k != "ray"}
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    accuracies: dict[str, dict[str, float]] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-campaign-"))

    def round_() -> None:
        ways = list(WAYS)
        shift = len(seconds["jobs 1"]) % len(ways)
        for way in ways[shift:] + ways[:shift]:
            folder = work / f"{way.replace(' ', '')}-{len(seconds[way])}"
            folder.mkdir()
            _, plan = _chaincomp([*PLAN, "--image-size", str(image_size), "--out", str(folder / "c.json")])
            assert plan.returncode == 0, plan.stderr
            wall, run = _chaincomp(["campaign", "run", str(folder / "c.json"), *WAYS[way], "--json"])
            assert run.returncode == 0, f"{way}: {run.stderr[-2000:]}"
            result = json.loads(run.stdout)
            assert result["complete"] == RUNS and result["failed"] == 0
            accuracies[way] = {row["name"]: row["accuracy"] for row in result["runs"]}
            seconds[way].append(wall)
            shutil.rmtree(folder)

    try:
        benchmark.pedantic(round_, rounds=ROUNDS)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert all(accuracies[way].keys() == accuracies["jobs 1"].keys() for way in WAYS)
    speedups = [one / two for one, two in zip(seconds["jobs 1"], seconds["jobs 2"])]
    benchmark.extra_info.update(
        runs=RUNS, rounds=ROUNDS, cores=os.cpu_count(), image_size=image_size,
        **{f"{way.replace(' ', '_')}_s_median": median(s) for way, s in seconds.items()},
        speedup=median(speedups), meets_target=bool(median(speedups) >= TARGET_SPEEDUP))
    if "ray" in WAYS:
        benchmark.extra_info["ray_overhead_s_per_run"] = median(
            (ray - two) / RUNS for ray, two in zip(seconds["ray"], seconds["jobs 2"]))
