"""Campaigns: the file format, plans, the prefix tree, and real runs on every executor.

Expected values come from elsewhere than the campaign code: counts of runs from the shell recipe
the plan replaces (``scripts/make_default_profile.sh``'s loops) and from closed forms over the
orders; trained numbers from ``chaincomp train`` run alone (``trainer.chain.run_chain``) and from
the other executors.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bitops.errors import InputError
from trainer import campaign as campaign_module
from trainer import executors
from trainer.campaign import PlanRequest, plan_runs, prefix_key, prefix_tree, stage_trainings
from trainer.campaign_format import read_campaign
from tests.simulator.fitting import run_cli
from trainer.options import TrainingOptions, chain_config

FAST = ["--epochs", "1", "--distill-epochs", "1", "--finetune-epochs", "1", "--exit-epochs", "1", "--image-size", "8"]
FAST_OPTIONS = TrainingOptions(epochs=1, distill_epochs=1, finetune_epochs=1, exit_epochs=1, image_size=8)


def one_line_error(rc: int, stdout: str, stderr: str) -> str:
    assert rc == 2 and stdout == "", (rc, stdout, stderr)
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    return stderr


# -------------------------------------------------------------------------------- plans, counted

def test_pairs_plan_the_recipes_27_runs_a_seed() -> None:
    # scripts/make_default_profile.sh, step 2: 3 runs with D later, 3 with E later, 3 firsts x 3
    # ratios with P later, 3 firsts x 4 bits with Q later.
    campaign = plan_runs(PlanRequest(TrainingOptions(), seeds=(0, 1), pairs="DPQE"))
    assert len(campaign.runs) == 2 * (3 + 3 + 3 * 3 + 3 * 4)
    orders = {run.config.order for run in campaign.runs}
    assert orders == {a + b for a, b in itertools.permutations("DPQE", 2)}
    ratios = {run.config.prune.ratio for run in campaign.runs if run.config.order.endswith("P")}
    assert ratios == {0.25, 0.5, 0.75}
    # the earlier method stays at the options' value
    assert {run.config.prune.ratio for run in campaign.runs if run.config.order.startswith("P")} == {0.5}


def test_single_triples_and_orders() -> None:
    campaign = plan_runs(PlanRequest(TrainingOptions(), single="DPQE", triples=("DPQ", "DQP"),
                                     triple_grids={"Q": (1, 2, 8)}, orders=("PQ", "DPQE")))
    by_order: dict[str, int] = {}
    for run in campaign.runs:
        by_order[run.config.order] = by_order.get(run.config.order, 0) + 1
    # D one student, P 3 ratios, Q 4 bits, E one run measuring every threshold; the triples over
    # 3 ratios x 3 bits (the recipe's step 4); PQ at the options' values (0.5, 1 bit) is also a
    # distinct run from anything else planned.
    assert by_order == {"D": 1, "P": 3, "Q": 4, "E": 1, "DPQ": 9, "DQP": 9, "PQ": 1, "DPQE": 1}
    e_run = next(run for run in campaign.runs if run.config.order == "E")
    assert e_run.config.exits.thresholds == TrainingOptions().thresholds
    assert len({run.record for run in campaign.runs}) == len(campaign.runs)


def test_a_run_planned_twice_is_kept_once() -> None:
    campaign = plan_runs(PlanRequest(TrainingOptions(), single="P", orders=("P",)))
    assert [run.name for run in campaign.runs] == ["P-p0.25-s0", "P-p0.5-s0", "P-p0.75-s0"]


def test_all_24_orders_train_64_stages_and_one_base_instead_of_96_and_24() -> None:
    runs = plan_runs(PlanRequest(TrainingOptions(), orders=tuple("".join(p) for p in itertools.permutations("DPQE"))))
    counts = stage_trainings(runs.runs)
    # distinct prefixes of length k among the orders of 4 letters: 4!/(4-k)!
    assert counts["stages"] == sum(math.perm(4, k) for k in range(1, 5)) == 64
    assert counts == {"runs": 24, "base": 1, "stages": 64, "base_unshared": 24, "stages_unshared": 96}


def test_prefixes_depend_on_what_comes_before_only() -> None:
    low = chain_config("DPQ", TrainingOptions(prune_ratio=0.25))
    high = chain_config("DPQ", TrainingOptions(prune_ratio=0.75))
    assert prefix_key(low, 1) == prefix_key(high, 1)  # D is the same stage in both
    assert prefix_key(low, 2) != prefix_key(high, 2)
    other_seed = chain_config("DPQ", TrainingOptions(prune_ratio=0.25, seed=1))
    assert prefix_key(low, 0) != prefix_key(other_seed, 0)
    # E's thresholds are measured after every later stage: they belong to E's prefix
    e1 = chain_config("EP", TrainingOptions(thresholds=(0.5, 0.9)))
    e2 = chain_config("EP", TrainingOptions(thresholds=(0.6, 0.9)))
    assert prefix_key(e1, 0) == prefix_key(e2, 0) and prefix_key(e1, 1) != prefix_key(e2, 1)
    nodes, paths = prefix_tree(plan_runs(PlanRequest(TrainingOptions(), orders=("DP", "DQ", "PD"))).runs)
    assert len(nodes) == 1 + 2 + 3  # base; D, P; DP, DQ, PD
    assert paths["DP-p0.5-s0"][:2] == paths["DQ-q1-s0"][:2]


# --------------------------------------------------------------------------- bad input, one line

def test_plan_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    out = str(tmp_path / "c.json")
    cases = {
        ("--single", "PX"): "--single must be distinct letters",
        ("--orders", "DXP"): "--orders: an order must use the letters",
        ("--triples", "DP"): "--triples must be orders of three",
        ("--single", "P", "--grid", "P=2"): "--grid: P=2.0 is refused",
        ("--single", "P", "--grid", "Z=1"): "--grid must be METHOD=V",
        ("--single", "P", "--seeds", "0,0"): "--seeds must list distinct seeds",
        ("--single", "P", "--grid", "P=0.99", "--teacher", "resnet8"): "(in the planned run P-p0.99-s0)",
        (): "nothing to plan",
    }
    for args, expected in cases.items():
        err = one_line_error(*run_cli(["campaign", "plan", "--out", out, *args]))
        assert expected in err, (args, err)
        assert not Path(out).exists()


BAD_FILES: dict[str, tuple[Any, str]] = {
    "not json": ("{", "not valid JSON"),
    "other type": ({"_type": "chaincomp.RunRecord", "_version": 1}, "not a chaincomp campaign"),
    "version": ({"_type": "chaincomp.Campaign", "_version": 2, "runs": []}, "_version must be 1"),
    "no runs": ({"_type": "chaincomp.Campaign", "_version": 1, "runs": []}, "runs must list at least one run"),
    "unknown field": ({"_type": "chaincomp.Campaign", "_version": 1, "runz": []}, "unknown field 'runz'"),
    "outside": ({"_type": "chaincomp.Campaign", "_version": 1,
                 "runs": [{"name": "a", "record": "../a.json", "config": {"order": "P"}}]}, "must stay inside"),
    "absolute": ({"_type": "chaincomp.Campaign", "_version": 1,
                  "runs": [{"name": "a", "record": "/tmp/a.json", "config": {"order": "P"}}]}, "must stay inside"),
    "twice": ({"_type": "chaincomp.Campaign", "_version": 1,
               "runs": [{"name": "a", "record": "a.json", "config": {"order": "P"}},
                        {"name": "a", "record": "b.json", "config": {"order": "Q"}}]}, "two runs have the name 'a'"),
    "bad value": ({"_type": "chaincomp.Campaign", "_version": 1,
                   "runs": [{"name": "a", "record": "a.json", "config": {"order": "P", "prune": {"ratio": 1.5}}}]},
                  "runs[0].config: prune.ratio must be in [0, 1), got 1.5"),
    "typo": ({"_type": "chaincomp.Campaign", "_version": 1,
              "runs": [{"name": "a", "record": "a.json", "config": {"order": "P", "prune": {"rato": 0.5}}}]},
             "unknown field 'rato'"),
    "no order": ({"_type": "chaincomp.Campaign", "_version": 1,
                  "runs": [{"name": "a", "record": "a.json", "config": {"seed": 1}}]}, "'order' is required"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_campaign_files_are_refused_in_one_line(case: str, tmp_path: Path) -> None:
    content, expected = BAD_FILES[case]
    path = tmp_path / "c.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    err = one_line_error(*run_cli(["campaign", "run", str(path)]))
    assert expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_run_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    assert run_cli(["campaign", "plan", "--out", str(path), "--orders", "P"])[0] == 0
    for args, expected in ((["--jobs", "0"], "--jobs must be an integer >= 1"),
                           (["--retries", "-1"], "--retries must be an integer >= 0"),
                           (["--threads-per-run", "0"], "--threads-per-run must be an integer >= 1"),
                           (["--ray", "--jobs", "2"], "--jobs 2 is for the local pool")):
        assert expected in one_line_error(*run_cli(["campaign", "run", str(path), *args]))
    with pytest.raises(InputError, match="address 'auto' is for Ray"):
        campaign_module.run(path, address="auto")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_the_plan_file_reads_back_as_planned(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    rc, stdout, _ = run_cli(["campaign", "plan", "--out", str(path), "--pairs", "PQ", "--seeds", "0,3", *FAST, "--json"])
    assert rc == 0
    printed = json.loads(stdout)
    campaign = read_campaign(path)
    assert [run.to_json() for run in campaign.runs] == printed["runs"]
    assert all(run.config.base.epochs == 1 and run.config.data.image_size == 8 for run in campaign.runs)
    assert {run.config.seed for run in campaign.runs} == {0, 3}
    assert {run.config.data.seed for run in campaign.runs} == {0, 3}  # the seed moves the splits too
    assert printed["trainings"]["runs"] == len(campaign.runs) == 2 * (3 + 4)


# ----------------------------------------------------------------------------------- real runs

SMALL = ["--single", "P", "--grid", "P=0.25,0.5", "--orders", "DP,DPQ,PD", *FAST]


def _stages(record: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What a run measured, stage by stage: accuracy, exit rates and costs (no wall times)."""
    return [(s["stage"], s["accuracy"], s["val_accuracy"], json.dumps(s.get("exit"), sort_keys=True),
             json.dumps({k: v for k, v in s["cost"].items()}, sort_keys=True)) for s in record["stages"]]


def _records(folder: Path) -> dict[str, list[tuple[Any, ...]]]:
    return {p.stem: _stages(json.loads(p.read_text(encoding="utf-8"))) for p in sorted((folder / "runs").glob("*.json"))}


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small campaign run in this process, one torch thread per training."""
    folder = tmp_path_factory.mktemp("serial")
    assert run_cli(["campaign", "plan", "--out", str(folder / "c.json"), *SMALL])[0] == 0
    rc, stdout, err = run_cli(["campaign", "run", str(folder / "c.json"), "--threads-per-run", "1", "--json"])
    assert rc == 0, err
    (folder / "result.json").write_text(stdout, encoding="utf-8")
    return folder


@pytest.mark.slow
def test_shared_prefixes_train_once_and_runs_say_where_they_started(serial: Path) -> None:
    result = json.loads((serial / "result.json").read_text(encoding="utf-8"))
    # base; P 0.25, P 0.5, D; DP, PD; DPQ
    assert result["trainings"] == {"trained": 7, "from_cache": 0, "runs": 5, "base": 1, "stages": 6,
                                   "base_unshared": 5, "stages_unshared": 1 + 1 + 2 + 3 + 2}
    rows = {row["name"]: row for row in result["runs"]}
    assert {row["status"] for row in rows.values()} == {"complete"}
    record = json.loads((serial / "runs" / "DPQ-p0.5-q1-s0.json").read_text(encoding="utf-8"))
    assert record["campaign"]["started_from"] == "DP" and record["status"] == "complete"
    assert [s["stage"] for s in record["stages"]] == ["base", "D", "P", "Q"]
    assert rows["PD-p0.5-s0"]["started_from"] == "P"
    assert (serial / "runs" / "DPQ-p0.5-q1-s0.pt").exists()
    assert not (serial / "c.prefixes").exists()  # removed once every run is complete


@pytest.mark.slow
def test_a_run_from_a_shared_prefix_equals_the_run_trained_alone(serial: Path, tmp_path: Path) -> None:
    """chaincomp train of the same configuration, on its own (its own base, no campaign)."""
    from trainer.chain import run_chain

    config = read_campaign(serial / "c.json").runs[3].config
    assert config.order == "DPQ"
    alone = run_chain(config, tmp_path / "alone.json")
    campaign_record = json.loads((serial / "runs" / "DPQ-p0.5-q1-s0.json").read_text(encoding="utf-8"))
    assert _stages(alone) == _stages(campaign_record)
    assert campaign_record["config"] == alone["config"]


@pytest.mark.slow
def test_jobs_2_gives_the_same_records(serial: Path, tmp_path: Path) -> None:
    assert run_cli(["campaign", "plan", "--out", str(tmp_path / "c.json"), *SMALL])[0] == 0
    rc, _, err = run_cli(["campaign", "run", str(tmp_path / "c.json"), "--jobs", "2", "--threads-per-run", "1"])
    assert rc == 0, err
    assert _records(tmp_path) == _records(serial)
    # the progress line counts the runs in training once the freed slot has its next work: both slots busy
    progress = [line for line in err.splitlines() if line.startswith("campaign: ")]
    assert any(" 2 running," in line for line in progress), progress


@pytest.mark.slow
def test_ray_gives_the_same_records(serial: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    assert run_cli(["campaign", "plan", "--out", str(tmp_path / "c.json"), *SMALL])[0] == 0
    result = campaign_module.run_campaign(read_campaign(tmp_path / "c.json"), tmp_path / "c.json",
                                          executors.Execution(ray=True, threads_per_run=1).executor(ray_cpus=2))
    assert result.data["executor"]["kind"] == "ray" and result.data["failed"] == 0
    assert _records(tmp_path) == _records(serial)
    assert not list((tmp_path / "runs").glob("*.pt"))  # checkpoints stay with Ray's workers


@pytest.mark.slow
def test_a_ray_cluster_of_several_nodes_gives_the_same_records(serial: Path, tmp_path: Path) -> None:
    """Past one machine, simulated on this one: Ray's test cluster starts a head node with no CPUs
    (the driver's) and two worker nodes with one CPU each, each its own raylet and object store.
    Every training runs off the driver's node, its record comes back through Ray, and a checkpoint
    reaches the task that extends it wherever that runs: the records equal the serial run's."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    assert run_cli(["campaign", "plan", "--out", str(tmp_path / "c.json"), *SMALL])[0] == 0
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        executor = executors.Execution(ray=True, address=cluster.address, threads_per_run=1).executor()
        try:
            nodes = [n for n in ray.nodes() if n["Alive"]]
            assert len(nodes) == 3 and sorted(n["Resources"].get("CPU", 0) for n in nodes) == [0, 1, 1]
            assert executor.slots == 2
            result = campaign_module.run_campaign(read_campaign(tmp_path / "c.json"), tmp_path / "c.json", executor)
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()
    assert result.data["executor"]["kind"] == "ray" and result.data["failed"] == 0
    assert _records(tmp_path) == _records(serial)
    assert not list((tmp_path / "runs").glob("*.pt"))  # checkpoints stayed with the workers


@pytest.mark.slow
def test_an_interrupted_campaign_continues_where_it_stopped(serial: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.json"
    assert run_cli(["campaign", "plan", "--out", str(path), *SMALL])[0] == 0
    trained: list[int] = []
    original = executors.train_node

    def interrupted_after_four(config: dict[str, Any], stages: int, parent: Any, threads: int) -> Any:
        if len(trained) == 4:
            raise KeyboardInterrupt
        trained.append(stages)
        return original(config, stages, parent, threads)

    monkeypatch.setattr(executors, "train_node", interrupted_after_four)
    rc, _, err = run_cli(["campaign", "run", str(path), "--threads-per-run", "1"])
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    kept = sorted(p.stem for p in (tmp_path / "runs").glob("*.json"))
    assert kept and len(kept) < 5  # some runs finished, not all
    assert list((tmp_path / "c.prefixes").glob("*.pt"))  # and the shared prefixes trained so far are kept
    monkeypatch.setattr(executors, "train_node", original)
    rc, stdout, err = run_cli(["campaign", "run", str(path), "--threads-per-run", "1", "--json"])
    assert rc == 0, err
    result = json.loads(stdout)
    assert result["skipped"] == len(kept) and result["trainings"]["from_cache"] >= 1
    assert result["trainings"]["trained"] + len(trained) == 7  # nothing was trained twice
    assert _records(tmp_path) == _records(serial)  # the same numbers as the uninterrupted campaign


@pytest.mark.slow
def test_a_failing_run_is_retried_then_reported(tmp_path: Path) -> None:
    """A CIFAR-10 run whose data folder does not exist fails in the worker, every time."""
    path = tmp_path / "c.json"
    assert run_cli(["campaign", "plan", "--out", str(path), "--orders", "P", *FAST])[0] == 0
    data = json.loads(path.read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(data["runs"][0]))
    broken.update(name="broken", record="runs/broken.json")
    broken["config"]["data"].update(dataset="cifar10", data_dir=str(tmp_path / "no-such-folder"))
    data["runs"].append(broken)
    path.write_text(json.dumps(data), encoding="utf-8")
    rc, stdout, err = run_cli(["campaign", "run", str(path), "--retries", "2", "--json"])
    assert rc == 1  # the campaign ran; a run failed
    assert err.count("trying again") == 2
    rows = {row["name"]: row for row in json.loads(stdout)["runs"]}
    assert rows["P-p0.5-s0"]["status"] == "complete"
    assert rows["broken"]["status"] == "failed" and "after 3 tries" in rows["broken"]["error"]
    assert "no-such-folder" in rows["broken"]["error"]
    assert not (tmp_path / "runs" / "broken.json").exists()  # its base never finished: nothing to record


@pytest.mark.slow
def test_a_training_that_fails_once_is_retried_and_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.json"
    assert run_cli(["campaign", "plan", "--out", str(path), "--orders", "DP", *FAST])[0] == 0
    original = executors.train_node
    failures: list[int] = []

    def flaky(config: dict[str, Any], stages: int, parent: Any, threads: int) -> Any:
        if stages == 2 and not failures:
            failures.append(stages)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return original(config, stages, parent, threads)

    monkeypatch.setattr(executors, "train_node", flaky)
    rc, _, err = run_cli(["campaign", "run", str(path)])
    assert rc == 0, err
    assert "P of DP-p0.5-s0 failed (RuntimeError: CUDA error" in err and "trying again (1 of 1 retries)" in err
    record = json.loads((tmp_path / "runs" / "DP-p0.5-s0.json").read_text(encoding="utf-8"))
    assert record["status"] == "complete" and [s["stage"] for s in record["stages"]] == ["base", "D", "P"]


@pytest.mark.slow
def test_a_record_of_other_settings_is_refused_before_anything_trains(serial: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    assert run_cli(["campaign", "plan", "--out", str(path), *SMALL])[0] == 0
    (tmp_path / "runs").mkdir()
    record = json.loads((serial / "runs" / "PD-p0.5-s0.json").read_text(encoding="utf-8"))
    record["config"]["prune"]["ratio"] = 0.75
    text = json.dumps(record)
    (tmp_path / "runs" / "PD-p0.5-s0.json").write_text(text, encoding="utf-8")
    err = one_line_error(*run_cli(["campaign", "run", str(path)]))
    assert "'PD-p0.5-s0'" in err and "other settings" in err and "prune.ratio: 0.75 -> 0.5" in err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["PD-p0.5-s0.json"]
    assert (tmp_path / "runs" / "PD-p0.5-s0.json").read_text(encoding="utf-8") == text


@pytest.mark.slow
def test_a_complete_campaign_runs_nothing_again(serial: Path) -> None:
    rc, stdout, err = run_cli(["campaign", "run", str(serial / "c.json"), "--json"])
    assert rc == 0, err
    result = json.loads(stdout)
    assert result["skipped"] == 5 and result["trainings"]["trained"] == 0


@pytest.mark.slow
def test_a_stage_that_always_fails_leaves_a_failed_record_of_what_finished(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.json"
    assert run_cli(["campaign", "plan", "--out", str(path), "--orders", "DP,D", *FAST])[0] == 0
    original = executors.train_node
    tries: list[int] = []

    def p_always_fails(config: dict[str, Any], stages: int, parent: Any, threads: int) -> Any:
        if stages == 2:
            tries.append(stages)
            raise MemoryError("out of memory")
        return original(config, stages, parent, threads)

    monkeypatch.setattr(executors, "train_node", p_always_fails)
    rc, stdout, err = run_cli(["campaign", "run", str(path), "--retries", "1", "--json"])
    assert rc == 1 and len(tries) == 2 and "Traceback" not in err
    rows = {row["name"]: row for row in json.loads(stdout)["runs"]}
    assert rows["D-s0"]["status"] == "complete"  # D is DP's prefix and a run of its own
    assert rows["DP-p0.5-s0"]["status"] == "failed" and "MemoryError: out of memory" in rows["DP-p0.5-s0"]["error"]
    record = json.loads((tmp_path / "runs" / "DP-p0.5-s0.json").read_text(encoding="utf-8"))
    assert record["status"] == "failed" and "MemoryError" in record["error"]
    assert [s["stage"] for s in record["stages"]] == ["base", "D"]
    assert list((tmp_path / "c.prefixes").glob("*.pt"))  # kept: the next run starts at P
    monkeypatch.setattr(executors, "train_node", original)
    rc, stdout, _ = run_cli(["campaign", "run", str(path), "--json"])
    result = json.loads(stdout)
    assert rc == 0 and result["trainings"]["trained"] == 1 and result["trainings"]["from_cache"] == 2
    assert json.loads((tmp_path / "runs" / "DP-p0.5-s0.json").read_text(encoding="utf-8"))["status"] == "complete"


def test_execution_options_are_checked() -> None:
    from trainer.executors import Execution

    for kwargs, expected in (({"cpus_per_run": float("nan")}, "cpus_per_run must be a finite number >= 0"),
                             ({"gpus_per_run": -1}, "gpus_per_run must be a finite number >= 0"),
                             ({"ray": True, "cpus_per_run": 0}, "a run needs a CPU or a GPU"),
                             ({"jobs": True}, "jobs must be an integer"),
                             ({"address": "auto"}, "address 'auto' is for Ray")):
        with pytest.raises(InputError, match=expected):
            Execution(**kwargs)


@pytest.mark.slow
def test_ray_refuses_a_run_no_node_could_start() -> None:
    ray = pytest.importorskip("ray")
    from trainer.executors import Execution

    with pytest.raises(InputError, match="the Ray cluster has 2 CPUs and 0 GPUs, so no run could ever start"):
        Execution(ray=True, cpus_per_run=1, gpus_per_run=1).executor(ray_cpus=2)
    assert not ray.is_initialized()  # the instance it started for the campaign is stopped again
