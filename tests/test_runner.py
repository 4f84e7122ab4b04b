"""`fgvcbench run` end to end: records, resume, failures, NaN, Ctrl-C, hooks."""

from __future__ import annotations

import json
import types

import pytest
import torch
import torch.nn as nn

from fgvcbench.api import BackboneSpec, Method, hookimpl
from fgvcbench.cli import app

from conftest import tiny_suite


def records(out):
    return {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}


def test_run_writes_records_then_resumes_without_training(runner, tmp_path, registry_with):
    registry_with()
    suite = tiny_suite(tmp_path, seeds="[0, 1]", epochs=2)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    recs = records(out)
    assert len(recs) == 2
    for run_id, rec in recs.items():
        assert rec["run_id"] == run_id and rec["status"] == "ok" and rec["error"] is None
        assert rec["spec"]["backbone"]["name"] == "test_resnet" and rec["spec"]["recipe"]["epochs"] == 2
        m = rec["metrics"]
        assert 0 <= m["top1"] <= 100 and 0 <= m["top1_last"] <= 100 and 0 <= m["mean_class_acc"] <= 100
        assert m["best_epoch"] in (1, 2)
        assert [h["epoch"] for h in rec["history"]] == [1, 2] and all("val_top1" in h for h in rec["history"])
        assert rec["cost"]["train_seconds"] > 0 and rec["cost"]["images_per_second"] > 0
        assert rec["cost"]["peak_memory_mb"] > 0
        prov = rec["provenance"]
        assert prov["torch"] == torch.__version__ and prov["fgvcbench"] and prov["host"]
        assert prov["started"] <= prov["finished"]
    assert {r["spec"]["seed"] for r in recs.values()} == {0, 1}
    assert "leaderboard.csv" in {p.name for p in out.iterdir()}
    assert "finetune" in result.stdout

    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    again = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "0 ran, 2 resumed" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == mtimes

    dry = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert dry.exit_code == 0 and "2 runs: 2 already done, 0 to run." in dry.stdout
    more = runner.invoke(app, ["run", str(suite), "--dry-run", "--seeds", "3"])
    assert "3 runs: 2 already done, 1 to run." in more.stdout


class NaNNet(nn.Module):
    """A model whose outputs are NaN: training must stop as 'diverged'."""

    def __init__(self, num_classes):
        super().__init__()
        self.head = nn.Linear(3, num_classes)
        self.num_features = 3

    def forward(self, x):
        return self.head(x.mean((2, 3))) * float("nan")

    def get_classifier(self):
        return self.head


def failing_plugin():
    mod = types.ModuleType("failing_plugin")

    def explode(ctx):
        raise ValueError("the method exploded")
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="explodes", run=explode)])
    mod.fgvcbench_backbones = hookimpl(lambda: [BackboneSpec(name="nan_net", create=lambda n, k, p: NaNNet(k))])
    return mod


def test_failed_and_diverged_runs_are_recorded_and_the_suite_goes_on(runner, tmp_path, registry_with):
    registry_with(failing_plugin())
    suite = tiny_suite(tmp_path, methods="[explodes, finetune]", backbones="[nan_net, pixels]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1, result.output
    recs = list(records(tmp_path / "out").values())
    status = {(r["spec"]["method"], r["spec"]["backbone"]["name"]): r["status"] for r in recs}
    assert status == {("explodes", "nan_net"): "failed", ("explodes", "pixels"): "failed",
                      ("finetune", "nan_net"): "diverged", ("finetune", "pixels"): "ok"}
    failed = next(r for r in recs if r["status"] == "failed")
    assert failed["error"].startswith("ValueError: the method exploded")
    diverged = next(r for r in recs if r["status"] == "diverged")
    assert "nan" in diverged["error"].lower()
    for path in (tmp_path / "out" / "runs").glob("*.json"):   # no NaN token, which jq refuses: null
        json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(f"{path.name} holds {token}"))
    assert "4 ran, 0 resumed, 3 failed or diverged" in result.output
    assert "Traceback" not in result.output
    # the leaderboard shows the ok run and counts the failures
    csv = (tmp_path / "out" / "leaderboard.csv").read_text()
    assert "finetune" in csv
    # failed runs are retried, diverged ones are final
    again = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert "2 ran, 2 resumed" in again.output


def interrupting_plugin(flag):
    mod = types.ModuleType("interrupting_plugin")

    def quick(ctx):
        if ctx.seed == 1 and not flag.exists():
            raise KeyboardInterrupt
        return {"top1": 50.0 + ctx.seed}
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="quick", run=quick)])
    return mod


def test_ctrl_c_keeps_finished_records_and_resumes(runner, tmp_path, registry_with):
    flag = tmp_path / "let-it-finish"
    registry_with(interrupting_plugin(flag))
    suite = tiny_suite(tmp_path, methods="[quick]", backbones="[pixels]", seeds="[0, 1, 2]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 130, result.output
    assert "resume" in result.output and "1 run finished in this session is saved" in result.output
    assert [r["spec"]["seed"] for r in records(tmp_path / "out").values()] == [0]
    assert not list((tmp_path / "out" / "runs").glob("*.tmp"))
    flag.touch()
    again = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "2 ran, 1 resumed" in again.output
    assert sorted(r["metrics"]["top1"] for r in records(tmp_path / "out").values()) == [50.0, 51.0, 52.0]


def test_run_finished_hook_sees_each_record_and_a_raising_hook_only_warns(runner, tmp_path, registry_with):
    seen = []
    listener = types.ModuleType("listener")
    listener.fgvcbench_run_finished = hookimpl(lambda record: seen.append(record["run_id"]))
    noisy = types.ModuleType("noisy")

    def raise_(record):
        raise RuntimeError("logger down")
    noisy.fgvcbench_run_finished = hookimpl(raise_)
    registry_with(interrupting_plugin(tmp_path), listener, noisy)
    (tmp_path / "let").touch()
    suite = tiny_suite(tmp_path, methods="[quick]", backbones="[pixels]", seeds="[0, 2]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(seen) == sorted(records(tmp_path / "out"))
    assert "logger down" in result.output


def test_run_notes_records_of_its_folder_that_its_grid_no_longer_holds(runner, tmp_path, registry_with):
    """The suite's lr changed after a first run: the old configuration's record stays in the
    folder's leaderboard, and run says how many such records there are."""
    registry_with()
    suite = tiny_suite(tmp_path, methods="[finetune]", backbones="[pixels]")
    first = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert first.exit_code == 0 and "outside this suite's grid" not in first.output
    suite.write_text(suite.read_text().replace("methods: [finetune]", "methods: [{name: finetune, train: {lr: 0.5}}]"))
    second = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert second.exit_code == 0, second.output
    assert "note: 1 record in this folder is from runs outside this suite's grid" in " ".join(second.output.split())


def test_bad_input_is_one_line_exit_2(runner, tmp_path, registry_with):
    registry_with()
    bad = tiny_suite(tmp_path, methods="[finetun]")
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2
    assert "did you mean 'finetune'" in result.output and "Traceback" not in result.output
    missing = runner.invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert missing.exit_code == 2 and "missing.yaml" in missing.output and "Traceback" not in missing.output
    ok = tiny_suite(tmp_path, methods="[finetune]")
    seeds = runner.invoke(app, ["run", str(ok), "--seeds", "x"])
    assert seeds.exit_code == 2 and "--seeds 'x' is not a count (3) or a list (0,1,2)" in seeds.output
    nothing = runner.invoke(app, ["leaderboard", str(tmp_path / "nothing")])
    assert nothing.exit_code == 2 and str(tmp_path / "nothing") in " ".join(nothing.output.split())
    result = runner.invoke(app, ["run", str(ok), "--device", "cuda:99"])   # no CUDA here, or no GPU 99
    assert result.exit_code == 2 and "device 'cuda:99'" in result.output and "Traceback" not in result.output


def test_gpus_gives_one_worker_per_named_or_visible_gpu(monkeypatch):
    import torch
    from fgvcbench.cli import _worker_devices
    from fgvcbench.errors import UserError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert _worker_devices("all", None, "auto") == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert _worker_devices("3,1", None, "auto") == ["cuda:3", "cuda:1"]
    assert _worker_devices(None, 3, "cpu") == ["cpu"] * 3 and _worker_devices(None, None, "cpu") == []
    for gpus, needle in (("4", "this machine has GPUs 0…3"), ("0,0", "GPU 0 is listed twice"),
                         ("x", "use all or GPU indices")):
        with pytest.raises(UserError, match=needle):
            _worker_devices(gpus, None, "auto")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        _worker_devices("all", None, "auto")


def test_a_dry_run_with_gpus_notes_what_a_real_run_would_refuse(runner, tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(app, ["run", str(tiny_suite(tmp_path)), "--dry-run", "--gpus", "all"])
    assert result.exit_code == 0 and "1 run: 0 already done" in result.output
    assert "note: a real run here would stop: --gpus: no CUDA GPU is visible here" in " ".join(result.output.split())


def test_a_gpu_index_past_the_last_gpu_is_a_user_error(monkeypatch):
    import pytest

    from fgvcbench.errors import UserError
    from fgvcbench.run import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cuda").type == "cuda"
    with pytest.raises(UserError, match="has 2 CUDA device.*cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_a_gpu_worker_makes_its_gpu_the_current_one(monkeypatch):
    """--gpus workers: whatever uses "the current GPU" (pinned-memory threads …) must use
    the worker's own, not GPU 0."""
    import fgvcbench.suite
    from fgvcbench.executors import _worker
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(str(device)))

    def stop(**kwargs):
        raise KeyboardInterrupt   # the worker's way out, before any run
    monkeypatch.setattr(fgvcbench.suite, "load_suite", stop)
    _worker({}, "cuda:1")
    _worker({}, "cpu")
    assert chosen == ["cuda:1"]


def test_a_record_that_cannot_be_written_is_reported_and_the_suite_goes_on(runner, tmp_path, registry_with,
                                                                          monkeypatch):
    import errno

    from fgvcbench.store import Store
    flag = tmp_path / "go"
    flag.touch()
    registry_with(interrupting_plugin(flag))
    real_write = Store.write

    def flaky_write(self, record):
        if record["spec"]["seed"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, record)
    monkeypatch.setattr(Store, "write", flaky_write)
    suite = tiny_suite(tmp_path, methods="[quick]", backbones="[pixels]", seeds="[0, 1, 2]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert sorted(r["spec"]["seed"] for r in records(tmp_path / "out").values()) == [0, 2]
    monkeypatch.setattr(Store, "write", real_write)
    again = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert again.exit_code == 0 and "1 ran, 2 resumed" in again.output


def test_each_run_line_names_its_variant_and_dataset_as_tables_do(runner, tmp_path):
    suite = tiny_suite(tmp_path, methods="[{name: finetune, variants: [default, linear_probe]}]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("✓")]
    assert len(lines) == 2 and "· finetune · seed 0" in lines[0] + lines[1]
    assert any("· finetune[linear_probe] · seed 0" in line for line in lines)   # not eaten as rich markup


def test_tensors_and_arrays_a_plugin_leaves_in_notes_or_metrics_are_saved(runner, tmp_path, registry_with):
    # a 0-d tensor top-1 is a number; arrays, tensors and tuple keys in notes go to JSON as lists
    # and strings, never a crash of the whole suite
    import numpy as np
    mod = types.ModuleType("tensor_plugin")

    def run(ctx):
        ctx.notes["embedding"] = torch.zeros(2, 3)
        ctx.notes["counts"] = np.arange(3)
        ctx.notes[("a", 1)] = {1, 2}
        return {"top1": torch.tensor(50.0) + ctx.seed, "per_class": np.array([40.0, 60.0])}
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="tensory", run=run)])
    registry_with(mod)
    suite = tiny_suite(tmp_path, methods="[tensory]", backbones="[pixels]", seeds="[0, 1]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    recs = sorted(records(tmp_path / "out").values(), key=lambda r: r["spec"]["seed"])
    assert [r["metrics"]["top1"] for r in recs] == [50.0, 51.0]
    assert recs[0]["notes"]["embedding"] == [[0.0] * 3] * 2 and recs[0]["notes"]["counts"] == [0, 1, 2]
    assert sorted(recs[0]["notes"]["('a', 1)"]) == [1, 2] and recs[0]["metrics"]["per_class"] == [40.0, 60.0]
    # which plugin produced the record, since a change of its code keeps the run ids
    assert recs[0]["provenance"]["method_plugin"] == {"name": "tensor_plugin", "distribution": None, "version": None}
    # and which plugins gave the dataset and the backbone
    used = recs[0]["provenance"]["plugins"]
    assert set(used) == {"dataset synthetic", "backbone pixels"} and used["backbone pixels"]["name"] == "backbones"


def test_what_a_method_returns_wrongly_fails_its_run_with_one_line_that_says_what_to_return(
        runner, tmp_path, registry_with):
    mod = types.ModuleType("wrong_returns")
    returns = {
        "fit_result": lambda ctx: (lambda data: ctx.fit(ctx.create_model(data.num_classes), data))(ctx.load_data()),
        "a_float": lambda ctx: 81.5,
        "nothing": lambda ctx: None,
        "no_top1": lambda ctx: {"accuracy": 81.5},
        "infinite": lambda ctx: {"top1": float("inf")},
        "fraction_x100_twice": lambda ctx: {"top1": 2500.0},
        "nan": lambda ctx: {"top1": float("nan")},
        "fine": lambda ctx: {"top1": 50.0},
    }
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name=n, run=f) for n, f in returns.items()])
    registry_with(mod)
    suite = tiny_suite(tmp_path, methods=f"[{', '.join(returns)}]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    got = {r["spec"]["method"]: r for r in records(tmp_path / "out").values()}
    says = {
        "fit_result": "run() returned a FitResult, not a dict of metrics (ctx.fit(...).metrics is its dict)",
        "a_float": "run() returned a float, not a dict of metrics",
        "nothing": "run() returned None, not a dict of metrics",
        "no_top1": "returned no 'top1' metric (its keys: accuracy) — add 'top1'",
        "infinite": "top1 = inf, outside 0–100",
        "fraction_x100_twice": "top1 = 2500.0, outside 0–100 — top1 is the top-1 accuracy in percent",
        "nan": "returned top1 = nan",
    }
    for name, needle in says.items():
        assert got[name]["status"] == ("diverged" if name == "nan" else "failed"), name
        assert needle in got[name]["error"] and "\n" not in got[name]["error"], (name, got[name]["error"])
    assert got["fine"]["status"] == "ok"


def test_a_backbone_that_ignores_num_classes_or_returns_no_module_fails_its_run_with_one_line(
        runner, tmp_path, registry_with):
    from fgvcbench.api import BackboneSpec
    mod = types.ModuleType("wrong_backbones")
    mod.fgvcbench_backbones = hookimpl(lambda: [
        BackboneSpec(name="ten_outputs", create=lambda name, num_classes, pretrained: nn.Sequential(
            nn.Flatten(), nn.LazyLinear(10))),
        BackboneSpec(name="timm_ten", create=lambda name, num_classes, pretrained: __import__("timm").create_model(
            "test_resnet", num_classes=10)),
        BackboneSpec(name="plain", create=lambda name, num_classes, pretrained: nn.Sequential(
            nn.Flatten(), nn.LazyLinear(num_classes))),
        BackboneSpec(name="no_model", create=lambda name, num_classes, pretrained: None)])
    registry_with(mod)
    suite = tiny_suite(tmp_path, backbones="[timm_ten, no_model, ten_outputs, plain]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    got = {r["spec"]["backbone"]["name"]: r for r in records(tmp_path / "out").values()}
    assert got["timm_ten"]["status"] == "failed" and got["timm_ten"]["error"].startswith(
        "backbone 'timm_ten' (plugin 'wrong_backbones'): create() returned a model with 10 outputs for "
        "4 classes — build its classifier with the num_classes it is given")
    assert got["no_model"]["status"] == "failed" and got["no_model"]["error"].startswith(
        "backbone 'no_model' (plugin 'wrong_backbones'): create() returned None, not a torch.nn.Module")
    # a model that does not say how many classes it predicts (no num_classes, no get_classifier())
    # trains; its scores are checked where they are scored
    assert got["plain"]["status"] == "ok"
    assert got["ten_outputs"]["status"] == "failed" and got["ten_outputs"]["error"].startswith(
        "scores of shape [4, 10] for 4 images of 4 classes")


def _fit_with(**kw):
    def run(ctx):
        data = ctx.load_data()
        return ctx.fit(ctx.create_model(data.num_classes), data, **kw).metrics
    return run


def test_what_a_method_asks_of_its_context_wrongly_fails_its_run_with_one_line_that_says_what_to_pass(
        runner, tmp_path, registry_with):
    import torch.nn.functional as F
    mod = types.ModuleType("wrong_calls")
    calls = {
        "size_text": (lambda ctx: ctx.load_data(image_size="32"), "ctx.load_data(image_size='32'): give a whole number"),
        "size_zero": (lambda ctx: ctx.load_data(image_size=0), "ctx.load_data(image_size=0): give a whole number"),
        "recipe_dict": (_fit_with(recipe={"lr": 0.1}), "ctx.fit(recipe=...) got a dict, not a Recipe"),
        "more_classes": (lambda ctx: (lambda d: ctx.fit(ctx.create_model(7), d).metrics)(ctx.load_data()),
                         "ctx.fit: the model's classifier has 7 outputs for the data's 4 classes"),
        "float_loss": (_fit_with(criterion=lambda out, y: 1.0), "the criterion returned float 1.0, not a tensor"),
        "vector_loss": (_fit_with(criterion=lambda out, y: F.cross_entropy(out, y, reduction="none")),
                        "the criterion returned a tensor of shape [8], not one number"),
        "detached_loss": (_fit_with(criterion=lambda out, y: F.cross_entropy(out, y).detach()),
                          "the criterion's loss does not depend on the model's output"),
        "narrow_output": (_fit_with(criterion=lambda out, y: F.cross_entropy(out, y), output_fn=lambda out: out[:, :2]),
                          "scores of shape [4, 2] for 4 images of 4 classes"),
        "split_name": (lambda ctx: (lambda d: ctx.evaluate(ctx.create_model(4), d, "validation"))(ctx.load_data()),
                       "split 'validation': use 'train', 'val' or 'test'"),
        "no_val": (lambda ctx: (lambda d: ctx.evaluate(ctx.create_model(4), d, "val"))(ctx.load_data(val_fraction=0)),
                   "there is no 'val' split: its val_fraction is 0"),
        "stage_path": (lambda ctx: ctx.stage("../escaped", lambda: {"top1": 1.0}), "ctx.stage name '../escaped'"),
        "stage_tensor": (lambda ctx: ctx.stage("mine", lambda: {"top1": 1.0}, {"w": torch.zeros(3)}),
                         "ctx.stage('mine') inputs['w'] is a Tensor, not JSON"),
        "stage_set": (lambda ctx: ctx.stage("mine", lambda: {"top1": 1.0}, {"seen": [{1, 2}]}),
                      "ctx.stage('mine') inputs['seen'][0] is a set, not JSON"),
    }
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name=n, run=f) for n, (f, _) in calls.items()])
    registry_with(mod)
    suite = tiny_suite(tmp_path, methods=f"[{', '.join(calls)}]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    got = {r["spec"]["method"]: r for r in records(tmp_path / "out").values()}
    for name, (_, needle) in calls.items():
        assert got[name]["status"] == "failed", name
        assert needle in got[name]["error"] and "\n" not in got[name]["error"], (name, got[name]["error"])
    assert not list(tmp_path.glob("escaped*")) and not list((tmp_path / "out").glob("escaped*"))


def test_a_method_that_leaves_torch_s_global_state_changed_does_not_change_the_next_run(
        runner, tmp_path, registry_with):
    mod = types.ModuleType("leaky")

    def leaks(ctx):
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        return {"top1": 10.0}
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="leaks", run=leaks)])
    registry_with(mod)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alone = tiny_suite(tmp_path / "a", methods="[finetune]")
    after = tiny_suite(tmp_path / "b", methods="[leaks, finetune]")
    for suite in (alone, after):
        assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    first, second = (next(r for r in records(path.parent / "out").values() if r["spec"]["method"] == "finetune")
                     for path in (alone, after))
    assert second["status"] == "ok" and second["metrics"]["top1"] == first["metrics"]["top1"]
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32


def test_a_method_that_exits_stops_the_suite_with_a_line_that_says_so(runner, tmp_path, registry_with):
    import sys
    mod = types.ModuleType("exits")
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="exits", run=lambda ctx: sys.exit(3)),
                                              Method(name="fine", run=lambda ctx: {"top1": 50.0})])
    registry_with(mod)
    suite = tiny_suite(tmp_path, methods="[fine, exits]", backbones="[pixels]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 3
    assert "raised SystemExit(3); it is not recorded and the finished runs are kept" in " ".join(result.output.split())
    assert [r["spec"]["method"] for r in records(tmp_path / "out").values()] == ["fine"]


def test_metric_names_that_are_not_text_are_written_as_json_writes_them(runner, tmp_path, registry_with):
    mod = types.ModuleType("int_keys")
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="int_keys", run=lambda ctx: {"top1": 10.0, 5: 6.0})])
    registry_with(mod)
    assert runner.invoke(app, ["run", str(tiny_suite(tmp_path, methods="[int_keys]", backbones="[pixels]")),
                                "--no-progress"]).exit_code == 0
    (record,) = records(tmp_path / "out").values()
    assert record["status"] == "ok" and record["metrics"]["5"] == 6.0


def test_a_stage_whose_result_its_cache_cannot_hold_fails_the_run_instead_of_recomputing_in_silence(
        runner, tmp_path, registry_with):
    mod = types.ModuleType("module_stage")

    def run(ctx):
        model = ctx.stage("warmup", lambda: nn.Linear(2, 2), inputs={"seed": ctx.seed})
        return {"top1": float(model.weight.sum() * 0 + 50)}
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="keeps_a_module", run=run)])
    registry_with(mod)
    suite = tiny_suite(tmp_path, methods="[keeps_a_module]", backbones="[pixels]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (record,) = records(tmp_path / "out").values()
    assert record["status"] == "failed"
    assert record["error"].startswith("ctx.stage('warmup') returned what its cache cannot hold "
                                      "(a torch.nn.modules.linear.Linear)")
    assert "model.state_dict() instead of the model" in record["error"]
    assert not list((tmp_path / "out" / "stages").glob("*.pt"))   # nothing half-usable left behind
    assert not list((tmp_path / "out" / "stages").glob("*.tmp"))
    # a numpy scalar (a float subclass) is named too, not torch's coloured advice
    from fgvcbench.run import _first_foreign
    import numpy as np
    assert type(_first_foreign({"loss": [1.0, np.float64(0.5)]})) is np.float64
    assert _first_foreign({"w": torch.zeros(1), "meta": (1, "x", None, True)}) is None


def staged_plugin(calls):
    """``staged`` computes one cached stage (counted in ``calls``) and keeps an artifact;
    ``quick`` does neither."""
    mod = types.ModuleType("staged_plugin")

    def staged(ctx):
        def phase():
            calls.append(ctx.seed)
            return torch.tensor([float(len(calls))])
        value = ctx.stage("staged_phase", phase, inputs={"seed": ctx.seed})
        (ctx.artifact_dir / "kept.txt").write_text(str(float(value[0])))
        return {"top1": 40.0 + float(value[0])}
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="staged", run=staged),
                                              Method(name="quick", run=lambda ctx: {"top1": 10.0})])
    return mod


def test_rerun_runs_chosen_runs_from_scratch_and_keeps_the_old_results_aside(runner, tmp_path, registry_with):
    from fgvcbench.report.leaderboard import load_records
    calls: list[int] = []
    registry_with(staged_plugin(calls))
    suite = tiny_suite(tmp_path, methods="[staged, quick]", backbones="[pixels]")
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    first = {r["spec"]["method"]: r for r in records(out).values()}
    assert first["staged"]["metrics"]["top1"] == 41.0 and calls == [0]
    stage_file = first["staged"]["stages"][0]
    assert first["quick"]["stages"] == [] and (out / "stages" / stage_file).is_file()
    quick_path = out / "runs" / f"{first['quick']['run_id']}.json"
    quick_mtime = quick_path.stat().st_mtime_ns

    # a typo moves nothing
    bad = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "stagd"])
    assert bad.exit_code == 2 and "names no run" in bad.output and "staged:default" in bad.output
    assert "Traceback" not in bad.output and len(records(out)) == 2 and calls == [0]
    dry = runner.invoke(app, ["run", str(suite), "--dry-run", "--rerun", "staged"])
    assert "2 runs: 1 already done, 1 to run (1 again: --rerun)." in dry.stdout and "rerun" in dry.stdout
    assert len(records(out)) == 2

    again = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "staged"])
    assert again.exit_code == 0, again.output
    assert "1 record and 1 cached stage moved to" in again.output and "1 ran, 1 resumed" in again.output
    assert calls == [0, 0]   # the stage was computed again, not read from the cache
    now = {r["spec"]["method"]: r for r in records(out).values()}
    assert now["staged"]["metrics"]["top1"] == 42.0 and now["staged"]["run_id"] == first["staged"]["run_id"]
    assert quick_path.stat().st_mtime_ns == quick_mtime   # not chosen: untouched
    (old_folder,) = (out / "replaced").iterdir()
    old = json.loads((old_folder / "runs" / f"{first['staged']['run_id']}.json").read_text())
    assert old["metrics"]["top1"] == 41.0
    assert (old_folder / "stages" / stage_file).is_file()
    assert (old_folder / "artifacts" / first["staged"]["run_id"] / "kept.txt").read_text() == "1.0"
    # tables read the current records only
    recs, warnings = load_records(out)
    assert sorted(r["metrics"]["top1"] for r in recs) == [10.0, 42.0] and not warnings

    none = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "diverged"])
    assert none.exit_code == 0 and "no run of the grid matches" in none.output and "0 ran, 2 resumed" in none.output


def test_rerun_of_old_records_moves_the_method_s_stages_and_a_failed_rerun_says_where_the_old_one_is(
        runner, tmp_path, registry_with):
    calls: list[int] = []
    registry_with(staged_plugin(calls))
    suite = tiny_suite(tmp_path, methods="[staged, quick]", backbones="[pixels]", seeds="[0, 1]")
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    assert len(list((out / "stages").glob("*.pt"))) == 2 and calls == [0, 1]
    by = {(r["spec"]["method"], r["spec"]["seed"]): r for r in records(out).values()}
    # a refused option moves nothing
    refused = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "all", "--gpus", "7"])
    assert refused.exit_code == 2 and len(records(out)) == 4 and not (out / "replaced").exists()
    if not torch.cuda.is_available():   # a device this machine lacks
        refused = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "all", "--device", "cuda"])
        assert refused.exit_code == 2 and len(records(out)) == 4 and not (out / "replaced").exists()
        dry = runner.invoke(app, ["run", str(suite), "--dry-run", "--device", "cuda"])
        assert dry.exit_code == 0 and "a real run here would stop: device 'cuda'" in dry.output
    # records from before stage lists: the method's stages all move, and the output says why
    for r in records(out).values():
        r.pop("stages")
        (out / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
    seed0 = by[("staged", 0)]["run_id"]
    again = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", seed0])   # a run id
    assert again.exit_code == 0, again.output
    assert "1 record and 2 cached stages moved" in again.output and "every cached stage of staged" in again.output
    assert calls == [0, 1, 0] and "1 ran, 3 resumed" in again.output
    # method:variant; a new run that fails leaves the old result where the output says
    bad_flag = tmp_path / "fail"
    bad_flag.write_text("")

    def failing(ctx):
        if bad_flag.exists():
            raise RuntimeError("the new code is broken")
        return {"top1": 1.0}
    from fgvcbench.plugins import get_registry
    get_registry().methods["staged"] = Method(name="staged", run=failing)
    failed = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "staged:default"])
    assert failed.exit_code == 1 and "2 records and 1 cached stage moved" in failed.output
    assert "'s previous record:" in failed.output and "replaced" in failed.output
    previous = [line.split("'s previous record: ")[1].split(" (move")[0] for line in failed.output.splitlines()
                if "'s previous record:" in line]
    assert len(previous) == 2 and all(json.loads(open(p).read())["status"] == "ok" for p in previous)
    assert "quick" in {r["spec"]["method"] for r in records(out).values() if r["status"] == "ok"}


def test_replace_moves_the_stages_a_run_that_never_finished_had_used(tmp_path):
    """Ctrl-C after a phase: no record, but the stage it computed must not survive a rerun."""
    from fgvcbench.store import Store
    store = Store(tmp_path)
    store.stage_dir().mkdir(parents=True)
    for name in ("phase-aaaa.pt", "other-bbbb.pt"):
        (store.stage_dir() / name).write_bytes(b"x")
    store.stage_uses("run1").parent.mkdir(parents=True)
    store.stage_uses("run1").write_text("phase-aaaa.pt\n")
    done = store.replace({"run1": "m"}, "t1")
    assert done.stages == ["phase-aaaa.pt"] and done.records == [] and not done.stages_by_method
    assert sorted(p.name for p in store.stage_dir().glob("*.pt")) == ["other-bbbb.pt"]
    assert (tmp_path / "replaced" / "t1" / "stages" / "phase-aaaa.pt").is_file()
    assert not store.stage_uses("run1").exists()
    # a record lists its stages from now on, and its uses file goes
    store.stage_uses("run2").write_text("other-bbbb.pt\n")
    store.write({"run_id": "run2", "status": "failed", "stages": ["other-bbbb.pt"],
                 "spec": {"dataset": {"name": "d"}, "backbone": {"name": "b"}, "method": "m"}})
    assert not store.stage_uses("run2").exists()
    with pytest.raises(FileExistsError):   # a stamp is never reused
        store.replace({"run2": "m"}, "t1")


def test_a_suite_s_baseline_table_is_printed_after_the_run(runner, tmp_path, registry_with):
    registry_with(staged_plugin([]))
    suite = tiny_suite(tmp_path, methods="[staged, quick]", backbones="[pixels]", seeds="[0, 1]",
                       extra="baseline: quick")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "against quick" in result.output and "· baseline" in result.output
    # staged scores 41 and 42 (its stage counts calls), quick 10: Δ +31, +32 over two pairs
    from scipy import stats
    half = stats.t.ppf(0.975, 1) * stats.tstd([31, 32]) / 2 ** 0.5
    p = stats.ttest_rel([41, 42], [10, 10]).pvalue
    assert f"Δ +31.50 ±{half:.2f} (p {p:#.3g})" in result.output   # three significant digits: 0.0101
    import pandas as pd
    table = pd.read_csv(tmp_path / "out" / "baseline.csv")
    assert table.set_index("method").loc["staged", "delta_n"] == 2


@pytest.mark.parametrize("value, message", [
    ("nope", r"baseline: 'nope' matches no run — the runs are: finetune:default, finetune:linear_probe"),
    ("finetun", r"baseline: 'finetun' matches no run — did you mean 'finetune:default'"),
    ("finetune", r"'finetune' names 2 variants on synthetic · test_resnet — name one: finetune:default, "
                 r"finetune:linear_probe"),
    ("[finetune]", r"expected a method name or method:variant"),
    ("finetune:default@", r"'finetune:default@' is no baseline name — name a method, method:variant or "
                          r"method:variant@CONFIG"),
    ("finetune:default@0000", r"'finetune:default@0000' has no configuration '0000'.*its configurations: \w{10}"),
    ("recipe", r"'recipe' has 2 configurations on synthetic · test_resnet .*name one as recipe@CONFIG: \w{10}, \w{10}"),
])
def test_a_suite_s_baseline_must_name_one_configuration_of_its_grid(runner, tmp_path, value, message):
    # recipe twice, with other learning rates: one variant, two configurations on one setup
    suite = tiny_suite(tmp_path, methods="[{name: finetune, variants: [default, linear_probe]}, "
                                         "{name: recipe, train: {lr: 0.1}}, {name: recipe, train: {lr: 0.2}}]",
                       extra=f"baseline: {value}")
    result = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    import re
    assert re.search(message, " ".join(result.output.split())), result.output
    assert "suite.yaml:" in result.output


def test_a_baseline_needs_a_variant_only_where_one_setup_runs_two(tmp_path):
    """One variant per setup (linear_probe on pixels, default on test_resnet): the method's
    name picks each setup's own, in the suite as in the leaderboard."""
    from fgvcbench.plugins import get_registry
    from fgvcbench.suite import load_suite
    split = ("exclude: [{backbone: pixels, variant: default}, {backbone: test_resnet, variant: linear_probe}]\n"
             "        baseline: finetune")
    suite = tiny_suite(tmp_path, methods="[{name: finetune, variants: [default, linear_probe]}]",
                       backbones="[test_resnet, pixels]", extra=split)
    loaded = load_suite(suite, get_registry())
    assert loaded.baseline == "finetune"
    assert sorted((r.backbone["name"], r.variant) for r in loaded.runs) == [("pixels", "linear_probe"),
                                                                           ("test_resnet", "default")]


def test_a_suite_s_baseline_can_name_a_configuration(runner, tmp_path):
    from fgvcbench.plugins import get_registry
    from fgvcbench.spec import config_key
    from fgvcbench.suite import load_suite
    methods = "[{name: recipe, train: {lr: 0.1}}, {name: recipe, train: {lr: 0.2}}]"
    spec = load_suite(tiny_suite(tmp_path, methods=methods), get_registry()).runs[0]
    picked = tiny_suite(tmp_path, methods=methods, extra=f"baseline: recipe@{config_key(spec.to_dict())}")
    assert load_suite(picked, get_registry()).baseline == f"recipe@{config_key(spec.to_dict())}"


def test_rerun_names_the_unchosen_runs_that_shared_a_moved_stage_and_the_whole_group(runner, tmp_path,
                                                                                    registry_with):
    """Two methods share one cached stage (as FineRNet's variants share phase 1): rerunning one
    leaves the other's records from the old computation, and the advice is one command for all."""
    mod = types.ModuleType("sharing_plugin")

    def shared(ctx):
        return {"top1": float(ctx.stage("shared_phase", lambda: torch.tensor([5.0]), inputs={"seed": ctx.seed})[0])}
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="first", run=shared), Method(name="second", run=shared)])
    registry_with(mod)
    suite = tiny_suite(tmp_path, methods="[first, second]", backbones="[pixels]")
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    second = next(r["run_id"] for r in records(out).values() if r["spec"]["method"] == "second")
    dry = runner.invoke(app, ["run", str(suite), "--dry-run", "--rerun", "first"])
    assert f"not chosen ({second}) shared a cached stage" in " ".join(dry.output.split())
    assert "--rerun first,second" in dry.output and not (out / "replaced").exists()
    # narrowed by --only, the group is still the suite's; the advice says to drop --only
    narrowed = " ".join(runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "first",
                                            "--rerun", "first"]).output.split())
    assert "--rerun first,second without --only" in narrowed and "another suite" not in narrowed
    again = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "first"])
    assert again.exit_code == 0 and "--rerun first,second" in again.output
    (folder,) = (out / "replaced").iterdir()
    assert [p.name for p in (folder / "stages").glob("*.pt")] and len(list((folder / "runs").glob("*.json"))) == 1
    # the old record sits in the live layout: moving it back restores it; tables pass it over
    from fgvcbench.report.leaderboard import load_records
    assert len(load_records(out)[0]) == 2 and len(load_records(folder)[0]) == 1


def test_only_runs_part_of_the_grid_and_the_tables_still_cover_the_whole_suite(runner, tmp_path, registry_with):
    calls: list[int] = []
    registry_with(staged_plugin(calls))
    suite = tiny_suite(tmp_path, methods="[staged, quick]", backbones="[pixels]", seeds="[0, 1]",
                       extra="baseline: quick")
    out = tmp_path / "out"
    # typos, unknown keys and empty intersections exit 2 and run nothing
    for only, says in ((["stagd"], "names no run"), (["colour=red"], "unknown key 'colour'"),
                       (["seed=7"], "its seeds: 0, 1"), (["dataset=cub"], "its datasets: synthetic"),
                       ([" , "], "--only needs what to run")):
        bad = runner.invoke(app, ["run", str(suite), "--no-progress"] + [a for o in only for a in ("--only", o)])
        assert bad.exit_code == 2 and says in bad.output and "Traceback" not in bad.output, (only, bad.output)
    assert not (out / "runs").exists() and calls == []

    dry = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "quick,seed=1"])
    assert dry.exit_code == 0 and "1 run: 0 already done, 1 to run." in dry.stdout

    first = runner.invoke(app, ["run", str(suite), "--no-progress", "--only", "quick"])
    assert first.exit_code == 0, first.output
    assert "2 ran, 0 resumed" in first.output and calls == []
    assert {(r["spec"]["method"], r["spec"]["seed"]) for r in records(out).values()} == {("quick", 0), ("quick", 1)}

    # one kind widens (either method), another narrows (seed 1 only)
    second = runner.invoke(app, ["run", str(suite), "--no-progress", "--only", "staged,quick", "--only", "seed=1"])
    assert second.exit_code == 0, second.output
    assert "1 ran, 1 resumed" in second.output and calls == [1]
    assert len(records(out)) == 3
    # the baseline table compares with quick's runs finished by the earlier command
    assert "against quick" in second.stdout and "staged" in second.stdout
    baseline = (out / "baseline.csv").read_text()
    assert "staged" in baseline and "quick" in baseline

    # --rerun chooses among what --only keeps
    again = runner.invoke(app, ["run", str(suite), "--no-progress", "--only", "seed=1", "--rerun", "all"])
    assert again.exit_code == 0, again.output
    assert "2 ran, 0 resumed" in again.output and calls == [1, 1] and len(records(out)) == 3


def test_rerun_of_a_run_killed_inside_its_first_stage(tmp_path):
    """Its uses file names a stage that was never saved: nothing to move, no crash."""
    from fgvcbench.executors import move_reruns
    from fgvcbench.store import Store
    store = Store(tmp_path)
    store.stage_uses("run1").parent.mkdir(parents=True)
    store.stage_uses("run1").write_text("m_phase-aaaa.pt\n")
    suite = types.SimpleNamespace(output=tmp_path, runs=[])
    lines, done = move_reruns(suite, [types.SimpleNamespace(run_id="run1", method="m")])
    assert done is None and "none of the 1 chosen runs has a record or cached stage" in lines[0]
    assert not (tmp_path / "replaced").exists() or not any((tmp_path / "replaced").iterdir())



def test_a_rerun_cut_short_leaves_the_record_and_the_next_one_completes_it(runner, tmp_path, registry_with,
                                                                            monkeypatch):
    """The record moves last: a failure before it (here, an interrupted move of the record
    itself) leaves it in runs/, and the same command then moves it; a run another live
    process holds is not moved at all."""
    import fgvcbench.store as store_mod
    from fgvcbench.executors import Claims
    registry_with(staged_plugin([]))
    suite = tiny_suite(tmp_path, methods="[staged]", backbones="[pixels]")
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    (run_id,) = records(out)
    real = store_mod.os.replace

    def cut(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt   # Ctrl-C just before the record's move
        return real(src, dst)
    monkeypatch.setattr(store_mod.os, "replace", cut)
    interrupted = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "staged"])
    assert interrupted.exit_code != 0 and (out / "runs" / f"{run_id}.json").is_file()
    assert list((out / "replaced").glob("*/stages/*.pt"))            # its stage had moved already
    monkeypatch.setattr(store_mod.os, "replace", real)
    claims = Claims(out)
    assert claims.try_claim(run_id)                                   # this live process holds it
    busy = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "staged"])
    assert busy.exit_code == 2 and "running in another process" in busy.output
    claims.release(run_id)
    again = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "staged"])
    assert again.exit_code == 0 and "1 record moved" in again.output and "1 ran" in again.output


def test_a_cpu_record_says_it_trained_in_fp32_whatever_its_recipe_asks(runner, tmp_path):
    suite = tiny_suite(tmp_path, backbones="[pixels]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    (record,) = records(tmp_path / "out").values()
    assert record["spec"]["recipe"]["amp"] is True and record["spec"]["recipe"]["channels_last"] is True
    assert record["provenance"]["precision"] == "fp32" and record["provenance"]["memory_format"] == "contiguous"


def test_only_and_rerun_name_a_run_by_a_variant_the_suite_lists_under_another_name(runner, tmp_path):
    """FineRNet's ``code`` variant is its default: ``--only finernet:code`` keeps the
    ``default`` runs and says they show as finernet:default; a variant whose params differ
    still names nothing, and an entry whose params make ``default`` compute ``readme``'s runs
    lets ``finernet:readme`` name them."""
    suite = tiny_suite(tmp_path, methods="[finernet, finetune]", seeds="[0, 1]")
    dry = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "finernet:code"])
    assert dry.exit_code == 0, dry.output
    assert "2 runs: 0 already done, 2 to run." in dry.stdout and "finetune" not in dry.stdout
    said = " ".join(dry.stderr.split())
    assert ("--only finernet:code: variant 'code' computes the same runs as finernet:default, which the suite "
            "lists — they run and show in the tables as finernet:default") in said
    plain = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "finernet:default"])
    assert plain.exit_code == 0 and "computes the same runs" not in plain.output
    rerun = runner.invoke(app, ["run", str(suite), "--dry-run", "--rerun", "finernet:code"])
    assert rerun.exit_code == 0 and "--rerun finernet:code: variant 'code'" in " ".join(rerun.stderr.split())
    readme = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "finernet:readme"])
    assert readme.exit_code == 2 and "names no run of suite 'tiny' (its runs: finernet:default" in readme.output

    suite = tiny_suite(tmp_path, methods="[{name: finernet, params: {pipeline: readme}}]")
    dry = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "finernet:readme"])
    assert dry.exit_code == 0 and "1 run: 0 already done, 1 to run." in dry.stdout
    assert "variant 'readme' computes the same runs as finernet:default" in " ".join(dry.stderr.split())
    # the entry's params set the pipeline of any variant it would list: code runs readme's pipeline too
    code = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "finernet:code,finernet:code"])
    assert code.exit_code == 0 and " ".join(code.stderr.split()).count("variant 'code' computes the same runs") == 1

    # a variant another entry of the method lists is that entry's, never an alias of this one's default
    suite = tiny_suite(tmp_path, methods="[{name: finernet}, {name: finernet, variants: [code], "
                                         "params: {alpha: 0.5}}]")
    code = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "finernet:code"])
    assert code.exit_code == 0 and "1 run: 0 already done, 1 to run." in code.stdout
    assert "computes the same runs" not in code.output and "│ default" not in code.stdout


def test_a_baseline_named_by_a_variant_the_suite_lists_under_another_name_becomes_that_name(runner, tmp_path):
    from fgvcbench.plugins import get_registry
    from fgvcbench.suite import load_suite
    suite = tiny_suite(tmp_path, methods="[finernet, finetune]", extra="baseline: finernet:code")
    loaded = load_suite(suite, get_registry())
    assert loaded.baseline == "finernet:default"
    dry = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "finetune"])
    assert dry.exit_code == 0, dry.output
    assert ("baseline: finernet:code — variant 'code' computes the same runs as finernet:default, which the suite "
            "lists; the tables compare with finernet:default") in " ".join(dry.stderr.split())
    suite = tiny_suite(tmp_path, methods="[finernet, finetune]", extra="baseline: finernet:readme")
    bad = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert bad.exit_code == 2 and "baseline: 'finernet:readme' matches no run" in " ".join(bad.output.split())


def test_dry_run_names_a_run_another_live_process_holds_as_running(runner, tmp_path, registry_with):
    import os
    import re
    import socket
    registry_with()
    suite = tiny_suite(tmp_path, seeds="[0, 1]", epochs=1)
    first = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert "2 runs: 0 already done, 2 to run." in first.stdout
    ids = re.findall(r"\b[0-9a-f]{12}\b", first.stdout)
    claims = tmp_path / "out" / "claims"
    claims.mkdir(parents=True)
    (claims / f"{ids[0]}.claim").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    dry = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert "2 runs: 0 already done, 2 to run, of which 1 running in another process now" in dry.stdout
    assert dry.stdout.count("running") == 2   # the claimed run's status, and the summary
    # a dead process's claim is not a running run
    (claims / f"{ids[0]}.claim").write_text(json.dumps({"host": socket.gethostname(), "pid": 2 ** 22 + 7}))
    assert "2 runs: 0 already done, 2 to run." in runner.invoke(app, ["run", str(suite), "--dry-run"]).stdout


def test_runs_failing_for_one_reason_are_said_in_one_line_with_their_ids(runner, tmp_path, registry_with):
    registry_with(failing_plugin())
    suite = tiny_suite(tmp_path, methods="[explodes]", backbones="[pixels]", seeds="[0, 1, 2, 3]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1
    ids = sorted(r["run_id"] for r in records(tmp_path / "out").values())
    lines = [line for line in result.output.splitlines() if line.startswith("failed ")]   # the closing summary
    assert len(lines) == 1 and lines[0].startswith("failed 4 runs (") and lines[0].count(", ") == 3, lines
    assert sum(run_id in lines[0] for run_id in ids) == 3 and "…" in lines[0]
