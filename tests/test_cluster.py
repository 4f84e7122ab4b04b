"""`executor: submitit`: pending runs go out as job arrays (submitit's local executor
here), every job writes into the shared results folder, per-method settings make their
own array, and a later `fgvcbench run` submits only what is still missing."""

from __future__ import annotations

import json

import pytest

from fgvcbench.cli import app

from conftest import write_suite

pytest.importorskip("submitit")


def _suite(tmp_path, extra=""):
    return write_suite(tmp_path, f"""
        name: cluster
        output: {tmp_path / 'out'}
        seeds: [0, 1]
        device: cpu
        executor: submitit
        cluster: {{backend: local, time_min: 10, gpus: 0, cpus: 1, mem_gb: 2}}
        train: {{epochs: 1, image_size: 32, batch_size: 8}}
        datasets: [{{name: synthetic, options: {{coarse: 1, fine: 2, train_per_class: 4, test_per_class: 2, image_size: 32}}}}]
        backbones: [pixels]
        methods:
          - finetune
          - {{name: recipe, cluster: {{cpus: 2}}}}
        {extra}
        """)


def _submitted(tmp_path):
    path = tmp_path / "out" / "submitit" / "submitted.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_submitit_local_arrays_write_the_shared_folder_and_resubmit_only_what_is_missing(tmp_path, runner):
    suite = _suite(tmp_path)
    result = runner.invoke(app, ["run", str(suite), "--wait"])
    assert result.exit_code == 0, result.output
    assert result.output.count("submitted 2 runs as a local job array") == 2   # one array per settings group
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    first = _submitted(tmp_path)
    assert len(first) == 4 and {r["backend"] for r in first} == {"local"}

    victim = records[0]["run_id"]
    (tmp_path / "out" / "runs" / f"{victim}.json").unlink()                   # one run lost on the cluster
    again = runner.invoke(app, ["run", str(suite), "--wait"])
    assert again.exit_code == 0, again.output
    resubmitted = _submitted(tmp_path)[len(first):]
    assert [r["run_id"] for r in resubmitted] == [victim]                      # only the missing one
    assert (tmp_path / "out" / "runs" / f"{victim}.json").exists()
    nothing = runner.invoke(app, ["run", str(suite)])
    assert nothing.exit_code == 0 and "nothing to submit" in nothing.output


def test_cluster_settings_are_validated(tmp_path, runner):
    bad = _suite(tmp_path, "executor: slurmish").read_text().replace("executor: submitit\n", "")
    (tmp_path / "bad.yaml").write_text(bad)
    result = runner.invoke(app, ["run", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "unknown executor" in result.output
    typo = _suite(tmp_path).read_text().replace("time_min: 10", "time_minutes: 10")
    (tmp_path / "typo.yaml").write_text(typo)
    result = runner.invoke(app, ["run", str(tmp_path / "typo.yaml")])
    assert result.exit_code == 2 and "did you mean 'time_min'" in result.output and "typo.yaml" in result.output
    result = runner.invoke(app, ["run", str(_suite(tmp_path)), "--cluster", "gpus=two"])
    assert result.exit_code == 2 and "gpus must be an integer" in result.output


def test_two_entries_of_one_method_keep_their_own_cluster_settings(tmp_path):
    # before, the settings were kept by method name: the second entry's replaced the first's
    from fgvcbench.plugins import get_registry
    from fgvcbench.suite import load_suite
    text = _suite(tmp_path).read_text().replace(
        "  - finetune\n", "  - {name: finetune, variants: [default], cluster: {partition: big}}\n").replace(
        "  - {name: recipe, cluster: {cpus: 2}}\n",
        "  - {name: finetune, variants: [linear_probe], cluster: {partition: small, mem_gb: 8}}\n")
    (tmp_path / "two.yaml").write_text(text)
    suite = load_suite(tmp_path / "two.yaml", get_registry())
    by_variant = {spec.variant: suite.run_cluster.get(spec.run_id) for spec in suite.runs}
    assert by_variant == {"default": {"partition": "big"}, "linear_probe": {"partition": "small", "mem_gb": 8}}


def test_cluster_options_out_of_range_or_a_backend_this_machine_lacks_exit_2(tmp_path, runner):
    suite = _suite(tmp_path)
    for setting, needle in (("time_min=-5", "from 0 to 1,000,000,000"), ("backend=bogus", "unknown backend")):
        result = runner.invoke(app, ["run", str(suite), "--dry-run", "--cluster", setting])
        assert result.exit_code == 2 and needle in result.output, result.output
    import shutil
    if shutil.which("srun") is None:   # submitit cannot reach SLURM here: one line, not its RuntimeError
        result = runner.invoke(app, ["run", str(suite), "--cluster", "backend=slurm"])
        assert result.exit_code == 2 and "submitit cannot use backend 'slurm' here" in result.output, result.output


class _NeverStarts:
    """A SLURM executor whose jobs stay in the queue: nothing runs, nothing is claimed."""
    cluster = "slurm"

    def __init__(self):
        self.n = 0

    def map_array(self, fn, *args):
        self.n += 1
        return [type("Job", (), {"job_id": f"{700 + self.n}_{i}"})() for i in range(len(args[0]))]


def test_runs_whose_jobs_still_wait_in_the_queue_are_not_submitted_twice(tmp_path, monkeypatch):
    import fgvcbench.cluster as cluster
    from fgvcbench.plugins import get_registry
    from fgvcbench.suite import load_suite
    suite = load_suite(_suite(tmp_path), get_registry())
    fake = _NeverStarts()
    monkeypatch.setattr(cluster, "_executor", lambda settings, folder: fake)
    states = {}
    monkeypatch.setattr(cluster, "slurm_states", lambda ids, warn=None: {i: states.get(i, "UNKNOWN") for i in ids})
    first = cluster.submit_suite(suite, {})
    assert len(first) == 4
    assert cluster.submit_suite(suite, {}) == []                        # just submitted: sacct may not know them yet
    states.update({r["job_id"]: "PENDING" for r in first})
    states[first[0]["job_id"]] = "CANCELLED"                            # scancel'ed: its run goes out again
    again = cluster.submit_suite(suite, {})
    assert [r["run_id"] for r in again] == [first[0]["run_id"]]
    # an entry old enough that sacct should know it, and does not: submitted anew
    monkeypatch.setattr(cluster, "YOUNG_SECONDS", -1)
    states.clear()
    assert len(cluster.submit_suite(suite, {})) == 4


def test_a_local_job_counts_as_queued_while_its_process_lives(tmp_path):
    import os
    import subprocess
    import sys
    from fgvcbench.cluster import queued_runs
    folder = tmp_path / "submitit"
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    rows = [{"run_id": "live", "job_id": str(os.getpid()), "backend": "local"},
            {"run_id": "gone", "job_id": done.stdout.strip(), "backend": "local"},
            {"run_id": "other", "job_id": "x", "backend": "local"},
            # a job submitted long before this process started: its pid has been given to another since
            {"run_id": "reused", "job_id": str(os.getpid()), "backend": "local", "submitted": 1000.0}]
    (folder / "submitted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"run_id": "cut')
    assert queued_runs(folder) == {"live": str(os.getpid())}
    (folder / f"{os.getpid()}_0_result.pkl").write_bytes(b"")          # its result is there: it has ended
    assert queued_runs(folder) == {}


def _fake_sacct(tmp_path, body: str) -> str:
    """A ``sacct`` on PATH that runs ``body`` (bash), for slurm_states to call."""
    import os
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "sacct"
    script.write_text("#!/bin/bash\n" + body + "\n")
    script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def test_slurm_states_reads_one_sacct_call_with_job_arrays(tmp_path, monkeypatch):
    from fgvcbench.cluster import slurm_states
    log = tmp_path / "args"
    monkeypatch.setenv("PATH", _fake_sacct(tmp_path, f'''echo "$@" > {log}
printf 'JobID|State|NodeList\\n700_0|RUNNING|n1\\n700_0.batch|RUNNING|n1\\n700_[1-2]|PENDING|None\\n701|CANCELLED by 42|n2\\n' '''))
    warned = []
    states = slurm_states(["700_0", "700_1", "700_2", "701", "702"], warned.append)
    assert states == {"700_0": "RUNNING", "700_1": "PENDING", "700_2": "PENDING", "701": "CANCELLED",
                      "702": "UNKNOWN"}
    assert log.read_text().split().count("-j") == 3   # one call; an array asked for by its main id once
    assert warned == []


def test_a_missing_or_hanging_sacct_is_one_warning_and_unknown_states(tmp_path, monkeypatch, capsys):
    import os

    import fgvcbench.cluster as cluster
    path = os.environ.get("PATH", "")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))   # no sacct anywhere
    warned = []
    assert cluster.slurm_states(["5"], warned.append) == {"5": "UNKNOWN"}
    assert len(warned) == 1 and "sacct is not installed" in warned[0] and "10 minutes" in warned[0]
    assert capsys.readouterr().err == ""                  # submitit's own warning is not printed beside it
    monkeypatch.setenv("PATH", path)
    monkeypatch.setenv("PATH", _fake_sacct(tmp_path, "exec sleep 30"))
    monkeypatch.setattr(cluster, "SACCT_TIMEOUT", 0.5)
    warned.clear()
    assert cluster.slurm_states(["5"], warned.append) == {"5": "UNKNOWN"}
    assert len(warned) == 1 and "no answer in 0.5 s" in warned[0]
    monkeypatch.setenv("PATH", _fake_sacct(tmp_path, "echo 'slurmdbd: connection refused' >&2; exit 1"))
    warned.clear()
    cluster.slurm_states(["5"], warned.append)
    assert warned and "exit 1" in warned[0] and "connection refused" in warned[0]
