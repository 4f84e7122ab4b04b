"""``fgvcbench bench throughput``: is the data pipeline the bottleneck?

One run measures, for one backbone / resolution / batch: (1) model-only train steps on
random tensors already on the device (the ceiling, as timm's ``benchmark.py`` does),
(2) end-to-end train steps fed by the fast pipeline (decoded-once uint8 tensors, batched
augmentation on the device), (3) end-to-end with the classic DataLoader pipeline, and the
ratios. On CUDA each row also counts how often one step makes the host wait for the GPU
(``syncs_per_step``, from CUDA's sync debug mode): the fast pipeline's should be 0. Each
row is appended to ``<output>/throughput.csv`` with the machine and versions.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from fgvcbench._cli_output import checked_options, nonempty_path
from fgvcbench.errors import UserError

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: data pipeline vs model throughput.")
FIELDS = ["date", "host", "device_name", "torch", "timm", "backbone", "res", "batch", "compile", "augment",
          "random_erasing", "mode",
          "images_per_second", "syncs_per_step", "steps", "workers", "git_sha"]
THROUGHPUT_FIELDS = FIELDS + ["ratio_to_model_only", "ratio_to_classic", "crop_extent"]


MAX_BATCH = 8192               # images per step; the synthetic set behind it is generated on disk
MAX_FEATURES = 10**9           # n × dim for `bench knn`: 4 GB of float32
MAX_LOADER_WORKERS = 256       # classic DataLoader processes: more is a typo, not a host


def _usable_cores() -> int:
    """The cores this process may run on (a SLURM job's cpus_per_task, taskset), not the
    host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # no affinity on this platform
        return os.cpu_count() or 1


def _machine(dev) -> dict:
    """Where and when a benchmark row was measured."""
    import torch
    from fgvcbench.run import _cpu_name, _git_sha
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
            "torch": torch.__version__, "git_sha": _git_sha()}


def check_csv(path: Path, fields: list[str]) -> None:
    """Before measuring: ``path`` is absent, or a CSV this command wrote (its header is
    ``fields``) that can be appended to — else one line saying what to do, instead of a
    traceback after minutes of measuring or rows appended under a broken header."""
    from fgvcbench.store import check_writable
    check_writable(path.parent, "benchmark rows")
    if not path.exists():
        return
    move = "move it away or pass --output DIR for another folder"
    if not path.is_file():
        raise UserError(f"{path} is not a file — {move}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        with open(path, "a"):
            pass
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot append to {path} ({getattr(exc, 'strerror', None) or exc}) — {move}") from None
    if header != fields:
        raise UserError(f"{path} has other columns than this benchmark writes ({', '.join(header[:4]) or 'none'}…) "
                        f"— {move}")


def _append_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Append ``rows`` to a CSV (header first when the file is new) and say so."""
    from rich.console import Console
    new = not path.exists()
    try:
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:   # e.g. the disk filled while measuring: the table above is the result
        raise UserError(f"cannot append to {path} ({exc.strerror or exc}) — the table above has the rows; "
                        f"free space or pass --output DIR") from None
    Console(stderr=True).print(f"[dim]appended {len(rows)} rows to {escape(str(path))}[/]")


def _train_step(model, opt, x, y, device):
    import torch
    import torch.nn.functional as F
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _timed(step_fn, steps: int, warmup: int, device) -> float:
    import torch
    for _ in range(warmup):
        step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def count_syncs(step_fn, device) -> int | None:
    """How many times one call of ``step_fn`` makes the host wait for the GPU (blocking
    copies, ``.item()``, ``nonzero`` …), from CUDA's sync debug mode; None off CUDA."""
    import torch
    if device.type != "cuda":
        return None
    import warnings
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step_fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def measure_throughput(backbone: str, res: int, batch: int, *, steps: int = 20, warmup: int = 5,
                       device: str = "auto", compile: bool = False, dataset: str = "synthetic",
                       root: Optional[str] = None, workers: Optional[int] = None,
                       augment: str = "trivial_augment", random_erasing: float = 0.1,
                       cache_dir: Optional[Path] = None, options: Optional[dict] = None,
                       crop_extent: str = "full") -> list[dict]:
    """Images/s of the three modes (rows: mode, images_per_second); ``crop_extent``: what
    the fast pipeline's cache keeps of each image (the classic one always reads it whole)."""
    import torch
    from fgvcbench.data.base import DatasetRequest
    from fgvcbench.data.classic import classic_loader
    from fgvcbench.data.pipeline import decode_images, load_size_for
    from fgvcbench.engine.augment import BatchAugmenter
    from fgvcbench.engine.recipe import Recipe
    from fgvcbench.engine.transfer import to_device
    from fgvcbench.models.pretrained import create_timm_model
    from fgvcbench.plugins import get_registry
    from fgvcbench.run import resolve_device

    if res < 16 or not 2 <= batch <= MAX_BATCH or steps < 1:
        raise UserError(f"--res {res} --batch {batch} --steps {steps}: need res >= 16, batch from 2 to "
                        f"{MAX_BATCH:,}, steps >= 1")
    if warmup < 0:
        raise UserError(f"--warmup {warmup}: the untimed steps first are a count >= 0")
    if workers is not None and not 0 <= workers <= MAX_LOADER_WORKERS:
        raise UserError(f"--workers {workers}: use 0 (load in the main process) to {MAX_LOADER_WORKERS} "
                        f"DataLoader processes")
    recipe = Recipe(image_size=res, batch_size=batch, augment=augment, lr=0.01, random_erasing=random_erasing,
                    crop_extent=crop_extent)
    problems = recipe.validate()
    if problems:
        key, what = problems[0]
        option = {"image_size": "res", "batch_size": "batch"}.get(key, key.replace("_", "-"))
        raise UserError(f"--{option}: {what}")
    dev = resolve_device(device)
    registry = get_registry()
    spec = registry.datasets.get(dataset)
    if spec is None:
        from fgvcbench.plugins import unknown_dataset
        raise UserError(unknown_dataset(dataset, registry.datasets))
    from fgvcbench.store import default_cache_dir, default_data_root
    reader = spec.folder_reader({**spec.options, **(options or {})}, registry.datasets)
    if reader is not None and root is None:   # as data verify and a suite find it: $FGVCBENCH_DATA, ./data
        root = str(Path(default_data_root()).expanduser() / reader.folder_name)
        if not Path(root).is_dir():
            raise UserError(f"dataset {dataset!r} is not at {root} — pass --root DIR or set FGVCBENCH_DATA; "
                            f"expected layout: {spec.layout}")
    if root is not None and not Path(root).is_dir():
        raise UserError(f"--root {root}: no such folder — expected layout: {spec.layout}")
    cache = cache_dir or default_cache_dir()
    given = options or {}
    options = dict(spec.options)
    if dataset == "synthetic":   # images large enough for --res, a batch's worth of them; -o wins
        options.update(image_size=max(64, load_size_for(res)), train_per_class=max(8, batch // 4))
    options.update(given)
    images = spec.load_checked(DatasetRequest(root=Path(root) if root else None, options=options,
                                              cache_dir=cache / "datasets")).train
    if len(images) < batch:   # the classic loader drops a short last batch: none would be left
        raise UserError(f"--batch {batch}: {dataset}'s training split has only {len(images)} images — "
                        f"lower --batch to at most {len(images)}")
    model = create_timm_model(backbone, num_classes=len(images.class_names)).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    run_model = torch.compile(model) if compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cfg = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    rows = []

    x_rand = torch.randn(batch, 3, res, res, device=dev)
    if dev.type == "cuda":   # as timm's benchmark.py feeds a channels_last model
        x_rand = x_rand.contiguous(memory_format=torch.channels_last)
    y_rand = torch.randint(len(images.class_names), (batch,), device=dev)
    model_step = lambda: _train_step(run_model, opt, x_rand, y_rand, dev)  # noqa: E731
    seconds = _timed(model_step, steps, warmup, dev)
    rows.append({"mode": "model_only", "images_per_second": steps * batch / seconds,
                 "syncs_per_step": count_syncs(model_step, dev)})

    stored = decode_images(images, load_size_for(res), cache, crop_extent=recipe.crop_extent)
    stored = stored.to(dev) if dev.type == "cuda" else stored
    labels = torch.tensor(images.labels, device=dev)
    aug = BatchAugmenter(recipe, cfg["mean"], cfg["std"], dev, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)

    def fast_step():
        idx = to_device(torch.randint(len(stored), (batch,), generator=g), stored.device)
        _train_step(run_model, opt, aug.train(stored[idx]), labels[idx], dev)
    seconds = _timed(fast_step, steps, warmup, dev)
    rows.append({"mode": "fast", "images_per_second": steps * batch / seconds,
                 "syncs_per_step": count_syncs(fast_step, dev)})

    # every step a full batch, as in the other two modes (and no recompile of a compiled model
    # for a short last batch inside the timed steps); every core this process may use by default
    loader = classic_loader(images, recipe, cfg["mean"], cfg["std"], train=True,
                            workers=_usable_cores() if workers is None else workers, drop_last=True)
    batches = iter(())

    def classic_step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        _train_step(run_model, opt, x.to(dev, non_blocking=True), y.to(dev, non_blocking=True), dev)
    seconds = _timed(classic_step, steps, warmup, dev)
    rows.append({"mode": "classic", "images_per_second": steps * batch / seconds})

    model_only = rows[0]["images_per_second"]
    for row in rows:
        row["ratio_to_model_only"] = row["images_per_second"] / model_only
    rows[1]["ratio_to_classic"] = rows[1]["images_per_second"] / rows[2]["images_per_second"]
    import timm
    meta = {**_machine(dev), "timm": timm.__version__, "backbone": backbone, "res": res, "batch": batch,
            "compile": compile, "augment": augment, "random_erasing": random_erasing, "steps": steps,
            "workers": loader.num_workers, "crop_extent": crop_extent}
    return [{**meta, **row} for row in rows]


@bench_app.command("throughput")
def throughput(backbone: str = typer.Option("resnet50", help="timm model name."),
               res: int = typer.Option(224, help="Training resolution."),
               batch: int = typer.Option(256, help="Batch size."),
               compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
               steps: int = typer.Option(20, help="Timed steps per mode."),
               warmup: int = typer.Option(5, help="Untimed steps first."),
               device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
               dataset: str = typer.Option("synthetic", help="Dataset whose training images feed the pipelines."),
               root: Optional[str] = typer.Option(None, help="The dataset's folder (real datasets).",
                                                  metavar="DIR", callback=nonempty_path),
               workers: Optional[int] = typer.Option(None, help="Classic DataLoader workers (default: every core)."),
               option: List[str] = typer.Option([], "--option", "-o",
                                                help="Dataset option KEY=VALUE (repeatable), e.g. -o crop=bbox."),
               augment: str = typer.Option("trivial_augment", help="Augmentation policy in both pipelines."),
               random_erasing: float = typer.Option(0.1, help="RandomErasing probability in both pipelines."),
               crop_extent: str = typer.Option("full", help="What the fast pipeline's cache keeps of each image: "
                                                            "full (whole, up to 3:1) or square (its centre)."),
               output: str = typer.Option("results/bench", help="Folder for throughput.csv.", metavar="DIR",
                                          callback=nonempty_path)) -> None:
    """Model-only vs fast-pipeline vs classic-pipeline images/s, and their ratios."""
    from rich.console import Console
    from rich.table import Table

    from fgvcbench._cli_output import warn_plugins
    from fgvcbench.plugins import get_registry
    registry = get_registry()
    warn_plugins(registry)   # a dataset or backbone a broken plugin would provide
    output = Path(output)
    check_csv(output / "throughput.csv", THROUGHPUT_FIELDS)    # before measuring, not after

    spec = registry.datasets.get(dataset)   # an unknown one is named by measure_throughput
    options = checked_options(spec, option) if spec is not None else {}
    rows = measure_throughput(backbone, res, batch, steps=steps, warmup=warmup, device=device, compile=compile,
                              dataset=dataset, root=root, workers=workers, augment=augment,
                              random_erasing=random_erasing, options=options, crop_extent=crop_extent)
    # the title as its own line: a narrow table would wrap it into its own width
    title = (f"{backbone} · {dataset} · {res}px · batch {batch}{' · compiled' if compile else ''} · "
             f"crop_extent {crop_extent} · {rows[0]['device_name']}")
    table = Table()
    for col in ("mode", "images/s", "× model-only", "× classic", "host waits / step"):
        table.add_column(col, justify="right" if col != "mode" else "left")
    for r in rows:
        table.add_row(r["mode"], f"{r['images_per_second']:.0f}", f"{r['ratio_to_model_only']:.2f}",
                      f"{r['ratio_to_classic']:.2f}" if "ratio_to_classic" in r else "–",
                      "–" if r.get("syncs_per_step") is None else str(r["syncs_per_step"]))
    Console().print(title, style="bold", markup=False, highlight=False, soft_wrap=True)   # one line to copy
    Console().print(table)
    note = ceiling_note(rows, steps)
    if note:
        Console(stderr=True).print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    _append_csv(output / "throughput.csv", THROUGHPUT_FIELDS, rows)


def ceiling_note(rows: list[dict], steps: int, slack: float = 1.1) -> str | None:
    """A warning where a pipeline measured faster than the model alone (beyond ``slack``):
    model-only trains on a batch already on the device, the ceiling of both pipelines, so
    such figures are timing noise — too few steps, or a machine busy with something else."""
    over = [r for r in rows[1:] if r["ratio_to_model_only"] > slack]
    if not over:
        return None
    said = ", ".join(f"{r['mode']} {r['ratio_to_model_only']:.2f}×" for r in over)
    return (f"{said} model-only, which is the ceiling of every pipeline: these timings are noise ({steps} timed "
            f"steps, or another process sharing the machine) — raise --steps and --warmup, or measure on an idle "
            f"machine; the rows are still appended to throughput.csv")


KNN_FIELDS = ["date", "host", "device_name", "torch", "n", "dim", "classes", "k", "backend", "seconds", "git_sha"]


def measure_knn(n: int, dim: int, classes: int, k: int = 8, *, device: str = "auto", repeats: int = 3,
                seed: int = 0) -> list[dict]:
    """Seconds of FineRNet's phase-2 neighbour search (every image against each class's
    images, inner product) per kNN engine, on random features of a whole training set's
    size: the cost depends on the sizes, not on the values."""
    import torch
    from fgvcbench.knn import engine_seconds
    from fgvcbench.run import resolve_device

    if n < 2 or dim < 1 or not 1 <= classes <= n or not 1 <= k <= n or repeats < 1 or n * dim > MAX_FEATURES:
        raise UserError(f"--n {n} --dim {dim} --classes {classes} --k {k} --repeats {repeats}: "
                        f"need n >= 2, dim >= 1, n × dim <= {MAX_FEATURES:,} (4 GB of float32 features), "
                        f"1 <= classes <= n, 1 <= k <= n, repeats >= 1")
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g).to(dev)
    labels = torch.arange(n) % classes
    engine_seconds(features[: min(n, 64)], labels[: min(n, 64)], k, repeats=1)   # warm-up (CUDA context, cuBLAS)
    seconds = engine_seconds(features, labels, k, repeats=repeats)
    meta = {**_machine(dev), "n": n, "dim": dim, "classes": classes, "k": k}
    return [{**meta, "backend": backend, "seconds": s} for backend, s in seconds.items()]


@bench_app.command("knn")
def knn(n: int = typer.Option(5994, help="Images (default: CUB-200's training set)."),
        dim: int = typer.Option(2048, help="Feature size (2048: ResNet-50's pooled output)."),
        classes: int = typer.Option(200, help="Classes (each image is searched against every class)."),
        k: int = typer.Option(8, help="Neighbours per class (FineRNet: top-7 + the image itself)."),
        repeats: int = typer.Option(3, help="Timed repeats; the best is kept."),
        device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps (where the torch engine searches)."),
        output: str = typer.Option("results/bench", help="Folder for knn.csv.", metavar="DIR",
                                   callback=nonempty_path)) -> None:
    """FineRNet's pair-mining search: seconds per kNN engine (torch on the device, FAISS)."""
    from rich.console import Console
    from rich.table import Table

    output = Path(output)
    check_csv(output / "knn.csv", KNN_FIELDS)    # before measuring, not after

    rows = measure_knn(n, dim, classes, k, device=device, repeats=repeats)
    title = f"kNN within classes · {n} × {dim} · {classes} classes · k {k} · {rows[0]['device_name']}"
    table = Table()
    table.add_column("engine")
    table.add_column("seconds", justify="right")
    for r in rows:
        table.add_row(r["backend"], "not installed" if r["seconds"] != r["seconds"] else f"{r['seconds']:.3f}")
    Console().print(title, style="bold", markup=False, highlight=False)
    Console().print(table)
    _append_csv(output / "knn.csv", KNN_FIELDS, rows)
