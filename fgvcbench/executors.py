"""Running a suite's pending runs on this machine, with progress and resume.

Finished runs (a record with status ok or diverged) are skipped. Each run's record is
written the moment the run ends, so Ctrl-C (or a crash) loses at most the run in
flight. A failed run is recorded with its error and the suite goes on.

Several processes may work on one output directory at once (``--gpus``, ``--workers``,
two ``fgvcbench run`` of the same suite, array jobs on a cluster): before a run starts,
its process *claims* it with an exclusive-create file ``claims/<run_id>.claim``; whoever
creates it runs it, the others go on to the next pending run. A claim whose process
died is taken over: on the same host when its pid is gone, from another host when its
heartbeat (the file's mtime, touched every minute while the run executes) is older than
10 minutes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fgvcbench.plugins import Registry
from fgvcbench.run import execute_run, resolve_device
from fgvcbench.store import (CLAIM_STALE_SECONDS, ONLY_HELP, RERUN_HELP, SCHEMA, Store, claim_stale_seconds,
                             data_counts, locked_append, pid_alive, record_data, record_is_newer, record_problem)
from fgvcbench.suite import Suite


@dataclass
class SuiteOutcome:
    ran: list[dict] = field(default_factory=list)
    skipped: int = 0
    elsewhere: int = 0          # pending runs another process had claimed
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.ran if r["status"] != "ok"]


def pending_runs(suite: Suite, store: Store):
    return [spec for spec in suite.runs if not store.is_finished(spec.run_id)]


def check_newer_records(suite: Suite, skip: set[str] = frozenset()) -> None:
    """A UserError where a run of the suite (as ``--only`` left it; not those in ``skip``,
    which ``--rerun`` moves aside) has a record a newer fgvcbench wrote: this version cannot
    read it, so the run would be trained again and its record moved aside, a finished run
    lost from every table."""
    from fgvcbench.errors import UserError
    store = Store(suite.output)
    newer = [spec.run_id for spec in suite.runs if spec.run_id not in skip and record_is_newer(store.get(spec.run_id))]
    if newer:
        schema, many = store.get(newer[0])["schema"], len(newer) > 1
        raise UserError(f"{len(newer)} record{'s' if many else ''} in {store.runs_dir} ({newer[0]}.json"
                        f"{', …' if many else ''}) {'were' if many else 'was'} written by a newer fgvcbench (schema "
                        f"{schema}; this one reads {SCHEMA}) — upgrade fgvcbench, or run into another --output (this "
                        f"version would train {'them' if many else 'it'} again)")


def check_data_versions(suite: Suite, registry: Registry, skip: set[str] = frozenset(), rerun: bool = True,
                        preview: bool = False) -> None:
    """First :func:`check_newer_records`; then a UserError where finished runs of the
    suite's grid (the whole grid, also outside ``--only``: the tables ``run`` prints cover it; not those in ``skip``, which ``--rerun``
    replaces) were made on other data than their dataset holds now: a run id names the
    dataset by its adapter, options and folder name, not by the folder's content, so
    resuming would skip those runs and the tables would mix two versions of the data.
    Every such dataset is named, with its counts then and now; its lists are read once and
    its files stat'ed (the first 4 KiB of each read). A dataset whose data cannot be read
    now is left to its runs, which say why. ``rerun``: the command has ``--rerun`` (the fix
    names it). ``preview`` (a dry run): only datasets read from a folder as they are — a
    view or generated data, which loading may write into the cache, is left to the run."""
    from fgvcbench.errors import UserError
    from fgvcbench.run import data_identity, load_splits
    from fgvcbench.spec import canonical_json, dataset_label
    check_newer_records(suite, skip)
    store = Store(suite.output)
    kept = {spec.run_id for spec in suite.runs}
    made: dict[str, list] = {}   # dataset (canonical JSON) -> [(spec, record data)] of its finished runs
    for spec in suite.grid if suite.grid is not None else suite.runs:
        adapter = registry.datasets.get(spec.dataset["name"])
        if spec.run_id in skip or adapter is None or (preview and not adapter.needs_root):
            continue
        record = store.finished(spec.run_id)   # what resuming would skip
        data = record_data(record) if record is not None else None
        if data is not None:
            made.setdefault(canonical_json(spec.dataset), []).append((spec, data))
    stale, outside, parts = 0, 0, []
    for runs in made.values():
        spec = runs[0][0]
        try:
            now = data_identity(spec, load_splits(spec, registry, suite.cache_dir), suite.cache_dir)
        except Exception:  # noqa: BLE001 — a dataset that cannot be read fails its runs, with the reason
            continue
        other = [(s, data) for s, data in runs if data["fingerprint"] != now["fingerprint"]]
        if not other:
            continue
        stale += len(other)
        outside += sum(s.run_id not in kept for s, _ in other)
        then = other[0][1]
        if then.get("unordered") is not None and then.get("unordered") == now["unordered"]:
            counts = ("the same images, labels and boxes in another order (its loader lists them unsorted: sort "
                      "each split's list, e.g. sorted(os.listdir(...)), so every machine sees one order)")
        elif data_counts(then) != data_counts(now):
            counts = f"then {data_counts(then)}, now {data_counts(now)}"
        else:
            counts = f"the same counts ({data_counts(now)}), other files, labels or boxes"
        where = f"in {spec.data_root}" if spec.data_root else "generated"
        parts.append(f"{dataset_label(spec.dataset)} {where}: {counts}")
    if not stale:
        return
    fix = "keep the new data's runs apart with another --output"
    if rerun:
        fix += (f", or run them again with --rerun all{' and without --only' if outside else ''} (the old records "
                f"move to {suite.output}/replaced/)")
    raise UserError(f"{stale} finished run{'s' if stale != 1 else ''} in {suite.output} {'were' if stale != 1 else 'was'} "
                    f"made on other data than there is now — {'; '.join(parts)} — {fix}")


def _split_terms(text: str) -> list[str]:
    """``a,b`` as terms, leaving commas inside parentheses alone:
    ``dataset=weak_shot(cub, ρ=0.2),seed=0`` is two terms."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth <= 0:
            terms.append(text[start:i])
            start = i + 1
    return terms + [text[start:]]


def _terms(selectors: list[str], option: str, help_text: str) -> list[str]:
    """``--only``/``--rerun`` values as terms (repeatable, comma-separated); none is an error."""
    from fgvcbench.errors import UserError
    terms = [t.strip() for s in selectors for t in _split_terms(s) if t.strip()]
    if not terms:
        raise UserError(f"{option} needs what to {'run' if option == '--only' else 'run again'}: {help_text}")
    return terms


def _matching(runs: list, term: str, aliases: dict | None = None) -> list:
    """The runs ``term`` names: a run id, a method, or ``method:variant`` — a variant by its
    label or by another name of the same computation (``aliases``: run id → names)."""
    method, colon, variant = term.partition(":")
    aliases = aliases or {}
    return [spec for spec in runs if term in _ids(spec)
            or (spec.method == method and (not colon or spec.variant == variant
                                           or variant in aliases.get(_ids(spec)[-1], ())))]


def _named_runs(suite: Suite, term: str, option: str, help_text: str) -> list:
    """The suite's runs ``term`` names (:func:`_matching`); a half-typed ``method:`` (refused
    rather than read as every variant) or a term that names none is a user error that lists
    the grid's method:variant pairs — and says so where ``--only`` left its runs out. A
    variant the grid lists under another name adds a note (the tables show that name)."""
    from fgvcbench.errors import UserError
    method, colon, variant = term.partition(":")
    if colon and not variant.strip():
        raise UserError(f"{option} {term!r}: no variant after ':' — write {method}:VARIANT, or {method} for all "
                        f"its variants")
    hit = _matching(suite.runs, term, suite.aliases)
    if not hit:
        methods = ", ".join(dict.fromkeys(f"{s.method}:{s.variant}" for s in suite.runs))
        if suite.grid is not None and _matching(suite.grid, term, suite.aliases):
            raise UserError(f"{option} {term!r} names no run that --only keeps (those: {methods}) — "
                            f"widen --only, or drop it")
        raise UserError(f"{option} {term!r} names no run of suite {suite.name!r} (its runs: {methods}) — "
                        f"use {help_text}; `fgvcbench run SUITE --dry-run` lists the run ids")
    if colon:
        labels = sorted({spec.variant for spec in hit if spec.variant != variant and term not in _ids(spec)})
        if labels:
            listed = " and ".join(f"{method}:{label}" for label in labels)
            note = (f"{option} {term}: variant {variant!r} computes the same runs as {listed}, which the suite "
                    f"lists — they run and show in the tables as {listed}", {spec.run_id for spec in hit})
            if note not in suite.notes:   # a term given twice says it once
                suite.notes.append(note)
    return hit


def _ids(spec) -> tuple[str, ...]:
    """A run's id, and under torchrun (world size above 1) also its one-process id, the one
    ``--dry-run`` lists."""
    import dataclasses
    if getattr(spec, "world_size", 1) > 1:
        return spec.run_id, dataclasses.replace(spec, world_size=1).run_id
    return (spec.run_id,)


def select_reruns(suite: Suite, selectors: list[str]) -> list:
    """The grid's runs that ``--rerun`` names: ``all``; ``diverged`` / ``failed`` (runs whose
    record has that status); a method; ``method:variant``; a run id. A selector that names
    nothing in the grid is a user error (a typo must not silently rerun nothing)."""
    store = Store(suite.output)
    chosen: dict[str, object] = {}
    for term in _terms(selectors, "--rerun", RERUN_HELP):
        if term in ("diverged", "failed"):
            hit = [spec for spec in suite.runs if (store.get(spec.run_id) or {}).get("status") == term]
        elif term == "all":
            hit = list(suite.runs)
        else:
            hit = _named_runs(suite, term, "--rerun", RERUN_HELP)
        for spec in hit:
            chosen.setdefault(spec.run_id, spec)
    return list(chosen.values())


def select_only(suite: Suite, selectors: list[str]) -> list:
    """The grid's runs that ``--only`` keeps, in grid order. Terms of one kind widen the
    choice (``seed=0,seed=1``: either seed); terms of different kinds narrow it
    (``finernet dataset=cub``: FineRNet's runs on cub), as benchopt's ``-s``/``-d`` do. A term
    that names nothing in the grid is a user error that lists what the grid has."""
    from fgvcbench.errors import UserError
    from fgvcbench.spec import dataset_label
    terms = _terms(selectors, "--only", ONLY_HELP)
    shown = {   # kind=VALUE: how a run's value is listed (a dataset by its label, which tells views apart)
        "dataset": lambda spec: dataset_label(spec.dataset),
        "backbone": lambda spec: spec.backbone["name"],
        "seed": lambda spec: str(spec.seed),
    }

    def values(key: str, spec) -> set[str]:   # what a term may name: a dataset by its name too
        return {shown[key](spec)} | ({spec.dataset["name"]} if key == "dataset" else set())
    groups: dict[str, set[str]] = {}
    for term in terms:
        key, eq, value = term.partition("=")
        key, value = key.strip(), value.strip()
        if eq and key not in shown:
            raise UserError(f"--only {term!r}: unknown key {key!r} — use {ONLY_HELP}")
        if eq:
            kind = key
            if key == "seed":   # seed=00 is seed 0
                try:
                    value = str(int(value))
                except ValueError:
                    raise UserError(f"--only {term!r}: a seed is an integer, e.g. seed=0") from None
            hit = {spec.run_id for spec in suite.runs if value in values(key, spec)}
            if not hit:
                have = ", ".join(sorted({shown[key](s) for s in suite.runs}))
                raise UserError(f"--only {term!r} names no run of suite {suite.name!r} (its {key}s: {have})")
        else:
            kind = "method"
            hit = {spec.run_id for spec in _named_runs(suite, term, "--only", ONLY_HELP)}
        groups.setdefault(kind, set()).update(hit)
    kept = set.intersection(*groups.values())
    if not kept:
        raise UserError(f"--only {' '.join(terms)}: no run of suite {suite.name!r} is all of these at once — "
                        f"`fgvcbench run SUITE --dry-run` lists the grid")
    return [spec for spec in suite.runs if spec.run_id in kept]


def move_reruns(suite: Suite, specs: list):
    """``--rerun``: move the chosen runs' records, artifacts and cached stages aside (to
    ``replaced/<UTC time>/``), so every executor sees them as pending and runs them from
    scratch. Returns (the lines that say what moved where, the ``Replaced`` or None)."""
    from datetime import datetime, timezone

    from fgvcbench.errors import UserError
    if not specs:
        return ["--rerun: no run of the grid matches; nothing to run again"], None
    claims = Claims(suite.output)
    busy = [spec.run_id for spec in specs if claims.held(spec.run_id)]
    if busy:   # its process would still write the old code's record over the rerun
        raise UserError(f"--rerun: {len(busy)} chosen run{'s are' if len(busy) != 1 else ' is'} running in another "
                        f"process ({', '.join(busy[:5])}) — let it finish or stop it, then run this again")
    store = Store(suite.output)
    aside = store.root / "replaced"
    if aside.exists() and not aside.is_dir():   # "Not a directory" would point at permissions
        raise UserError(f"--rerun: {aside} is a file, and old results are moved into a folder of that name — "
                        f"move the file away, then run the same command again")
    base = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        try:
            done = store.replace({spec.run_id: spec.method for spec in specs}, base if n == 1 else f"{base}-{n}")
            break
        except FileExistsError:   # another rerun within the same second
            continue
        except OSError as exc:
            raise UserError(f"--rerun: cannot move old results aside in {suite.output}: {exc.strerror or exc} — "
                            f"check the folder's permissions, then run the same command again") from None
    else:
        raise UserError(f"--rerun: {store.root / 'replaced'} holds too many folders named {base}* — move some away")
    if not done.records and not done.stages:   # at most the list of a stage never saved (killed inside it)
        import shutil
        shutil.rmtree(done.folder)
        return [f"--rerun: none of the {len(specs)} chosen runs has a record or cached stage yet; "
                f"they run as pending runs"], None
    plural = lambda n, word: f"{n} {word}{'s' if n != 1 else ''}"   # noqa: E731
    lines = [f"--rerun: {plural(len(done.records), 'record')}"
             + (f" and {plural(len(done.stages), 'cached stage')}" if done.stages else "")
             + f" moved to {done.folder} (move them back to restore); those runs run again from scratch"]
    if done.stages_by_method:
        lines.append(f"--rerun: some chosen runs had no list of their stages (no record yet, or one from before "
                     f"stage lists), so every cached stage of {', '.join(done.stages_by_method)} moved too")
    if done.sharing:
        lines.append(sharing_note(suite, specs, done.sharing))
    return lines, done


def sharing_note(suite: Suite, specs: list, sharing: list[str]) -> str:
    """The line about unchosen finished runs that used a stage the rerun moves: they keep
    their records, from the old computation. Rerunning only them afterwards would move the
    stage again (a loop), so the advice names the whole group, for one command."""
    runs = suite.grid if suite.grid is not None else suite.runs   # the suite's, not only what --only kept
    grid = {spec.run_id for spec in runs}
    group = {spec.run_id for spec in specs} | (set(sharing) & grid)
    methods = sorted({spec.method for spec in runs if spec.run_id in group})
    whole = all(spec.run_id in group for spec in runs if spec.method in methods)
    again = ",".join(methods) if whole else ",".join(sorted(group))
    left_out = group - {spec.run_id for spec in suite.runs}   # what this command's --only does not run
    n, others = len(sharing), len(set(sharing) - grid)
    return (f"--rerun: {n} finished run{'s' if n != 1 else ''} not chosen "
            f"({', '.join(sharing[:5])}{' …' if n > 5 else ''}) shared a cached stage with the chosen ones and "
            f"keep{'s' if n == 1 else ''} {'its' if n == 1 else 'their'} records from the old computation; for "
            f"results from one computation, rerun the whole group in one command: --rerun {again}"
            + (" without --only" if left_out else "")
            + (f" (and {others} of another suite writing this folder, through that suite)" if others else ""))


class Claims:
    """Exclusive claims on runs, shared by every process writing one output directory.
    ``claims/claimed.log`` gets one line per successful claim (run id, host, pid): the
    record of who ran what."""

    STALE_UNREADABLE_SECONDS = 60
    HEARTBEAT_SECONDS = 60   # a running claim's file is touched this often
    # a claim from another host is stale when its heartbeat is older than this (store.CLAIM_STALE_SECONDS)
    STALE_FOREIGN_SECONDS = CLAIM_STALE_SECONDS

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / "claims"
        self.host, self.pid = socket.gethostname(), os.getpid()

    def _path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.claim"

    def _stale(self, path: Path) -> bool:
        try:
            owner = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return True
        except (OSError, ValueError, RecursionError):  # killed while writing the claim
            owner = None
        if not isinstance(owner, dict):   # unreadable, or not a claim this code wrote: stale once old enough
            try:
                return time.time() - path.stat().st_mtime > self.STALE_UNREADABLE_SECONDS
            except OSError:
                return True
        if owner.get("host") == self.host:
            pid = owner.get("pid")
            return not (isinstance(pid, int) and pid > 0 and pid_alive(pid))
        limit = claim_stale_seconds(self.STALE_FOREIGN_SECONDS)
        try:
            return time.time() - path.stat().st_mtime > limit
        except OSError:
            return True

    def try_claim(self, run_id: str) -> bool:
        from fgvcbench.errors import UserError
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(run_id)
        if path.is_dir():   # nothing this code makes: a person's mistake, which no retry mends
            raise UserError(f"{path} is a folder where a claim file belongs — remove it, then run the same "
                            f"command again (finished runs are kept)")
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale(path):
                    return False
                try:
                    os.unlink(path)  # a dead process's claim: take it over
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"host": self.host, "pid": self.pid, "time": time.time()}))
            locked_append(self.dir / "claimed.log", f"{run_id} {self.host} {self.pid}\n")
            return True
        return False

    def heartbeat(self, run_id: str):
        """A context manager that touches the claim every ``HEARTBEAT_SECONDS`` while the
        run executes, so other hosts can tell a live claim from a dead job's."""
        import contextlib
        import threading

        @contextlib.contextmanager
        def beating():
            stop = threading.Event()

            def beat():
                while not stop.wait(self.HEARTBEAT_SECONDS):
                    try:
                        os.utime(self._path(run_id))
                    except OSError:
                        pass
            thread = threading.Thread(target=beat, name=f"claim-{run_id}", daemon=True)
            thread.start()
            try:
                yield
            finally:
                stop.set()
        return beating()

    def held(self, run_id: str) -> bool:
        """True while a live process holds the run's claim."""
        path = self._path(run_id)
        return path.exists() and not self._stale(path)

    def release(self, run_id: str) -> None:
        try:
            os.unlink(self._path(run_id))
        except FileNotFoundError:
            pass


def run_suite(suite: Suite, registry: Registry, console: Console | None = None,
              show_progress: bool = True, shared_by: int = 1) -> SuiteOutcome:
    from fgvcbench import distributed
    main = distributed.is_main()
    console = console or Console()
    if not main:  # under torchrun only rank 0 prints and writes
        console, show_progress = Console(quiet=True), False
    store = Store(suite.output)
    device = distributed.local_device(resolve_device(suite.device))
    todo = pending_runs(suite, store) if main else []
    if distributed.active():  # every rank runs rank 0's list, in rank 0's order
        wanted = set(distributed.broadcast([s.run_id for s in todo]))
        todo = [s for s in suite.runs if s.run_id in wanted]
    claims = Claims(suite.output)
    if main:
        store.sweep_temporary()
    outcome = SuiteOutcome(skipped=len(suite.runs) - len(todo))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show_progress, transient=False) as progress:
        suite_task = progress.add_task(f"suite {suite.name}", total=len(suite.runs), completed=outcome.skipped)
        epoch_task = progress.add_task("epochs", total=None, visible=False)
        batch_task = progress.add_task("batches", total=None, visible=False)
        for spec in todo:
            finished = distributed.broadcast(store.is_finished(spec.run_id) if main else None)
            if finished:  # another process finished it meanwhile
                outcome.skipped += 1
                progress.update(suite_task, advance=1)
                continue
            if not distributed.broadcast(claims.try_claim(spec.run_id) if main else None):
                outcome.elsewhere += 1  # another live process is running it
                continue
            label = escape(spec.label)   # "[variant]" is text, not rich markup
            progress.update(epoch_task, description=label, completed=0, total=None, visible=True)

            def on_epoch(row, _spec=spec):
                total = None if "phase" in row else _spec.recipe["epochs"]
                progress.update(epoch_task, advance=1, total=total)

            def on_batch(done, total):
                progress.update(batch_task, completed=done, total=total, visible=True)

            try:
                with claims.heartbeat(spec.run_id):
                    record = execute_run(spec, registry, store, device=device, cache_dir=suite.cache_dir,
                                         on_epoch=on_epoch, on_batch=on_batch, shared_by=shared_by)
            except KeyboardInterrupt:
                claims.release(spec.run_id)
                outcome.interrupted = True
                break
            if not main:  # rank 0 writes the record
                outcome.ran.append(record)
                distributed.barrier()
                continue
            try:
                store.write(record)
            except OSError as exc:  # disk full, permissions…: say so, keep going, exit non-zero
                claims.release(spec.run_id)
                distributed.barrier()
                record = dict(record, status="failed",
                              error=f"could not write the record to {store.record_path(spec.run_id)}: {exc}")
                console.print(f"[red]✗ not saved[/] {label}  [dim]{spec.run_id}[/]: {escape(str(exc))} — free "
                              f"space or fix permissions, then run again (this run will be redone)", highlight=False)
                outcome.ran.append(record)
                progress.update(suite_task, advance=1)
                continue
            claims.release(spec.run_id)
            distributed.barrier()
            outcome.ran.append(record)
            outcome.warnings.extend(registry.notify_run_finished(record))
            status = record["status"]
            if status == "ok":
                m = record["metrics"]
                console.print(f"[green]✓[/] {label}  top1 {m['top1']:.2f}%  "
                              f"({record['cost']['wall_seconds']:.0f}s)  [dim]{spec.run_id}[/]", highlight=False)
            else:
                first = (record["error"] or "").splitlines()[0] if record["error"] else ""
                console.print(f"[red]✗ {status}[/] {label}  [dim]{spec.run_id}[/]: {escape(first)}", highlight=False)
            progress.update(suite_task, advance=1)
        progress.update(epoch_task, visible=False)
        progress.update(batch_task, visible=False)
    return outcome


def grid_status(suite: Suite) -> list[tuple[object, str]]:
    """(spec, status) for each run of the grid: ok / diverged / failed / pending, or running
    where no record is finished and a live process holds the run's claim (another
    ``fgvcbench run`` of the same output, a worker, a cluster job)."""
    store, claims = Store(suite.output), Claims(suite.output)
    out = []
    for spec in suite.runs:
        record = store.get(spec.run_id)
        if record and record_problem(record) is None:
            out.append((spec, record["status"]))
        else:
            out.append((spec, "running" if claims.held(spec.run_id) else "pending"))
    return out


def _worker(load_args: dict, device: str, shared_by: int = 1, run_ids: list[str] | None = None) -> None:
    """One worker process: load the suite as the parent did (a Suite holds closures and
    does not pickle), keep the parent's runs (``run_ids``: what ``--only`` left), then the
    same claim loop as a single ``fgvcbench run``; its records say how many workers share
    its device."""
    from fgvcbench._cli_output import guard_stdout
    from fgvcbench.plugins import get_registry
    from fgvcbench.suite import load_suite
    guard_stdout()   # a reader that goes away (`| head`) does not stop this worker's runs
    registry = get_registry()
    if device.startswith("cuda:"):   # what uses "the current GPU" (pinned-memory threads, …) uses this one
        import torch
        torch.cuda.set_device(torch.device(device))
    try:
        suite = load_suite(registry=registry, **{**load_args, "device": device, "check_weights": False})
        if run_ids is not None:
            wanted = set(run_ids)
            suite.runs = [spec for spec in suite.runs if spec.run_id in wanted]
        run_suite(suite, registry, console=Console(soft_wrap=True), show_progress=False, shared_by=shared_by)
    except KeyboardInterrupt:
        pass


def run_suite_workers(suite: Suite, devices: list[str], load_args: dict,
                      console: Console | None = None) -> SuiteOutcome:
    """Run a suite with one worker process per entry of ``devices`` (``cuda:0``,
    ``cuda:1`` … for ``--gpus``; the suite's device repeated for ``--workers``); each
    worker loads the suite from ``load_args`` (``load_suite``'s keyword arguments) and
    takes the next pending run it can claim. Returns what this session finished."""
    import multiprocessing as mp
    console = console or Console()
    store = Store(suite.output)
    todo = pending_runs(suite, store)
    outcome = SuiteOutcome(skipped=len(suite.runs) - len(todo))
    if not todo:
        console.print("nothing pending: every run of the grid has a record", highlight=False)
        return outcome
    devices = devices[:len(todo)]   # a worker more than there are runs would only start and stop
    context = mp.get_context("spawn")  # CUDA cannot be forked; every worker starts clean
    run_ids = [spec.run_id for spec in suite.runs]   # the grid, or what --only kept of it
    workers = [context.Process(target=_worker, args=(load_args, device, devices.count(device), run_ids),
                               name=f"fgvcbench-worker-{i}")
               for i, device in enumerate(devices)]
    console.print(f"{len(todo)} pending run{'s' if len(todo) != 1 else ''} on {len(workers)} "
                  f"worker{'s' if len(workers) != 1 else ''}: "
                  f"{', '.join(devices)}", highlight=False, markup=False)
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.join()
    except KeyboardInterrupt:  # the workers got the same SIGINT and stop after saving
        outcome.interrupted = True
        for w in workers:
            w.join()
    for spec in todo:
        record = store.get(spec.run_id)
        if record is not None:
            outcome.ran.append(record)
    if any(w.exitcode not in (0, None) for w in workers):
        codes = ", ".join(f"{w.name}: {w.exitcode}" for w in workers if w.exitcode)
        outcome.warnings.append(f"worker processes ended abnormally ({codes}); run the same command to resume")
    if len(outcome.ran) < len(todo) and not outcome.interrupted:
        outcome.warnings.append(f"{len(todo) - len(outcome.ran)} runs have no record yet — run again to resume")
    return outcome
