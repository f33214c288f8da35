"""Planning: a pipeline YAML (or mapping) -> validated configs -> the ordered steps; nothing runs here.

Each section of the YAML is the config of one command (the same keys as its flags), checked in full
before anything runs, so a typo on line 30 fails in a second and not after an hour of training. The
plan wires the steps together: the mined file feeds training, the trained model feeds the merge and
the evaluations; the trained reranker scores the mined file, the scores feed distillation, and the
last embedder is evaluated alone and with the reranker over its results.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import alias_map, did_you_mean, from_dict, load_yaml
from ..errors import EmbforgeError
from ..model.card import model_label
from .actions import command_action, eval_action, settings_of, train_action
from .report import write_report
from .steps import Pipeline, Step

if TYPE_CHECKING:  # pragma: no cover
    from ..evaluation.config import EvalConfig
    from ..training.config import TrainConfig

SECTIONS = ("mine", "train", "eval", "merge", "train_reranker", "score", "distill", "report")
STEP_SECTIONS = SECTIONS[:-1]
TOP_KEYS = ("name", "model", "output_dir", *SECTIONS)
REPORT_KEYS = ("title",)
MODEL_KEYS = ("model_name_or_path", "model", "model_name")
# Why a key the pipeline fills in may not be set in a section (the message of the error naming its line).
RESERVED_HINTS = {"task": "train_reranker trains the reranker (task rerank), train and distill embedders",
                  "output_file": "the pipeline writes it under output_dir"}

KeyLines = Mapping[tuple[str, ...], int]
# One section of the YAML: option -> value, as the YAML parser gave it (checked by the step's Config).
Section = dict[str, Any]


def load_pipeline(config: str | os.PathLike[str] | Mapping[str, Any], sanity_test: bool = False,
                  output_dir: str | os.PathLike[str] | None = None) -> Pipeline:
    """Validate a pipeline YAML (or mapping) and plan its steps; nothing is run or written yet."""
    lines: KeyLines
    if isinstance(config, Mapping):
        raw, source, lines, here = dict(config), "pipeline", {}, Path(".")
    else:
        path = Path(config)
        raw, source, lines, here = load_yaml(path), str(path), _key_lines(path), path.parent
    for key in raw:
        if key not in TOP_KEYS:
            raise EmbforgeError(f"{_where(source, lines, key)}: unknown key {key!r}{did_you_mean(key, TOP_KEYS)} "
                                f"(a pipeline has {', '.join(TOP_KEYS)})")
    sections = {name: _section(raw, name, source, lines) for name in SECTIONS}
    if not any(sections[s] is not None for s in STEP_SECTIONS):
        raise EmbforgeError(f"{source}: no steps: give at least one of {', '.join(STEP_SECTIONS)}")

    out = Path(output_dir or raw.get("output_dir") or "runs/pipeline")
    if sanity_test:
        out = out / "sanity_test"
    planner = _Planner(source, lines, here, out, sanity_test)
    pipe = planner.start(str(raw.get("name") or Path(source).stem), raw.get("model"))
    mined = planner.mine(_shared_length(sections["mine"], sections["eval"]))
    planner.eval(sections["eval"])
    trained = planner.train(sections["train"], mined)
    planner.merge(sections["merge"], trained)
    reranker = planner.train_reranker(sections["train_reranker"], mined)
    scored = planner.score(sections["score"], mined, reranker)
    distilled = planner.distill(sections["distill"], scored)
    planner.rerank_eval(reranker, distilled, trained)
    planner.report(sections["report"] or {})
    return pipe


@dataclasses.dataclass
class _Planner:
    """Plans one section at a time, appending its steps to ``pipe``; errors name the YAML line."""

    source: str
    lines: KeyLines
    here: Path                      # the YAML's folder: input paths in it are relative to it
    out: Path
    sanity_test: bool
    pipe: Pipeline = dataclasses.field(init=False)
    base_path: str = ""
    base_label: str = ""
    eval_config: EvalConfig | None = None  # shared by the evaluations of the base, trained and merged models

    def where(self, *keys: str) -> str:
        return _where(self.source, self.lines, *keys)

    def rel(self, value: Any) -> Any:
        """Input paths in a YAML are relative to its folder, so a pipeline runs from any directory."""
        if value is None or str(value) in ("", "default") or Path(str(value)).is_absolute():
            return value
        return str(self.here / str(value))

    def check_keys(self, cls: type, section: Mapping[str, Any], step: str, reserved: tuple[str, ...] = ()) -> None:
        known = alias_map(cls)
        for key in section:
            if key in reserved or known.get(key) in reserved:  # any spelling of a field the pipeline fills
                hint = RESERVED_HINTS.get(known.get(key, ""), "set the top-level model or output_dir instead")
                raise EmbforgeError(f"{self.where(step, key)}: {key!r} in the {step} step is filled in by the "
                                    f"pipeline; {hint}")
            if key not in known:
                hint = did_you_mean(key, [k for k in known if k not in reserved])
                raise EmbforgeError(f"{self.where(step, key)}: unknown key {key!r} in the {step} step{hint}")

    def data_input(self, value: Any, what: str, where: str) -> str:
        """An existing data path; under --sanity_test a BEIR folder is replaced by its slice under out."""
        path = _must_exist(self.rel(value), what, where)
        if self.sanity_test:
            from ..data.beir import is_beir_folder

            if is_beir_folder(Path(path)):
                sliced = self.pipe.sliced
                return sliced.setdefault(path, str(self.out / "data" / f"{len(sliced)}_{Path(path).name}"))
        return path

    def start(self, name: str, model: Any) -> Pipeline:
        from ..paths import resolve_model_path

        base = self.rel(model)
        try:
            self.base_path = str(resolve_model_path(base))
        except EmbforgeError as exc:
            raise EmbforgeError(f"{self.where('model')}: {exc}") from exc
        self.base_label = model_label(base)
        self.pipe = Pipeline(name=name, source=self.source, output_dir=self.out, steps=[],
                             sanity_test=self.sanity_test, models={"base": self.base_path})
        return self.pipe

    def mine(self, section: Section | None) -> str | None:
        """The mine step; returns the mined file, or None without a mine section."""
        from ..mining import MineConfig, mine, parse_range

        if section is None:
            return None
        self.check_keys(MineConfig, section, "mine", reserved=("model_name_or_path", "model", "encoder"))
        output_file = str(section.get("output_file") or self.out / "mine" / "train.jsonl")
        wired = {"model_name_or_path": self.base_path, "output_file": output_file}
        cfg = from_dict(MineConfig, {**section, **wired}, source=f"{self.source} [mine]")
        try:
            parse_range(cfg.range_for_sampling)
        except EmbforgeError as exc:
            raise EmbforgeError(f"{self.where('mine', 'range_for_sampling')}: {exc}") from exc
        input_file = self.data_input(cfg.input_file, "mine.input_file", self.where("mine", "input_file"))
        cfg = dataclasses.replace(cfg, input_file=input_file)
        self.pipe.steps.append(Step("mine", settings_of(cfg), {"data": input_file, "model": self.base_path},
                                    [output_file], command_action(mine, cfg)))
        return output_file

    def eval(self, section: Section | None) -> None:
        """Checks the eval config (shared by every evaluation) and plans the base model's evaluation."""
        from ..evaluation.config import EvalConfig

        if section is None:
            return
        self.check_keys(EvalConfig, section, "eval", reserved=("model", "model_name_or_path", "encoder", "report"))
        names = alias_map(EvalConfig)
        for key, value in section.items():  # the lists of integers, with the YAML line of a bad one
            if names[key] in ("k", "dims"):
                try:
                    from_dict(EvalConfig, {key: value}, source="eval")
                except EmbforgeError as exc:
                    raise EmbforgeError(f"{self.where('eval', key)}: eval.{key}: expected comma-separated integers, "
                                        f"got {value!r}") from exc
        cfg = from_dict(EvalConfig, section, source=f"{self.source} [eval]")
        cfg = dataclasses.replace(cfg, data=self.data_input(cfg.data, "eval.data", self.where("eval", "data")))
        self.eval_config = cfg
        self.add_eval("base", self.base_path, [])

    def add_eval(self, label: str, model: str, after: list[str], rerank: str | None = None) -> None:
        """An eval-LABEL step, when there is an eval section; ``after`` are the steps producing ``model``
        (and ``rerank``, a reranker reordering each query's first results)."""
        from ..evaluation.run import evaluate

        if self.eval_config is None:
            return
        assert self.eval_config.data is not None  # eval() filled it with an existing path
        report = str(self.out / "eval" / f"{label}.json")
        cfg = dataclasses.replace(self.eval_config, model_name_or_path=model, report=report,
                                  rerank=rerank or self.eval_config.rerank)
        self.pipe.reports[label] = report
        # The card holds the model's own evaluation: not the base's, nor one a reranker reordered.
        card_model = None if label == "base" or rerank else model
        inputs = {"data": self.eval_config.data} | ({"model": model} if model == self.base_path else {})
        self.pipe.steps.append(Step(f"eval-{label}", settings_of(cfg), inputs, [report],
                                    eval_action(evaluate, cfg, card_model, self.pipe.reports), upstream=after))

    def train(self, section: Section | None, mined: str | None) -> str | None:
        """The train step (and the trained model's evaluation); returns the model folder, or None."""
        if section is None:
            return None
        # The pipeline owns its train folder: a rerun with changed settings replaces the earlier run there.
        trained = str(self.train_like("train", section, "train", (mined, "mine"), {},
                                      reserved=(*MODEL_KEYS, "output_dir")).output_dir)
        self.pipe.models["trained"] = trained
        self.add_eval("trained", trained, ["train"])
        return trained

    def merge(self, section: Section | None, trained: str | None) -> None:
        """The merge step (and the merged model's evaluation); by default, the trained model with the base."""
        from ..merging import MergeConfig, merge

        if section is None:
            return
        self.check_keys(MergeConfig, section, "merge", reserved=("output_dir",))
        models = [self.rel(m) for m in section.get("models") or []]
        if not models:
            if trained is None:
                raise EmbforgeError(f"{self.where('merge')}: the merge step has nothing to merge: add a "
                                    "train step or give merge.models")
            models = [trained]
        merged = str(self.out / "merged")
        cfg = from_dict(MergeConfig, {**section, "models": models, "base": self.rel(section.get("base")),
                                           "output_dir": merged},
                        source=f"{self.source} [merge]")
        merged_models = cfg.models or []  # never empty: models were given above
        if cfg.base is None and section.get("models") is None:
            cfg = dataclasses.replace(cfg, base=self.base_path)
        for i, model in enumerate(merged_models):
            if model != trained:
                _must_exist(model, f"merge.models[{i}]", self.where("merge", "models"))
        self.pipe.models["merged"] = merged
        inputs = {f"model{i}": m for i, m in enumerate(cfg.all_models()) if m != trained}
        self.pipe.steps.append(Step("merge", settings_of(cfg), inputs, [merged], command_action(merge, cfg),
                                    upstream=["train"] if trained in merged_models else []))
        self.add_eval("merged", merged, ["merge"])

    def train_reranker(self, section: Section | None, mined: str | None) -> str | None:
        """The train_reranker step: a cross-encoder (task rerank) on the mined file; returns its folder."""
        from ..training.rerank import validate_rerank

        if section is None:
            return None
        cfg = self.train_like("train_reranker", section, "reranker", (mined, "mine"), {"task": "rerank"},
                              reserved=("output_dir", "overwrite_output_dir", "task"))
        try:
            validate_rerank(cfg)
        except EmbforgeError as exc:
            raise EmbforgeError(f"{self.where('train_reranker')}: {exc}") from exc
        self.pipe.models["reranker"] = folder = str(cfg.output_dir)
        return folder

    def score(self, section: Section | None, mined: str | None, reranker: str | None) -> str | None:
        """The score step: teacher scores on the mined file (by default with the trained reranker)."""
        from ..scoring import ScoreConfig, check, score

        if section is None:
            return None
        self.check_keys(ScoreConfig, section, "score", reserved=("output_file",))
        section, upstream, inputs = dict(section), [], {}
        model_key = _given(ScoreConfig, section, "model_name_or_path")
        if model_key is not None:
            section[model_key] = inputs["model"] = self.model_input(section[model_key], "score", model_key)
        elif reranker is not None:
            section["model_name_or_path"], upstream = reranker, ["train_reranker"]
        else:
            raise EmbforgeError(f"{self.where('score')}: the score step has no teacher: add a train_reranker "
                                "step or give score.model")
        input_key = _given(ScoreConfig, section, "input_file")
        if input_key is not None:
            section[input_key] = inputs["data"] = self.jsonl_input(section[input_key], "score.input_file",
                                                                   self.where("score", input_key))
        elif mined is not None:
            section["input_file"] = mined
            upstream.append("mine")
        else:
            raise EmbforgeError(f"{self.where('score')}: the score step has no data: add a mine step or give "
                                "score.input_file")
        output_file = str(self.out / "score" / "train.jsonl")
        cfg = from_dict(ScoreConfig, {**section, "output_file": output_file}, source=f"{self.source} [score]")
        try:
            check(cfg)
        except EmbforgeError as exc:
            raise EmbforgeError(f"{self.where('score')}: {exc}") from exc
        self.pipe.steps.append(Step("score", settings_of(cfg), inputs, [output_file],
                                    command_action(score, cfg), upstream=upstream))
        return output_file

    def distill(self, section: Section | None, scored: str | None) -> str | None:
        """The distill step: the base model trained on the scored file, kd by default; and its evaluation."""
        if section is None:
            return None
        from ..training.config import TrainConfig

        # Unset, the step distils with kd (FlagEmbedding's knowledge distillation); a value given wins.
        given = any(_given(TrainConfig, section, k) for k in ("teacher_scores", "knowledge_distillation"))
        cfg = self.train_like("distill", section, "distill", (scored, "score"),
                              {} if given else {"teacher_scores": "kd"},
                              reserved=(*MODEL_KEYS, "output_dir", "overwrite_output_dir", "task"))
        self.pipe.models["distilled"] = folder = str(cfg.output_dir)
        self.add_eval("distilled", folder, ["distill"])
        return folder

    def train_like(self, step: str, section: Section, folder: str, data: tuple[str | None, str],
                   fixed: Section, reserved: tuple[str, ...]) -> TrainConfig:
        """A training step into OUT/FOLDER, from the base model unless the section names its own, on
        ``train_data`` or else ``data`` (the file and the step writing it); ``fixed`` settings win."""
        from ..training.config import TrainConfig

        self.check_keys(TrainConfig, section, step, reserved=reserved)
        section, upstream, inputs = dict(section), [], {}
        wired: Section = {"output_dir": str(self.out / folder), "overwrite_output_dir": True, **fixed}
        if self.sanity_test:
            wired["sanity_test"] = True
        model_key = _given(TrainConfig, section, "model_name_or_path")
        if model_key is not None:
            section[model_key] = inputs["model"] = self.model_input(section[model_key], step, model_key)
        else:
            wired["model_name_or_path"] = inputs["model"] = self.base_path
        data_key = _given(TrainConfig, section, "train_data")
        if data_key is not None:
            section[data_key] = inputs["data"] = self.data_input(section[data_key], f"{step}.{data_key}",
                                                                 self.where(step, data_key))
        elif data[0] is not None:
            wired["train_data"] = data[0]
            upstream.append(data[1])
        else:
            raise EmbforgeError(f"{self.where(step)}: the {step} step has no data: add a {data[1]} step or "
                                f"give {step}.train_data")
        cfg = from_dict(TrainConfig, {**section, **wired}, source=f"{self.source} [{step}]")
        settings = {k: v for k, v in {**section, **wired}.items()
                    if k not in ("output_dir", "overwrite_output_dir")}
        self.pipe.steps.append(Step(step, settings, inputs, [str(cfg.output_dir)],
                                    train_action(cfg, self.pipe, step), upstream=upstream))
        return cfg

    def rerank_eval(self, reranker: str | None, distilled: str | None, trained: str | None) -> None:
        """The last embedder (distilled, else trained, else base) evaluated with the trained reranker over its
        first results: beside that embedder's own evaluation, the report shows what reranking adds."""
        if reranker is None:
            return
        candidates: list[tuple[str, str | None, list[str]]] = [
            ("distilled", distilled, ["distill"]), ("trained", trained, ["train"]),
            ("base", self.base_path, [])]
        label, model, after = next((label, m, steps) for label, m, steps in candidates if m is not None)
        self.add_eval(f"{label}+reranker", model, [*after, "train_reranker"], rerank=reranker)

    def model_input(self, value: Any, step: str, key: str) -> str:
        """A model a section names itself: resolved (a folder relative to the YAML, or a known name)."""
        from ..paths import resolve_model_path

        try:
            return str(resolve_model_path(self.rel(value)))
        except EmbforgeError as exc:
            raise EmbforgeError(f"{self.where(step, key)}: {exc}") from exc

    def jsonl_input(self, value: Any, what: str, where: str) -> str:
        """An existing query/pos/neg file; under --sanity_test its first records, cut under out."""
        path = _must_exist(self.rel(value), what, where)
        if self.sanity_test and Path(path).is_file():
            sliced = self.pipe.sliced
            return sliced.setdefault(path, str(self.out / "data" / f"{len(sliced)}_{Path(path).name}"))
        return path

    def report(self, section: Section) -> None:
        """The report step, after every evaluation; only when there is something evaluated to report."""
        for key in section:
            if key not in REPORT_KEYS:
                raise EmbforgeError(f"{self.where('report', key)}: unknown key {key!r} in the report step"
                                    f"{did_you_mean(key, REPORT_KEYS)}")
        if self.eval_config is None:
            return
        pipe, title, base_label = self.pipe, section.get("title") or self.pipe.name, self.base_label
        outputs = [str(self.out / "report.json"), str(self.out / "report.png")]
        pipe.steps.append(Step("report", {"title": title, "labels": {"base": base_label}}, {},
                               outputs, lambda: write_report(pipe, title, base_label),
                               upstream=[s.name for s in pipe.steps if s.name.startswith("eval-")]))


def _shared_length(mine: Section | None, evaluation: Section | None) -> Section | None:
    """The mine section, taking the eval section's max_length when it sets none of its own.

    Mining encodes the base model's corpus; at the evaluation's length that encode is the base
    evaluation's too (the same model fingerprint), so the base corpus is encoded once, not twice.
    """
    from ..evaluation.config import EvalConfig
    from ..mining import MineConfig

    if mine is None or evaluation is None:
        return mine
    mine_names, eval_names = alias_map(MineConfig), alias_map(EvalConfig)
    if any(mine_names.get(key) == "max_length" for key in mine):
        return mine
    length = next((v for key, v in evaluation.items() if eval_names.get(key) == "max_length"), None)
    return mine if length is None else {**mine, "max_length": length}


def _given(cls: type, section: Section, name: str) -> str | None:
    """The key under which ``section`` sets field ``name`` of ``cls`` (any alias), or None."""
    names = alias_map(cls)
    return next((key for key in section if names.get(key) == name), None)


def _key_lines(path: Path) -> KeyLines:
    """1-based line of every mapping key, by its path of keys, for error messages."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                keys = (*prefix, str(key.value))
                lines[keys] = key.start_mark.line + 1
                walk(value, keys)

    try:
        walk(yaml.compose(path.read_text(encoding="utf-8")), ())
    except yaml.YAMLError:
        pass
    return lines


def _where(source: str, lines: KeyLines, *keys: str) -> str:
    line = lines.get(tuple(keys))
    return f"{source}:{line}" if line else source


def _section(raw: Mapping[str, Any], name: str, source: str, lines: KeyLines) -> Section | None:
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
