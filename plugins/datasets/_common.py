"""Shared reading helpers for the dataset adapters: every failure names the missing
path and shows the layout the adapter expects."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable

from fgvcbench.api import DataError, DatasetRequest

CROP_CHOICES = ("none", "bbox")


def require(root: Path, relative: Iterable[str], layout: str) -> None:
    """Fail with the expected layout if any of these files/folders is missing — naming the
    sub-folder of ``root`` that has them all, where one does (the folder above the dataset's
    given as its root, e.g. ``data/`` for ``data/CUB_200_2011_first50``)."""
    if root is None or not root.is_dir():
        raise DataError(f"dataset root not found: {root} — expected layout: {layout}")
    relative = list(relative)
    for rel in relative:
        if not (root / rel).exists():
            inside = _holding(root, relative)
            if inside is not None:
                raise DataError(f"{root / rel} not found, but {inside} has the dataset's files — use that folder "
                                f"as the dataset's root (`--root {inside}`, or `root:` in the suite)")
            raise DataError(f"{root / rel} not found — expected layout: {layout}")


def _holding(root: Path, relative: list[str], most: int = 200) -> Path | None:
    """The first sub-folder of ``root`` (by name; at most ``most`` entries looked at) that
    has every path of ``relative``; None if none does or ``root`` cannot be listed."""
    try:
        entries = sorted(itertools.islice(root.iterdir(), most))
    except OSError:
        return None
    for sub in entries:
        try:
            if sub.is_dir() and all((sub / rel).exists() for rel in relative):
                return sub
        except OSError:
            continue
    return None


def descend(root: Path | None, *candidates: str) -> Path | None:
    """Step into the first candidate sub-folder of ``root`` that exists (e.g. the dataset
    folder inside torchvision's root); ``root`` itself when none does."""
    if root is None:
        return None
    for rel in candidates:
        if (root / rel).is_dir():
            return root / rel
    return root


def read_text(path: Path, layout: str) -> str:
    """A UTF-8 text file (a byte-order mark, as Windows editors write, is dropped); an
    unreadable or non-text file is a DataError naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc} — expected layout: {layout}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a UTF-8 text file (byte {exc.start}: {exc.reason}) — "
                        f"is this the official file? Expected layout: {layout}") from None


def numbered_rows(path: Path, min_columns: int, layout: str,
                  maxsplit: int = -1) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of every non-blank line, each with at
    least ``min_columns`` fields. ``maxsplit=1`` keeps the rest of the line after the first
    field whole: ``<id> <file name>`` files whose names may hold spaces."""
    rows = []
    for n, line in enumerate(read_text(path, layout).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(None, maxsplit)
        if len(parts) < min_columns:
            raise DataError(f"{path}:{n}: expected {min_columns} columns, got {len(parts)} — "
                            f"is this the official file?")
        rows.append((n, parts))
    return rows


def read_columns(path: Path, min_columns: int, layout: str, maxsplit: int = -1) -> list[list[str]]:
    """Whitespace-separated rows of a text file, each with at least ``min_columns``
    (``maxsplit``: as :func:`numbered_rows`)."""
    return [parts for _, parts in numbered_rows(path, min_columns, layout, maxsplit)]


def keyed_rows(path: Path, min_columns: int, layout: str, maxsplit: int = -1) -> dict[str, tuple[int, list[str]]]:
    """First field → (line number, fields) of a ``<id> …`` file; an id listed twice is a
    DataError naming both lines (a dict would keep the last silently)."""
    out: dict[str, tuple[int, list[str]]] = {}
    for n, parts in numbered_rows(path, min_columns, layout, maxsplit):
        if parts[0] in out:
            raise DataError(f"{path}:{n}: id {parts[0]} is listed again (first on line {out[parts[0]][0]}) — "
                            f"keep one of the two lines")
        out[parts[0]] = (n, parts)
    return out


def one_based_box(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, float, float, float]:
    """A 1-based inclusive pixel box (top-left pixel (1, 1), ``xmax`` the last pixel
    inside: MATLAB, PASCAL VOC, FGVC-Aircraft) as our 0-based continuous ``(x, y, w, h)``:
    pixel ``i`` (1-based) spans ``[i - 1, i)``, so ``x = xmin - 1`` and ``w = xmax - xmin + 1``."""
    return (xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0)


def option(request: DatasetRequest, name: str, choices: tuple, default: str | None = None) -> str:
    """``request``'s option ``name``, one of ``choices``; ``default`` where the options lack
    it (an option in the spec's ``hash_if_set``)."""
    value = request.options.get(name, default)
    if value not in choices:
        raise DataError(f"dataset option {name}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def contiguous(ids: Iterable) -> dict:
    """Map arbitrary (possibly non-contiguous) class ids to labels 0..C-1 in sorted order."""
    return {cid: i for i, cid in enumerate(sorted(set(ids)))}


def loadmat(path: Path, layout: str):
    """A MATLAB file read with scipy (``squeeze_me`` as torchvision does)."""
    from scipy.io import loadmat as _loadmat
    if not path.is_file():
        raise DataError(f"{path} not found — expected layout: {layout}")
    try:
        return _loadmat(str(path), squeeze_me=True)
    except Exception as exc:  # noqa: BLE001 — a truncated or foreign file
        raise DataError(f"cannot read {path} ({exc.__class__.__name__}) — the file is damaged or not a MATLAB "
                        f"file: download it again from the dataset's release") from None


def as_list(value) -> list:
    """A MATLAB vector as a list, also when ``squeeze_me`` made a single element a scalar."""
    import numpy as np
    return list(np.atleast_1d(value))
