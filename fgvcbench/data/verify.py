"""``fgvcbench data verify``: is a dataset on disk complete, readable and leak-free?

Loads the dataset through its adapter (so the check sees exactly what a run would), then
for every image: does the file exist, does it decode completely (a truncated JPEG passes
``Image.verify`` but fails ``load``), and is the same file (by SHA-256 of its bytes) in
both the training and the test split — a leak that inflates test accuracy.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from fgvcbench.data.base import DatasetRequest, DatasetSpec, DatasetSplits


@dataclass
class Problem:
    kind: str      # missing | corrupt | duplicate | empty_class
    path: str
    detail: str
    fix: str

    def line(self) -> str:
        return f"{self.kind}: {self.path} — {self.detail}; fix: {self.fix}"


@dataclass
class VerifyReport:
    dataset: str
    root: str | None
    splits: dict[str, dict[str, int]] = field(default_factory=dict)   # split -> class -> images
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "root": self.root, "splits": self.splits,
                "problems": [p.__dict__ for p in self.problems]}


def _check_file(path: str) -> tuple[str, str | None, str | None]:
    """(path, sha256 or None, error or None)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return path, None, "missing"
    except OSError as exc:
        return path, None, f"unreadable: {exc.strerror}"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(path) as img:
            img.load()   # decodes every byte: truncated files fail here
    except Exception as exc:  # noqa: BLE001 — any decoder error is a corrupt image
        return path, digest, f"corrupt: {exc.__class__.__name__}: {str(exc)[:80]}"
    return path, digest, None


def verify_splits(name: str, root: Path | None, splits: DatasetSplits, workers: int | None = None) -> VerifyReport:
    report = VerifyReport(dataset=name, root=str(root) if root else None)
    named = {"train": splits.train, "test": splits.test}
    if splits.val is not None:
        named["val"] = splits.val
    digests: dict[str, dict[str, str]] = {}
    workers = workers or min(8, os.cpu_count() or 1)
    for split, images in named.items():
        counts = Counter(images.labels)
        report.splits[split] = {images.class_names[c]: counts.get(c, 0) for c in range(len(images.class_names))}
        digests[split] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for path, digest, error in pool.map(_check_file, images.paths):
                if error == "missing":
                    report.problems.append(Problem("missing", path, f"listed in the {split} split but absent",
                                                   "restore the file from the original archive"))
                elif error:
                    report.problems.append(Problem("corrupt", path, error,
                                                   "replace it with the original file, or delete it and its line"))
                if digest:
                    digests[split].setdefault(digest, path)
    for c, n in report.splits["train"].items():
        if n == 0 and report.splits["test"].get(c, 0) > 0:
            report.problems.append(Problem("empty_class", c, "has test images but no training images",
                                           "add training images for it or remove its test images"))
    train_hashes = digests["train"]
    for split in ("test", "val"):
        for digest, path in digests.get(split, {}).items():
            if digest in train_hashes:
                report.problems.append(Problem(
                    "duplicate", path, f"the same file as training image {train_hashes[digest]}",
                    f"remove one of the two copies (a train/{split} leak)"))
    return report


def verify_dataset(spec: DatasetSpec, root: Path | None, options: dict, cache_dir: Path) -> VerifyReport:
    """Load through the adapter (a DataError propagates: the layout itself is wrong) and verify."""
    request = DatasetRequest(root=root, options={**spec.options, **options}, cache_dir=cache_dir)
    return verify_splits(spec.name, root, spec.load(request))
