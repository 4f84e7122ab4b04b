"""One run on several processes (torchrun, DistributedDataParallel, gloo on CPU): the
epoch shards, weights kept equal across ranks by the engine, and a suite run under
torchrun writing each record once from rank 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from fgvcbench.distributed import shard
from fgvcbench.plugins import get_registry

from conftest import tiny_suite


def test_shards_are_disjoint_equal_and_cover_the_epoch():
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    parts = [shard(order, r, 3) for r in range(3)]
    assert {len(p) for p in parts} == {4}                             # padded to 12, 4 each
    assert set(torch.cat(parts).tolist()) == set(order.tolist())      # every image seen
    assert len(set(parts[0].tolist()) & set(parts[1].tolist())) == 0
    assert torch.equal(shard(order, 0, 1), order)


def _torchrun(args, tmp_path, nproc=2):
    tmp = tmp_path / "tmp"   # torchrun's own torchelastic_* folders go here, not into the system's /tmp
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", TMPDIR=str(tmp))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                           "--master_port", str(29500 + os.getpid() % 1000), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def test_ddp_fit_keeps_every_rank_on_the_same_weights(tmp_path):
    script = tmp_path / "fit_ddp.py"
    script.write_text(textwrap.dedent(f"""
        import torch, timm, torch.distributed as dist
        from fgvcbench import distributed
        from fgvcbench.data.pipeline import TensorData, TensorSplit
        from fgvcbench.engine.recipe import Recipe
        from fgvcbench.engine.train import fit
        distributed.init_from_env("cpu")
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 255, (40, 3, 20, 20), dtype=torch.uint8, generator=g)
        labels = torch.arange(4).repeat(10)
        split = TensorSplit(images, labels, list(range(40)))
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", num_classes=4)
        start = {{k: v.clone() for k, v in model.state_dict().items()}}
        seen = []
        result = fit(model, TensorData(split, split, split, list("abcd"), 16, None),
                     Recipe(epochs=2, image_size=16, batch_size=5, lr=0.05), device=torch.device("cpu"), seed=0,
                     on_batch=lambda done, total: seen.append(total))
        torch.save({{"state": model.state_dict(), "start": start, "steps": seen[-1],
                    "images": result.images_seen}}, r"{tmp_path}/rank%d.pt" % distributed.rank())
        dist.destroy_process_group()
        """))
    done = _torchrun([str(script)], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 4                  # 40 images / 2 ranks / batch 5
    assert r0["images"] == 2 * 40                           # 2 epochs of the whole set, counted over ranks
    changed = [k for k in r0["state"] if r0["state"][k].is_floating_point()
               and not torch.equal(r0["state"][k], r0["start"][k])]
    assert changed                                           # it trained
    for key, value in r0["state"].items():                   # DDP kept the ranks in sync
        assert torch.allclose(value.float(), r1["state"][key].float(), atol=1e-6), key


def test_a_suite_under_torchrun_writes_each_record_once_from_rank_0(tmp_path):
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path, scale=None, epochs=2,
                       datasets="[{name: synthetic, options: {coarse: 2, fine: 2, train_per_class: 10, "
                                "test_per_class: 4, image_size: 40}}]",
                       methods="[finetune, {name: finernet, variants: [code], params: {phase3_batch: 16}}]",
                       extra="ablation: {steps: [base]}")
    done = _torchrun(["-m", "fgvcbench.cli", "run", str(suite), "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("3 ran on 2 processes") == 1          # rank 0 alone reports
    assert done.stdout.count("recipe ablation") == 1 and (out / "ablation.csv").is_file()
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert len(records) == 3 and all(r["status"] == "ok" for r in records)
    assert all(r["provenance"]["world_size"] == 2 and r["spec"]["world_size"] == 2 for r in records)
    # twice the global batch is another run: one process does not resume these
    from fgvcbench.suite import load_suite
    one_process = {spec.run_id for spec in load_suite(suite, get_registry(refresh=True)).runs}
    assert not one_process & {r["run_id"] for r in records} and "world_size" not in load_suite(
        suite, get_registry()).runs[0].to_dict()
    log = (out / "claims" / "claimed.log").read_text().splitlines()
    assert len(log) == 3 and len({line.split()[2] for line in log}) == 1   # rank 0 claimed them all


def test_a_stage_computed_under_torchrun_is_not_reused_by_one_process(tmp_path, runner, registry_with, monkeypatch):
    """ctx.fit under torchrun trains with the global batch (world × batch_size): a stage it
    cached is another result than the same stage on one process."""
    from fgvcbench import distributed
    from fgvcbench.api import Method, hookimpl
    from fgvcbench.cli import app

    calls = []

    def run(ctx):
        for world in (1, 2, 1):
            monkeypatch.setattr(distributed, "world_size", lambda world=world: world)
            ctx.stage("probe", lambda world=world: calls.append(world) or world, {"same": "inputs"})
        return {"top1": 1.0}

    class Probe:
        @hookimpl
        def fgvcbench_methods(self):
            return [Method(name="probe", run=run)]
    registry_with(Probe())
    result = runner.invoke(app, ["run", str(tiny_suite(tmp_path, methods="[probe]")), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert calls == [1, 2]                                   # the third call reads the first's cache
    assert len(list((tmp_path / "out" / "stages").glob("probe-*.pt"))) == 2


def test_the_classic_pipeline_reads_one_shard_per_rank_under_torchrun(tmp_path):
    # before, pipeline: classic under torchrun gave every rank the whole epoch while the
    # schedule counted a shard's steps: each rank now reads its own part, reshuffled per epoch
    from PIL import Image
    from fgvcbench.data.base import ImageList
    from fgvcbench.data.classic import classic_loader
    from fgvcbench.engine.recipe import Recipe
    paths = []
    for i in range(10):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (20, 20), (i * 20, 0, 0)).save(paths[-1])
    images = ImageList(paths, list(range(10)), [str(i) for i in range(10)])
    recipe = Recipe(image_size=16, batch_size=4, augment="none")

    def seen(rank, epoch):
        loader = classic_loader(images, recipe, (0.5,) * 3, (0.5,) * 3, train=True, seed=3, workers=0,
                                world=2, rank=rank)
        loader.sampler.set_epoch(epoch)
        return [int(y) for _, ys in loader for y in ys]
    first = [seen(r, 0) for r in (0, 1)]
    assert [len(s) for s in first] == [5, 5] and sorted(first[0] + first[1]) == list(range(10))
    assert seen(0, 1) != first[0]                                    # another order next epoch
    alone = classic_loader(images, recipe, (0.5,) * 3, (0.5,) * 3, train=True, workers=0)
    assert sorted(int(y) for _, ys in alone for y in ys) == list(range(10))   # one process: the whole set


def test_a_suite_error_under_torchrun_is_printed_once_per_node_and_every_rank_exits_2(tmp_path):
    suite = tiny_suite(tmp_path, seeds="[0, 0]")
    done = _torchrun(["-m", "fgvcbench.cli", "run", str(suite), "--no-progress"], tmp_path)
    assert done.returncode != 0
    assert done.stderr.count("error: ") == 1 and "seed 0 is listed twice" in done.stderr, done.stderr
