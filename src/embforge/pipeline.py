"""``embforge run``: one YAML drives mine -> train -> eval -> merge -> eval -> report.

Each section of the YAML is the config of one command (the same keys as its flags), checked in
full before anything runs, so a typo on line 30 fails in a second and not after an hour of
training. The pipeline wires the steps together (the mined file feeds training, the trained model
feeds the merge and the evaluations) and runs them in this order::

    mine -> eval-base -> train -> eval-trained -> merge -> eval-merged -> report

Resuming: after a step's outputs are in place (each is written atomically), a marker recording
the hash of the step's inputs is written, atomically too. A rerun skips a step whose marker
matches and whose outputs exist; anything else (no marker, a changed config or input file, a
rerun upstream step) runs again. An interrupted step has no marker, so it reruns; an interrupted
training run restarts from its last checkpoint when it wrote any.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import alias_map, did_you_mean, from_dict, load_yaml
from .errors import EmbforgeError
from .model.card import model_label
from .paths import atomic_write_bytes

SECTIONS = ("mine", "train", "eval", "merge", "report")
TOP_KEYS = ("name", "model", "output_dir", *SECTIONS)
MARKERS = ".embforge-steps"
REPORT_KEYS = ("title",)

# --sanity_test: BEIR inputs are cut to this many queries per split, and the corpus to their
# positives plus this many other documents, so every step runs the real code in seconds.
SANITY_QUERIES = 8
SANITY_DOCS = 40


@dataclass
class Step:
    """One unit of work: what it reads, what it writes and how to run it."""

    name: str
    config: dict[str, Any]                  # the step's settings, as hashed
    inputs: dict[str, str]                  # role -> file or folder read that no step of this run writes
    outputs: list[str]                      # paths that must exist for the step to count as done
    action: Callable[[], dict[str, Any]]
    upstream: list[str] = field(default_factory=list)  # steps whose outputs are inputs here


@dataclass
class Pipeline:
    name: str
    source: str
    output_dir: Path
    steps: list[Step]
    sanity_test: bool = False
    models: dict[str, str] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)
    # Steps whose previous attempt, with the same input hash, was interrupted: they may resume.
    resumable: set[str] = field(default_factory=set)


# ---------------------------------------------------------------------------- YAML -> validated configs
def _key_lines(path: Path) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key, by its path of keys, for error messages."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = (*prefix, str(key.value))
                lines[k] = key.start_mark.line + 1
                walk(value, k)

    try:
        walk(yaml.compose(path.read_text(encoding="utf-8")), ())
    except yaml.YAMLError:
        pass
    return lines


def _where(source: str, lines: Mapping[tuple[str, ...], int], *keys: str) -> str:
    line = lines.get(tuple(keys))
    return f"{source}:{line}" if line else source


def _check_keys(cls: type, section: Mapping[str, Any], step: str, source: str,
                lines: Mapping[tuple[str, ...], int], reserved: tuple[str, ...] = ()) -> None:
    known = alias_map(cls)
    for key in section:
        if key in reserved:
            raise EmbforgeError(f"{_where(source, lines, step, key)}: {key!r} in the {step} step is filled in by the "
                                "pipeline; set the top-level model or output_dir instead")
        if key not in known:
            hint = did_you_mean(key, [k for k in known if k not in reserved])
            raise EmbforgeError(f"{_where(source, lines, step, key)}: unknown key {key!r} in the {step} step{hint}")


def _section(raw: Mapping[str, Any], name: str, source: str, lines: Mapping[tuple[str, ...], int]) -> dict | None:
    if name not in raw:
        return None
    value = raw[name]
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EmbforgeError(f"{_where(source, lines, name)}: {name} must be a mapping of option: value, "
                            f"got {type(value).__name__}")
    return dict(value)


def _must_exist(path: Any, what: str, where: str) -> str:
    if path is None or str(path) == "":
        raise EmbforgeError(f"{where}: {what} is missing")
    if not Path(str(path)).exists():
        raise EmbforgeError(f"{where}: {what} {path} not found")
    return str(path)


def load_pipeline(config: str | os.PathLike | Mapping[str, Any], sanity_test: bool = False,
                  output_dir: str | os.PathLike | None = None) -> Pipeline:
    """Validate a pipeline YAML (or mapping) and plan its steps; nothing is run or written yet."""
    from .commands import eval as eval_cmd
    from .commands import merge as merge_cmd
    from .commands import mine as mine_cmd
    from .commands import train as train_cmd
    from .mining import parse_range
    from .paths import resolve_model_path

    if isinstance(config, Mapping):
        raw, source, lines, here = dict(config), "pipeline", {}, Path(".")
    else:
        path = Path(config)
        raw, source, lines, here = load_yaml(path), str(path), _key_lines(path), path.parent

    def rel(value: Any) -> Any:
        """Input paths in a YAML are relative to its folder, so a pipeline runs from any directory."""
        if value is None or str(value) in ("", "default") or Path(str(value)).is_absolute():
            return value
        return str(here / str(value))
    for key in raw:
        if key not in TOP_KEYS:
            raise EmbforgeError(f"{_where(source, lines, key)}: unknown key {key!r}{did_you_mean(key, TOP_KEYS)} "
                                f"(a pipeline has {', '.join(TOP_KEYS)})")
    sections = {name: _section(raw, name, source, lines) for name in SECTIONS}
    if not any(sections[s] is not None for s in ("mine", "train", "eval", "merge")):
        raise EmbforgeError(f"{source}: no steps: give at least one of mine, train, eval, merge")

    out = Path(output_dir or raw.get("output_dir") or "runs/pipeline")
    if sanity_test:
        out = out / "sanity_test"
    base = rel(raw.get("model"))
    try:
        base_path = str(resolve_model_path(base))
    except EmbforgeError as exc:
        raise EmbforgeError(f"{_where(source, lines, 'model')}: {exc}") from exc
    base_label = model_label(base)
    pipe = Pipeline(name=str(raw.get("name") or Path(source).stem), source=source, output_dir=out, steps=[],
                    sanity_test=sanity_test, models={"base": base_path})
    sliced: dict[str, str] = {}

    def data_input(value: Any, what: str, where: str) -> str:
        path = _must_exist(rel(value), what, where)
        if sanity_test:
            from .data.beir import is_beir_folder

            if is_beir_folder(Path(path)):
                return sliced.setdefault(path, str(out / "data" / f"{len(sliced)}_{Path(path).name}"))
        return path

    # ---- mine
    mined = None
    mine = sections["mine"]
    if mine is not None:
        _check_keys(mine_cmd.Config, mine, "mine", source, lines, reserved=("model_name_or_path", "model", "encoder"))
        wired = {"model_name_or_path": base_path, "output_file": mine.get("output_file") or str(out / "mine" / "train.jsonl")}
        cfg = from_dict(mine_cmd.Config, {**mine, **wired}, source=f"{source} [mine]")
        try:
            parse_range(cfg.range_for_sampling)
        except EmbforgeError as exc:
            raise EmbforgeError(f"{_where(source, lines, 'mine', 'range_for_sampling')}: {exc}") from exc
        where = _where(source, lines, "mine", "input_file")
        cfg.input_file = data_input(cfg.input_file, "mine.input_file", where)
        mined = cfg.output_file
        pipe.steps.append(Step("mine", _public(cfg), {"data": cfg.input_file, "model": base_path}, [mined],
                               _runner(mine_cmd.run, cfg)))

    # ---- eval (its config is shared by the three evaluations)
    ev = sections["eval"]
    eval_cfg = None
    if ev is not None:
        _check_keys(eval_cmd.Config, ev, "eval", source, lines, reserved=("model", "model_name_or_path", "encoder",
                                                                          "report"))
        eval_cfg = from_dict(eval_cmd.Config, ev, source=f"{source} [eval]")
        for key in ("k", "dims"):  # parsed when the step runs; checked now
            try:
                eval_cmd.parse_ints(getattr(eval_cfg, key), key)
            except EmbforgeError as exc:
                raise EmbforgeError(f"{_where(source, lines, 'eval', key)}: eval.{exc}") from exc
        eval_cfg.data = data_input(eval_cfg.data, "eval.data", _where(source, lines, "eval", "data"))

    def add_eval(label: str, model: str, after: list[str]) -> None:
        assert eval_cfg is not None
        report = str(out / "eval" / f"{label}.json")
        cfg = dataclasses.replace(eval_cfg, model=model, report=report)
        pipe.reports[label] = report
        card_model = None if label == "base" else model
        inputs = {"data": cfg.data} | ({"model": model} if not after else {})
        pipe.steps.append(Step(f"eval-{label}", _public(cfg), inputs, [report],
                               _eval_runner(eval_cmd.run, cfg, card_model, pipe.reports), upstream=after))

    if eval_cfg is not None:
        add_eval("base", base_path, [])

    # ---- train
    trained = None
    tr = sections["train"]
    if tr is not None:
        _check_keys(train_cmd.Config, tr, "train", source, lines,
                    reserved=("model_name_or_path", "model", "model_name", "output_dir"))
        # The pipeline owns its train folder: a rerun with changed settings replaces the earlier run there.
        wired = {"model_name_or_path": base_path, "output_dir": str(out / "train"), "overwrite_output_dir": True}
        if sanity_test:
            wired["sanity_test"] = True
        if tr.get("train_data") is None:
            if mined is None:
                raise EmbforgeError(f"{_where(source, lines, 'train')}: the train step has no data: add a mine step "
                                    "or give train.train_data")
            wired["train_data"] = mined
        else:
            tr["train_data"] = data_input(tr["train_data"], "train.train_data",
                                          _where(source, lines, "train", "train_data"))
        cfg = from_dict(train_cmd.Config, {**tr, **wired}, source=f"{source} [train]")
        trained = str(out / "train")
        pipe.models["trained"] = trained
        settings = {k: v for k, v in {**tr, **wired}.items() if k not in ("output_dir", "overwrite_output_dir")}
        inputs = {"model": base_path} | ({} if mined else {"data": str(cfg.train_data)})
        pipe.steps.append(Step("train", settings, inputs,
                               [trained], _train_runner(cfg, pipe), upstream=["mine"] if mined else []))
        if eval_cfg is not None:
            add_eval("trained", trained, ["train"])

    # ---- merge
    mg = sections["merge"]
    if mg is not None:
        _check_keys(merge_cmd.Config, mg, "merge", source, lines, reserved=("output_dir",))
        models = [rel(m) for m in mg.get("models") or []]
        if not models:
            if trained is None:
                raise EmbforgeError(f"{_where(source, lines, 'merge')}: the merge step has nothing to merge: add a "
                                    "train step or give merge.models")
            models = [trained]
        cfg = from_dict(merge_cmd.Config, {**mg, "models": models, "base": rel(mg.get("base")),
                                           "output_dir": str(out / "merged")},
                        source=f"{source} [merge]")
        if cfg.base is None and mg.get("models") is None:
            cfg.base = base_path
        for i, m in enumerate(cfg.models):
            if m != trained:
                _must_exist(m, f"merge.models[{i}]", _where(source, lines, "merge", "models"))
        merged = cfg.output_dir
        pipe.models["merged"] = merged
        inputs = {f"model{i}": m for i, m in enumerate(cfg.all_models()) if m != trained}
        pipe.steps.append(Step("merge", _public(cfg), inputs, [merged], _runner(merge_cmd.run, cfg),
                               upstream=["train"] if trained in cfg.models else []))
        if eval_cfg is not None:
            add_eval("merged", merged, ["merge"])

    # ---- report
    rep = sections["report"] or {}
    for key in rep:
        if key not in REPORT_KEYS:
            raise EmbforgeError(f"{_where(source, lines, 'report', key)}: unknown key {key!r} in the report step"
                                f"{did_you_mean(key, REPORT_KEYS)}")
    title = rep.get("title") or pipe.name
    if eval_cfg is not None:
        outputs = [str(out / "report.json"), str(out / "report.png")]
        pipe.steps.append(Step("report", {"title": title, "labels": {"base": base_label}}, {},
                               outputs, lambda: write_report(pipe, title, base_label),
                               upstream=[s.name for s in pipe.steps if s.name.startswith("eval-")]))
    pipe.sliced = sliced  # type: ignore[attr-defined]
    return pipe


def _public(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def _runner(run: Callable[[Any], Any], cfg: Any) -> Callable[[], dict[str, Any]]:
    def go() -> dict[str, Any]:
        result = run(cfg)
        return result if isinstance(result, dict) else {}
    return go


def _eval_runner(run: Callable[[Any], Any], cfg: Any, card_model: str | None,
                 reports: dict[str, str]) -> Callable[[], dict[str, Any]]:
    """Evaluate, then put the result (and the base model's, for comparison) into the model's card."""
    def go() -> dict[str, Any]:
        report = run(cfg)
        if card_model is not None:
            from .model.card import add_eval

            base = reports.get("base")
            if base and Path(base).is_file():
                add_eval(card_model, "base model (before)", json.loads(Path(base).read_text()))
            add_eval(card_model, "this model", report)
        return {"metrics": report.get("metrics", {})}
    return go


def _train_runner(cfg: Any, pipe: Pipeline) -> Callable[[], dict[str, Any]]:
    def go() -> dict[str, Any]:
        from transformers.trainer_utils import get_last_checkpoint

        from .training.run import train

        out = Path(cfg.output_dir)
        if out.is_dir() and cfg.resume_from_checkpoint is None and "train" in pipe.resumable:
            last = get_last_checkpoint(str(out))
            if last is not None:
                print(f"resuming the interrupted train step from {last}")
                cfg.resume_from_checkpoint = last
        train(cfg)
        report = out / "train_report.json"
        data = json.loads(report.read_text()) if report.is_file() else {}
        return {k: data.get(k) for k in ("global_steps", "train_runtime_s", "final_loss")}
    return go


# ---------------------------------------------------------------------------- hashing and markers
def path_digest(path: str | os.PathLike) -> str:
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
    return bool(marker) and marker.get("hash") == digest and all(Path(o).exists() for o in step.outputs)


# ---------------------------------------------------------------------------- running
def run_pipeline(config_or_path: str | os.PathLike | Mapping[str, Any], sanity_test: bool = False,
                 output_dir: str | os.PathLike | None = None, force: bool = False) -> dict[str, Any]:
    """Run (or resume) a pipeline; returns the final report (also written to OUTPUT_DIR/report.json).

    ``force`` reruns every step even when its marker says it is done.
    """
    pipe = load_pipeline(config_or_path, sanity_test=sanity_test, output_dir=output_dir)
    return execute(pipe, force=force)


def execute(pipe: Pipeline, force: bool = False) -> dict[str, Any]:
    marks = pipe.output_dir / MARKERS
    marks.mkdir(parents=True, exist_ok=True)
    for src, dst in getattr(pipe, "sliced", {}).items():
        slice_beir(src, dst)
    tokens: dict[str, str] = {}
    digests: dict[str, str] = {}
    log: dict[str, Any] = {}
    t_start = time.perf_counter()
    for i, step in enumerate(pipe.steps, 1):
        digest = step_hash(step, tokens, digests)
        marker = read_marker(marks, step.name)
        if not force and is_done(step, marker, digest):
            assert marker is not None
            tokens[step.name] = marker["token"]
            log[step.name] = {"skipped": True, "seconds": marker.get("seconds"), **(marker.get("result") or {})}
            print(f"[{i}/{len(pipe.steps)}] {step.name}: done before (inputs unchanged), skipped", flush=True)
            continue
        (marks / f"{step.name}.json").unlink(missing_ok=True)
        print(f"[{i}/{len(pipe.steps)}] {step.name}", flush=True)
        started = marks / f"{step.name}.started"
        if started.is_file() and started.read_text() == digest:
            pipe.resumable.add(step.name)
        atomic_write_bytes(started, digest.encode())
        t0 = time.perf_counter()
        result = step.action()
        seconds = round(time.perf_counter() - t0, 2)
        missing = [o for o in step.outputs if not Path(o).exists()]
        if missing:
            raise EmbforgeError(f"step {step.name} finished without writing {missing[0]}")
        token = hashlib.sha256(f"{digest}:{time.time_ns()}".encode()).hexdigest()
        write_marker(marks, step.name, {"step": step.name, "hash": digest, "token": token, "seconds": seconds,
                                        "outputs": step.outputs, "result": result})
        started.unlink(missing_ok=True)
        tokens[step.name] = token
        log[step.name] = {"skipped": False, "seconds": seconds, **result}
        print(f"[{i}/{len(pipe.steps)}] {step.name}: {seconds:.1f} s", flush=True)
    total = round(time.perf_counter() - t_start, 2)
    report_path = pipe.output_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["run"] = {"steps": log, "total_s": total, "sanity_test": pipe.sanity_test}
    atomic_write_bytes(report_path, json.dumps(report, indent=2, default=str).encode("utf-8"))
    _print_summary(report, total)
    return report


def _print_summary(report: Mapping[str, Any], total: float) -> None:
    summary = report.get("summary") or {}
    if summary:
        labels = list(next(iter(summary.values())))
        print("metric".ljust(14) + "".join(label.rjust(10) for label in labels))
        for metric, row in summary.items():
            print(metric.ljust(14) + "".join(f"{row.get(label, float('nan')):10.4f}" for label in labels))
    print(f"pipeline finished in {total:.0f} s")


# ---------------------------------------------------------------------------- the final report
MAIN_METRICS = ("nDCG@10", "MRR@10", "Recall@100", "spearman")


def write_report(pipe: Pipeline, title: str, base_label: str) -> dict[str, Any]:
    """report.json (every eval, per dim) and report.png (before/after per metric, and per dim)."""
    evals = {label: json.loads(Path(path).read_text()) for label, path in pipe.reports.items()}
    per_dim = {label: r.get("dims", {}) for label, r in evals.items()}
    full = {label: r.get("metrics", {}) for label, r in evals.items()}
    metrics = [m for m in next(iter(full.values()), {}) if isinstance(next(iter(full.values()))[m], float)]
    summary = {m: {label: full[label].get(m) for label in full} for m in metrics}
    models = dict(pipe.models)
    report = {"title": title, "pipeline": pipe.source, "output_dir": str(pipe.output_dir),
              "models": models, "base_model": base_label, "summary": summary, "dims": per_dim,
              "evals": {label: {k: r.get(k) for k in ("data", "split", "queries", "corpus_size", "timings")}
                        for label, r in evals.items()}}
    if "base" in full:
        report["gain"] = {label: {m: (full[label].get(m) or 0.0) - (full["base"].get(m) or 0.0) for m in metrics}
                          for label in full if label != "base"}
    atomic_write_bytes(pipe.output_dir / "report.json", json.dumps(report, indent=2).encode("utf-8"))
    plot_report(pipe.output_dir / "report.png", summary, per_dim, title)
    return {"summary": {m: summary[m] for m in metrics if m in MAIN_METRICS}}


def plot_report(path: Path, summary: Mapping[str, Mapping[str, float]],
                per_dim: Mapping[str, Mapping[str, Mapping[str, float]]], title: str) -> Path:
    import numpy as np

    from .figures import pyplot, save_png

    plt = pyplot()

    labels = list(per_dim)
    metrics = list(summary)
    main = next((m for m in MAIN_METRICS if m in summary), metrics[0] if metrics else None)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(metrics))
    for j, label in enumerate(labels):
        values = [summary[m].get(label) or 0.0 for m in metrics]
        bars = ax1.bar(x + (j - (len(labels) - 1) / 2) * width, values, width, label=label)
        if len(metrics) <= 12:
            ax1.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    ax1.set_xticks(x)
    ax1.set_xticklabels(metrics, rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("score")
    ax1.set_ylim(0, 1.3)  # headroom for the value labels and the legend above the bars
    ax1.set_title("before / after, per metric (full dimension)")
    ax1.legend(fontsize=8, ncol=max(len(labels), 1), loc="upper center")
    ax1.grid(axis="y", alpha=0.3)
    if main is not None:
        for label in labels:
            dims = sorted(per_dim[label], key=int)
            ax2.plot([int(d) for d in dims], [per_dim[label][d].get(main) for d in dims], marker="o", label=label)
        ax2.set_xscale("log", base=2)
        all_dims = sorted({int(d) for label in labels for d in per_dim[label]})
        ax2.set_xticks(all_dims)
        ax2.set_xticklabels([str(d) for d in all_dims])
        ax2.minorticks_off()
        ax2.set_xlabel("embedding dimensions")
        ax2.set_ylabel(main)
        ax2.set_title(f"{main} per dim")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.suptitle(title)
    return save_png(fig, path)


# ---------------------------------------------------------------------------- --sanity_test data
def slice_beir(src: str | os.PathLike, dst: str | os.PathLike, n_queries: int = SANITY_QUERIES,
               n_docs: int = SANITY_DOCS) -> Path:
    """A small BEIR folder: the first queries of each split, their positives and a few other docs.

    Deterministic, so reruns hash the same and resume.
    """
    from .data.beir import iter_qrels
    from .paths import atomic_dir

    src, dst = Path(src), Path(dst)
    if (dst / "corpus.jsonl").is_file():
        return dst
    qrel_files = sorted((src / "qrels").glob("*.tsv"))
    keep_q: set[str] = set()
    keep_d: set[str] = set()
    rows: dict[str, list[tuple[str, str, int]]] = {}
    for qf in qrel_files:
        chosen: list[str] = []
        for _, qid, did, rel in iter_qrels(qf):
            if qid not in chosen:
                if len(chosen) >= n_queries:
                    continue
                chosen.append(qid)
            rows.setdefault(qf.name, []).append((qid, did, rel))
            keep_d.add(did)
        keep_q.update(chosen)
    with atomic_dir(dst, command="run slice") as tmp:
        (tmp / "qrels").mkdir()
        for name, triples in rows.items():
            body = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in triples)
            (tmp / "qrels" / name).write_text(body, encoding="utf-8")
        with (src / "queries.jsonl").open(encoding="utf-8") as fh, (tmp / "queries.jsonl").open("w") as out:
            for line in fh:
                if line.strip() and str(json.loads(line).get("_id")) in keep_q:
                    out.write(line)
        extra = 0
        with (src / "corpus.jsonl").open(encoding="utf-8") as fh, (tmp / "corpus.jsonl").open("w") as out:
            for line in fh:
                if not line.strip():
                    continue
                did = str(json.loads(line).get("_id"))
                if did in keep_d or extra < n_docs:
                    extra += did not in keep_d
                    out.write(line)
    return dst
