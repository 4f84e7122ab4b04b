"""``fgvcbench new-plugin NAME``: a third-party plugin distribution that installs and
passes its own test out of the box — pyproject with the entry point, one method written
against the public API only, a test that runs it through a suite, a README."""

from __future__ import annotations

import re
from pathlib import Path

from fgvcbench.errors import UserError

NAME = re.compile(r"^[a-z][a-z0-9_-]{1,40}$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "fgvcbench-{dist}"
version = "0.1.0"
description = "An fgvcbench plugin: the {method} method"
requires-python = ">=3.10"
dependencies = ["fgvcbench"]

[project.optional-dependencies]
test = ["pytest>=8"]

# fgvcbench finds plugins through this entry-point group
[project.entry-points.fgvcbench]
{module} = "{module}"

[tool.setuptools.packages.find]
where = ["src"]
'''

MODULE = '''\
"""{method}: fine-tune with a new head after {warmup_doc}.

A starting point: it shows the whole public API a method needs (``fgvcbench.api``
only). ``head_warmup_epochs`` first trains only the new head on the frozen backbone
(a linear probe), then the whole network fine-tunes — the variant ``direct`` skips the
warm-up. Replace ``run`` with your method; keep returning ``top1`` (percent).
"""

from __future__ import annotations

from fgvcbench.api import Method, RunContext, UserError, hookimpl


def check(params: dict, recipe) -> None:
    """Values no run can use. The suite loader calls this for every variant before any run
    starts (types are already checked against the defaults), so a bad value fails at once."""
    if params["head_warmup_epochs"] < 0:
        raise UserError(f"{method} head_warmup_epochs: {{params['head_warmup_epochs']!r}} — use an integer >= 0")


def run(ctx: RunContext) -> dict:
    warmup = ctx.params["head_warmup_epochs"]
    data = ctx.load_data()                           # decoded, cached train / val / test tensors
    model = ctx.create_model(data.num_classes)       # the suite's backbone with a fresh head
    metrics = {{}}
    if warmup:
        probe = ctx.fit(model, data, ctx.recipe.replace(epochs=warmup), freeze_backbone=True, phase="head")
        for p in model.parameters():
            p.requires_grad_(True)                   # unfreeze for the fine-tuning phase
        metrics["head_only_top1"] = probe.metrics["top1"]
    result = ctx.fit(model, data, phase="finetune")  # the shared engine: recipe, AMP, selection on val
    ctx.notes["head_warmup_epochs"] = warmup         # facts for the run's record
    return {{**result.metrics, **metrics}}


@hookimpl
def fgvcbench_methods():
    return [Method(name="{method}", run=run,
                   description="fine-tuning after a head-only warm-up",
                   params={{"head_warmup_epochs": 1}},    # every parameter with its default (and type)
                   variants={{"direct": {{"head_warmup_epochs": 0}}}},
                   check=check)]
'''

TEST = '''\
"""The plugin is registered, and its method runs end to end through a suite (tiny timm
model, generated data, CPU)."""

import json
import textwrap

from fgvcbench.api import get_registry, run_cli


def test_the_method_is_registered():
    registry = get_registry(refresh=True)
    assert "{method}" in registry.methods, registry.warnings
    # this plugin's method, not another plugin's of the same name
    assert registry.origin[("methods", "{method}")] == "{module}", registry.warnings
    assert set(registry.methods["{method}"].variants) >= {{"default", "direct"}}


def test_both_variants_run_through_a_suite(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(f"""
        output: {{tmp_path / 'out'}}
        cache_dir: {{tmp_path / 'cache'}}
        seeds: [0]
        device: cpu
        train: {{{{epochs: 1, image_size: 32, batch_size: 8}}}}
        datasets: [{{{{name: synthetic, options: {{{{coarse: 2, fine: 2, train_per_class: 6, test_per_class: 2, image_size: 32}}}}}}}}]
        backbones: [test_resnet]
        methods: [{{{{name: "{method}", variants: [default, direct]}}}}]
        """))
    code, output = run_cli(["run", suite, "--no-progress"])
    assert code == 0, output
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert sorted(r["spec"]["variant"] for r in records) == ["default", "direct"]
    for record in records:
        assert record["status"] == "ok", record["error"]
        assert 0 <= record["metrics"]["top1"] <= 100
    warm = next(r for r in records if r["spec"]["variant"] == "default")
    assert "head_only_top1" in warm["metrics"] and {{h.get("phase") for h in warm["history"]}} == {{"head", "finetune"}}


def test_a_bad_value_is_refused_before_any_run(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(f"""
        output: {{tmp_path / 'out'}}
        cache_dir: {{tmp_path / 'cache'}}
        datasets: [synthetic]
        backbones: [test_resnet]
        methods: [{{{{name: "{method}", params: {{{{head_warmup_epochs: -1}}}}}}}}]
        """))
    code, output = run_cli(["run", suite, "--no-progress"])
    assert code == 2 and "head_warmup_epochs: -1" in output
    assert not (tmp_path / "out" / "runs").exists()
'''

README = '''\
# fgvcbench-{dist}

An fgvcbench plugin (see fgvcbench's README, "Write a plugin") providing the method `{method}`.

```bash
pip install -e ".[test]"       # installs the entry point fgvcbench finds
fgvcbench plugins              # lists `{module}` with method `{method}`
pytest                         # runs the method through a tiny suite on the CPU
```

Use it in a suite:

```yaml
methods:
  - name: "{method}"
    variants: [default, direct]
    params: {{head_warmup_epochs: 2}}
```

Layout: `src/{module}/__init__.py` (the method and its hook), `tests/` (its test),
`pyproject.toml` (the `fgvcbench` entry point). The hooks you can implement are listed in
`fgvcbench/hookspecs.py`; import only from `fgvcbench.api`.
'''


def scaffold(name: str, where: Path, force: bool = False, taken: dict[str, str] | None = None) -> Path:
    """Write the plugin distribution ``fgvcbench-NAME/`` under ``where``; return its path.
    ``taken`` maps method names already registered to the plugin that provides them."""
    if not NAME.match(name):
        raise UserError(f"plugin name {name!r}: use 2–41 lowercase letters, digits, '-' or '_', starting with a "
                        f"letter (e.g. my-method)")
    dist = name.replace("_", "-")
    module = "fgvcbench_" + name.replace("-", "_")
    method = name.replace("-", "_")
    # regenerating one's own installed scaffold (--force) is not a clash: same entry point
    if method in (taken or {}) and not (force and taken[method] == module):
        if taken[method] == module:   # this plugin's own installed copy
            raise UserError(f"a method named {method!r} is already registered by the installed {module} (this "
                            f"plugin) — pass --force to write its files again, or choose another name")
        raise UserError(f"a method named {method!r} is already registered (plugin {taken[method]!r}); a second one "
                        f"would be ignored — choose another name, e.g. my-{dist}")
    root = where / f"fgvcbench-{dist}"
    if root.exists() and any(root.iterdir()) and not force:
        raise UserError(f"{root} already exists and is not empty — choose another name or --dir, or pass --force")
    values = {"dist": dist, "module": module, "method": method, "warmup_doc": "a head-only warm-up"}
    files = {
        root / "pyproject.toml": PYPROJECT.format(**values),
        root / "src" / module / "__init__.py": MODULE.format(**values),
        root / "tests" / f"test_{method}.py": TEST.format(**values),
        root / "README.md": README.format(**values),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
