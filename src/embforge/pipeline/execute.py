"""Running a planned pipeline: skip the steps already done, run the rest, record a marker after each.

After a step's outputs are in place (each is written atomically), a marker recording the hash of the
step's inputs is written, atomically too. A rerun skips a step whose marker matches and whose outputs
exist; anything else (no marker, a changed config or input file, a rerun upstream step) runs again. An
interrupted step has no marker, so it reruns; a ``.started`` file holding its hash tells the rerun that
the same attempt was interrupted, so training may restart from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import EmbforgeError
from ..paths import atomic_write_bytes
from .memory import peak_rss_bytes, release_memory, rss_bytes
from .report import print_summary
from .slicing import slice_input
from .steps import Pipeline, Step

MARKERS = ".embforge-steps"


def path_digest(path: str | os.PathLike[str]) -> str:
    """Content hash of a file, or of a folder's files (relative names + contents); hidden files skipped."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()
                                             and not any(part.startswith(".") for part in f.relative_to(p).parts))
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def step_hash(step: Step, tokens: Mapping[str, str], digests: dict[str, str]) -> str:
    """Hash of everything a step's result depends on: its settings, upstream runs and input files.

    An input produced by an upstream step is identified by that step's run token (which changes
    each time the step runs), not by its bytes: cheaper, and a model card edited by a later step
    does not invalidate anything.
    """
    produced = {name: tokens.get(name, "missing") for name in step.upstream}
    files = {}
    for role, path in step.inputs.items():
        if path not in digests:
            digests[path] = path_digest(path) if Path(path).exists() else "missing"
        files[role] = digests[path]
    blob = json.dumps({"step": step.name, "config": step.config, "upstream": produced, "files": files},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_marker(marks: Path, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((marks / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(marks: Path, name: str, data: dict[str, Any]) -> None:
    atomic_write_bytes(marks / f"{name}.json", json.dumps(data, indent=2, default=str).encode("utf-8"))


def is_done(step: Step, marker: dict[str, Any] | None, digest: str) -> bool:
    if not marker:
        return False
    return marker.get("hash") == digest and all(Path(o).exists() for o in step.outputs)


def execute(pipe: Pipeline, force: bool = False) -> dict[str, Any]:
    """Run (or resume) a planned pipeline; returns the final report, also written to OUTPUT_DIR/report.json.

    ``force`` reruns every step even when its marker says it is done.
    """
    marks = pipe.output_dir / MARKERS
    marks.mkdir(parents=True, exist_ok=True)
    for source, slice_dir in pipe.sliced.items():
        slice_input(source, slice_dir)
    tokens: dict[str, str] = {}
    digests: dict[str, str] = {}
    log: dict[str, Any] = {}
    t_start = time.perf_counter()
    for i, step in enumerate(pipe.steps, 1):
        counter = f"[{i}/{len(pipe.steps)}] {step.name}"
        digest = step_hash(step, tokens, digests)
        marker = read_marker(marks, step.name)
        if not force and is_done(step, marker, digest):
            assert marker is not None
            tokens[step.name] = marker["token"]
            log[step.name] = {"skipped": True, "seconds": marker.get("seconds"), **(marker.get("result") or {})}
            print(f"{counter}: done before (inputs unchanged), skipped", flush=True)
            continue
        print(counter, flush=True)
        tokens[step.name], log[step.name] = _run_step(pipe, step, marks, digest)
        entry = log[step.name]
        memory = f", peak RSS so far {entry['peak_rss_mb']} MB, {entry['rss_mb']} MB held after" if "rss_mb" in entry else ""
        print(f"{counter}: {entry['seconds']:.1f} s{memory}", flush=True)
    total = round(time.perf_counter() - t_start, 2)
    report_path = pipe.output_dir / "report.json"
    # Read back: the report step wrote report.json (in this run or, when skipped, an earlier one).
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["run"] = {"steps": log, "total_s": total, "sanity_test": pipe.sanity_test}
    atomic_write_bytes(report_path, json.dumps(report, indent=2, default=str).encode("utf-8"))
    print_summary(report, total)
    return report


def _run_step(pipe: Pipeline, step: Step, marks: Path, digest: str) -> tuple[str, dict[str, Any]]:
    """Run one step and mark it done; returns its new run token and its log entry."""
    (marks / f"{step.name}.json").unlink(missing_ok=True)
    started = marks / f"{step.name}.started"
    if started.is_file() and started.read_text() == digest:
        pipe.resumable.add(step.name)
    atomic_write_bytes(started, digest.encode())
    t0 = time.perf_counter()
    try:
        result = step.action()
    finally:
        # The next step starts from what the process needs, not this one's peak (see .memory).
        release_memory()
    seconds = round(time.perf_counter() - t0, 2)
    missing = [o for o in step.outputs if not Path(o).exists()]
    if missing:
        raise EmbforgeError(f"step {step.name} finished without writing {missing[0]}")
    token = hashlib.sha256(f"{digest}:{time.time_ns()}".encode()).hexdigest()
    write_marker(marks, step.name, {"step": step.name, "hash": digest, "token": token, "seconds": seconds,
                                    "outputs": step.outputs, "result": result})
    started.unlink(missing_ok=True)
    peak, held = peak_rss_bytes(), rss_bytes()
    memory = {"peak_rss_mb": round(peak / 2**20), "rss_mb": round(held / 2**20)} if peak and held else {}
    return token, {"skipped": False, "seconds": seconds, **result, **memory}
