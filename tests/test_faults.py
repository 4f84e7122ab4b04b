"""Faults, measured: kill -9 of the suite process at 20 moments (random times, and
targeted ones inside a record write, between the phases of a multi-phase method and at
epoch ends), several worker processes on one results directory, and bad data inside a
suite. The figures in the README's "Faults" section come from these tests."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from fgvcbench.cli import app
from fgvcbench.report.leaderboard import build_leaderboard, load_records, render

from conftest import tiny_suite, write_suite

# CI runs all 20 (≈ 1 min on 2 cores); FGVCBENCH_KILL_TRIALS=N bounds it, `-m "not slow"` skips it
TRIALS = int(os.environ.get("FGVCBENCH_KILL_TRIALS", "20"))
# inside a record write, between FineRNet's phases, inside an epoch (after an optimizer step), at an epoch's end
TARGETED = ["record_write:1", "stage:1", "step:1", "stage:2", "record_write:3", "step:3", "epoch:3", "stage:3"]

SUITE = """
    name: faults
    output: {out}
    seeds: [0, 1]
    device: cpu
    train: {{epochs: 2, image_size: 32, batch_size: 16}}
    datasets: [{{name: synthetic, options: {{coarse: 2, fine: 2, train_per_class: 8, test_per_class: 4, image_size: 40}}}}]
    backbones: [test_resnet]
    methods:
      - finetune
      - {{name: finernet, variants: [code], params: {{phase3_batch: 16}}}}
    """


def _cli(args, env_extra=None, cwd=None):
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "fgvcbench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)


def _finished(out: Path) -> dict[str, dict]:
    """Every record file must parse: a corrupt or partial record fails the test here."""
    records = {}
    for path in (out / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        assert record["run_id"] == path.stem and record["status"] in ("ok", "failed", "diverged")
        records[record["run_id"]] = record
    return records


def _claim_log(out: Path) -> list[str]:
    try:
        return (out / "claims" / "claimed.log").read_text().splitlines()
    except FileNotFoundError:
        return []


def _held_by(out: Path, pid: int) -> bool:
    """Whether process ``pid`` left a claim on a run that has no record: it died inside that run."""
    for path in (out / "claims").glob("*.claim"):
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if owner.get("pid") == pid and not (out / "runs" / f"{path.stem}.json").exists():
            return True
    return False


def _table(out: Path) -> list[tuple]:
    df = build_leaderboard(load_records(out)[0])
    return sorted((r.dataset, r.method, r.variant, r.n, round(r.top1_mean, 6)) for r in df.itertuples())


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_ends_equal(tmp_path):
    reference = tmp_path / "reference"
    started = time.perf_counter()
    proc = _cli(["run", str(write_suite(tmp_path, SUITE.format(out=reference), "ref.yaml")), "--no-progress"])
    assert proc.wait(timeout=600) == 0, proc.stdout.read()
    full_time = time.perf_counter() - started
    expected = _finished(reference)
    assert len(expected) == 4
    run_time = min(r["cost"]["wall_seconds"] for r in expected.values())

    rng = random.Random(20261122)
    kills = in_run = completed_dirs = attempts = starts = 0
    kinds: dict[str, int] = {}
    out, done = None, {}
    while kills < TRIALS and attempts < 4 * TRIALS:
        if out is None:  # a fresh results folder, killed again and again until the suite completes
            out = tmp_path / f"killed{completed_dirs}"
            suite = write_suite(tmp_path, SUITE.format(out=out), f"killed{completed_dirs}.yaml")
            done = {}
        fault = TARGETED[kills] if kills < len(TARGETED) else None
        claimed_before = len(_claim_log(out))
        proc = _cli(["run", str(suite), "--no-progress"], {"FGVCBENCH_FAULT": fault} if fault else None)
        attempts += 1
        if fault is None:
            # once this process has claimed a run (a line of its own in claimed.log: a dead
            # process's leftover claim file says nothing about this one), at a random moment
            # within a run's length
            deadline = time.perf_counter() + 10 * full_time
            while proc.poll() is None and len(_claim_log(out)) == claimed_before and time.perf_counter() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.9 * run_time))
            proc.kill()
        output = proc.communicate(timeout=600)[0]
        now = _finished(out)
        for run_id, record in done.items():       # zero finished runs lost or changed
            assert run_id in now and now[run_id]["metrics"] == record["metrics"], run_id
        done = {k: v for k, v in now.items() if v["status"] == "ok"}
        if proc.returncode == -9:
            kills += 1
            held = _held_by(out, proc.pid)   # it died holding a run it had not finished
            in_run += held
            kind = fault.split(":")[0] if fault else "random"
            kinds[kind] = kinds.get(kind, 0) + held
        else:
            assert proc.returncode == 0, output
        if proc.returncode == 0 or (kills >= TRIALS):
            final = _cli(["run", str(suite), "--no-progress"])
            output = final.communicate(timeout=600)[0]
            assert final.returncode == 0, output
            assert not list((out / "runs").glob(".*.tmp"))   # dead writers' temporary files are swept
            assert not list((out / "stages").rglob("*.tmp"))  # stage results cut off by a kill too
            after = _finished(out)
            assert set(after) == set(expected)
            assert all(after[k]["metrics"]["top1"] == expected[k]["metrics"]["top1"] for k in expected)
            assert _table(out) == _table(reference)
            assert not list((out / "claims").glob("*.claim"))  # every claim released or taken over
            starts += len((out / "claims" / "claimed.log").read_text().splitlines())
            completed_dirs += 1
            out = None
    # every targeted kill lands inside a run by construction; random ones may, rarely, fall
    # between two runs (the sleep outlasting the run), never before the process claimed one
    assert kills == TRIALS and in_run >= TRIALS - max(1, (TRIALS - len(TARGETED)) // 4)
    if TRIALS >= len(TARGETED):
        assert all(kinds.get(k.split(":")[0]) for k in TARGETED)
    print(f"\nkill -9: {kills} kills ({in_run} while a run was in progress: "
          + ", ".join(f"{v} {k}" for k, v in kinds.items()) + f") over {completed_dirs} resumed suites "
          f"of {len(expected)} runs; {starts} run starts for {completed_dirs * len(expected)} runs; "
          f"0 finished runs lost, 0 corrupt records, every leaderboard equal to the uninterrupted one")


def test_workers_sharing_a_results_directory_run_each_run_once(tmp_path):
    out = tmp_path / "out"
    suite = write_suite(tmp_path, SUITE.format(out=out).replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    procs = [_cli(["run", str(suite), "--no-progress"]) for _ in range(2)]   # two independent commands …
    procs.append(_cli(["run", str(suite), "--no-progress", "--workers", "2"]))  # … and a 2-worker one
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    records = _finished(out)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records.values())
    claims = [line.split()[0] for line in (out / "claims" / "claimed.log").read_text().splitlines()]
    assert sorted(claims) == sorted(records)        # each run claimed (and run) exactly once
    assert len({line.split()[2] for line in (out / "claims" / "claimed.log").read_text().splitlines()}) >= 2
    table = build_leaderboard(load_records(out)[0])
    assert sorted(table["n"].tolist()) == [3, 3]    # no lost or duplicated rows


def test_runs_of_workers_sharing_one_device_say_their_times_are_not_a_run_alone(tmp_path):
    out = tmp_path / "out"
    suite = SUITE.format(out=out).replace("      - {name: finernet, variants: [code], params: {phase3_batch: 16}}\n", "")
    proc = _cli(["run", str(write_suite(tmp_path, suite)), "--no-progress", "--workers", "2"])
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    records = _finished(out)
    assert len(records) == 2 and [r["cost"].get("device_shared_by") for r in records.values()] == [2, 2]
    table = build_leaderboard(load_records(out)[0])
    assert table["device_shared_by"].tolist() == [2] and "(shared by 2)" in render(table, "md")


def test_workers_run_only_what_only_keeps(tmp_path):
    out = tmp_path / "out"
    suite = SUITE.format(out=out).replace("      - {name: finernet, variants: [code], params: {phase3_batch: 16}}\n", "")
    proc = _cli(["run", str(write_suite(tmp_path, suite)), "--no-progress", "--workers", "2", "--only", "seed=1"])
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    assert "1 pending run on 1 worker: cpu" in output   # --workers 2, one run: no second process to start
    assert [r["spec"]["seed"] for r in _finished(out).values()] == [1]   # the workers left seed 0 alone


def test_bad_data_inside_a_suite_is_reported_and_the_suite_goes_on(tmp_path, runner):
    folder = tmp_path / "folder"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (24, 24), (i * 40, 80 if c == "a" else 160, 0)).save(folder / split / c / f"{i}.jpg")
    corrupt = folder / "train" / "a" / "0.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:40])                # a truncated JPEG
    cub = tmp_path / "cub"
    (cub / "images").mkdir(parents=True)
    (cub / "images.txt").write_text("1 x/1.jpg\n")                 # train_test_split.txt etc. missing
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path, scale=None, batch_size=4, extra=f"data_root: {tmp_path}",
                       datasets="[{name: imagefolder, root: folder}, {name: cub, root: cub}, {name: synthetic, "
                                "options: {coarse: 1, fine: 2, train_per_class: 4, test_per_class: 2, image_size: 32}}]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    records = {r["spec"]["dataset"]["name"]: r for r in _finished(out).values()}
    assert records["synthetic"]["status"] == "ok"                 # the good dataset still ran
    assert records["imagefolder"]["status"] == "failed" and str(corrupt) in records["imagefolder"]["error"]
    assert records["cub"]["status"] == "failed" and "train_test_split.txt" in records["cub"]["error"]
    assert records["cub"]["run_id"] in result.output and records["imagefolder"]["run_id"] in result.output


MALFORMED = [
    ("bad yaml", "name: [unclosed\n", "yaml"),
    ("not a mapping", "- a\n- b\n", "mapping"),
    ("unknown top key", "name: x\nmethodz: [finetune]\n", "methodz"),
    ("unknown dataset", "datasets: [cubb]\n", "cubb"),
    ("unknown backbone", "backbones: [resnet_fifty]\n", "resnet_fifty"),
    ("unknown method", "methods: [finetun]\n", "finetun"),
    ("unknown variant", "methods: [{name: finetune, variants: [fast]}]\n", "fast"),
    ("unknown param", "methods: [{name: finetune, params: {alpha: 1}}]\n", "alpha"),
    ("unknown step", "ablation: {method: recipe, steps: [base, cosinee]}\n", "cosinee"),
    ("negative epochs", "train: {epochs: -3}\n", "epochs"),
    ("epochs as text", "train: {epochs: many}\n", "epochs"),
    ("bad lr", "train: {lr: -1}\n", "lr"),
    ("bad scale", "scale: huge\n", "huge"),
    ("bad seeds", "seeds: [-1]\n", "seed"),
    ("seeds as text", "seeds: lots\n", "seeds"),
    ("empty grid", "exclude: [{method: finetune}]\n", "exclude"),
    ("missing data root", "datasets: [{name: cub, root: /no/such/folder}]\n", "not found"),
    ("unknown dataset option", "datasets: [{name: synthetic, options: {colour: 3}}]\n", "colour"),
    ("datasets not a list", "datasets: synthetic\n", "datasets"),
    ("method entry type", "methods: [3]\n", "methods"),
    ("duplicate key", "name: a\nname: b\n", "name"),
    ("unsafe tag", "name: !!python/object/apply:os.system ['true']\n", "tag"),
    ("bad device", "device: quantum\n", "quantum"),
    ("unknown backbone key", "backbones: [{name: test_resnet, weights: x}]\n", "weights"),
]


@pytest.mark.parametrize("case,body,needle", MALFORMED, ids=[c for c, _, _ in MALFORMED])
def test_malformed_suites_exit_2_with_file_line_and_a_fix(tmp_path, runner, case, body, needle):
    base = {"name": "m", "output": str(tmp_path / "out"), "device": "cpu",
            "datasets": "[{name: synthetic, options: {coarse: 1, fine: 2, train_per_class: 2, test_per_class: 1}}]",
            "backbones": "[test_resnet]", "methods": "[finetune]"}
    keys = {line.split(":")[0] for line in body.splitlines() if ":" in line and not line.startswith(" ")}
    if case in ("bad yaml", "not a mapping"):
        text = body
    else:
        text = "".join(f"{k}: {v}\n" for k, v in base.items() if k not in keys) + body
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 2, (case, result.output)
    assert "Traceback" not in result.output and needle.lower() in result.output.lower(), (case, result.output)
    assert str(path) in result.output or "bad.yaml" in result.output, (case, result.output)
    error = result.output.strip()
    assert len(error.splitlines()) == 1 and re.search(r"bad\.yaml:\d+: ", error), (case, error)   # one line, its line
    assert len(error.split(" — ")[-1]) > 10 and error.count(" — ") >= 1, (case, error)        # and what to do
    assert not (tmp_path / "out" / "runs").exists()                # nothing ran


def test_claims_from_dead_processes_are_taken_over_and_live_ones_respected(tmp_path, monkeypatch):
    from fgvcbench.executors import Claims
    claims = Claims(tmp_path)
    assert claims.try_claim("run1") and not claims.try_claim("run1")          # held by a live process (us)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / "claims" / "run2.claim"
    path.write_text(json.dumps({"host": claims.host, "pid": int(dead.stdout), "time": 0}))
    assert claims.try_claim("run2")                                          # same host, pid gone: taken over
    foreign = tmp_path / "claims" / "run3.claim"
    foreign.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": 0}))
    assert not claims.try_claim("run3")                                      # fresh heartbeat: respected
    monkeypatch.setenv("FGVCBENCH_CLAIM_STALE_SECONDS", "5")
    old = time.time() - 60
    os.utime(foreign, (old, old))
    assert claims.try_claim("run3")                                          # silent for a minute: taken over
    monkeypatch.setattr(Claims, "HEARTBEAT_SECONDS", 0.05)
    os.utime(tmp_path / "claims" / "run1.claim", (old, old))
    claim = tmp_path / "claims" / "run1.claim"
    with claims.heartbeat("run1"):
        deadline = time.monotonic() + 30   # a loaded machine may run the heartbeat thread late
        while claim.stat().st_mtime < old + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert time.time() - claim.stat().st_mtime < 35                  # the heartbeat touched it
