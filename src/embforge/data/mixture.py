"""YAML dataset mixtures with the training module's semantics (``reference/training-module.md``).

``use_all: true`` takes every record of every dataset. Otherwise ``num_total_data`` is split by
``data_ratio`` (largest-remainder rounding, so the allocations add up to exactly
``num_total_data``), and a dataset with fewer records than its allocation either gives all it has
(``allow_duplicate: false``) or repeats itself whole as often as fits and fills the rest with a
random draw without replacement (``allow_duplicate: true``). A dataset with more records than its
allocation gives a random subset. Planning is pure (counts in, plan out) so the arithmetic is
tested without files; building reads each source twice, streaming: once to count, once to keep
the planned indices.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..config import did_you_mean, load_yaml, parse_bool
from ..errors import EmbforgeError, where
from .formats import FORMATS, Record, detect_format, iter_records
from .problems import BadRecords

RATIO_TOLERANCE = 1e-6
TOP_KEYS = ("use_all", "num_total_data", "allow_duplicate", "datasets")
DATASET_KEYS = ("name", "data_path", "data_ratio", "split", "format")


@dataclasses.dataclass
class DatasetSpec:
    """One entry of ``datasets``; ``path`` is already resolved against the YAML's folder."""

    name: str
    path: Path
    ratio: float | None = None
    split: str | None = None
    format: str | None = None


@dataclasses.dataclass
class MixtureConfig:
    datasets: list[DatasetSpec]
    use_all: bool = False
    num_total_data: int | None = None
    allow_duplicate: bool = False
    source: str = "mixture"

    def __post_init__(self) -> None:
        validate(self)


@dataclasses.dataclass
class DatasetPlan:
    """What one dataset contributes: ``full_copies`` whole passes plus ``extra_indices`` drawn at random."""

    name: str
    available: int
    allocated: int
    used: int
    full_copies: int
    extra_indices: np.ndarray

    @property
    def random_extra(self) -> int:
        return int(len(self.extra_indices))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "available": self.available, "allocated": self.allocated, "used": self.used,
                "full_copies": self.full_copies, "random_extra": self.random_extra}


@dataclasses.dataclass
class MixturePlan:
    datasets: list[DatasetPlan]
    seed: int

    @property
    def total(self) -> int:
        return sum(d.used for d in self.datasets)


def validate(cfg: MixtureConfig) -> None:
    src = cfg.source
    if not cfg.datasets:
        raise EmbforgeError(f"{src}: datasets: needs at least one dataset")
    names = [d.name for d in cfg.datasets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EmbforgeError(f"{src}: datasets.name must be unique; repeated: {', '.join(dupes)}")
    if cfg.use_all:
        return  # num_total_data and data_ratio are ignored, as in the reference
    if cfg.num_total_data is None or cfg.num_total_data < 0:
        raise EmbforgeError(f"{src}: num_total_data must be a non-negative integer when use_all is false")
    ratios = [d.ratio for d in cfg.datasets]
    if any(r is None for r in ratios):
        raise EmbforgeError(f"{src}: datasets.data_ratio needs one ratio per dataset when use_all is false")
    if any(r < 0 for r in ratios):  # type: ignore[operator]
        raise EmbforgeError(f"{src}: datasets.data_ratio must not be negative, got {ratios}")
    total = sum(ratios)  # type: ignore[arg-type]
    if abs(total - 1.0) > RATIO_TOLERANCE:
        raise EmbforgeError(f"{src}: datasets.data_ratio must sum to 1, got {ratios} (sum {total:.6g})")


def allocate(total: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder split of ``total``: sums to exactly ``total``; ties go to the earlier dataset.

    Ratios are taken as the decimals the user wrote (``Fraction(repr(r))``) and normalised exactly,
    so 200000 x 0.7 is 140000, not 139999 plus a float remainder.
    """
    exact = [Fraction(repr(float(r))) for r in ratios]
    norm = sum(exact)
    if norm <= 0:
        raise EmbforgeError(f"data_ratio must have a positive sum, got {list(ratios)}")
    quotas = [total * r / norm for r in exact]
    counts = [int(q) for q in quotas]  # floor: quotas are non-negative
    short = total - sum(counts)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[:short]:
        counts[i] += 1
    return counts


def _rng(seed: int, name: str) -> np.random.Generator:
    # Keyed by name, not position, so reordering the YAML does not change what a dataset draws.
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def plan_dataset(name: str, available: int, allocated: int, allow_duplicate: bool, seed: int) -> DatasetPlan:
    rng = _rng(seed, name)
    if allocated > 0 and available == 0:
        raise EmbforgeError(f"dataset {name!r}: {allocated} records allocated but it has none")
    if allocated <= available:
        if allocated == available:
            return DatasetPlan(name, available, allocated, allocated, 1 if available else 0, np.zeros(0, np.int64))
        extra = np.sort(rng.choice(available, size=allocated, replace=False))
        return DatasetPlan(name, available, allocated, allocated, 0, extra.astype(np.int64))
    if not allow_duplicate:
        return DatasetPlan(name, available, allocated, available, 1, np.zeros(0, np.int64))
    copies, rest = divmod(allocated, available)
    extra = np.sort(rng.choice(available, size=rest, replace=False)) if rest else np.zeros(0, np.int64)
    return DatasetPlan(name, available, allocated, allocated, copies, extra.astype(np.int64))


def plan_mixture(cfg: MixtureConfig, available_counts: Mapping[str, int] | Sequence[int], seed: int = 42
                 ) -> MixturePlan:
    """Pure: how many records each dataset gives and which ones, from counts alone."""
    names = [d.name for d in cfg.datasets]
    if isinstance(available_counts, Mapping):
        missing = [n for n in names if n not in available_counts]
        if missing:
            raise EmbforgeError(f"no available count for dataset(s) {', '.join(missing)}")
        counts = [int(available_counts[n]) for n in names]
    else:
        counts = [int(c) for c in available_counts]
        if len(counts) != len(names):
            raise EmbforgeError(f"{len(counts)} available counts for {len(names)} datasets")
    if cfg.use_all:
        allocations = counts
    else:
        allocations = allocate(int(cfg.num_total_data or 0), [d.ratio for d in cfg.datasets])  # type: ignore[misc]
    plans = [plan_dataset(n, c, a, cfg.allow_duplicate, seed) for n, c, a in zip(names, counts, allocations)]
    return MixturePlan(plans, seed)


def _as_list(value: Any, key: str, n: int | None, src: str) -> list[Any]:
    if value is None:
        return [None] * (n or 0)
    if not isinstance(value, list):
        value = [value] if n == 1 else value
    if not isinstance(value, list):
        raise EmbforgeError(f"{src}: datasets.{key} must be a list, got {value!r}")
    if n is not None and len(value) != n:
        raise EmbforgeError(f"{src}: datasets.{key} has {len(value)} entries but datasets.name has {n}")
    return value


def mixture_config_from_dict(data: Mapping[str, Any], base_dir: str | Path = ".", source: str = "mixture"
                             ) -> MixtureConfig:
    """Typed config from the YAML mapping; unknown keys fail with a did-you-mean."""
    for key in data:
        if key not in TOP_KEYS:
            raise EmbforgeError(f"{source}: unknown key {key!r}{did_you_mean(key, TOP_KEYS)}")
    ds = data.get("datasets")
    if not isinstance(ds, Mapping):
        raise EmbforgeError(f"{source}: datasets must be a mapping with name, data_path and data_ratio lists")
    for key in ds:
        if key not in DATASET_KEYS:
            raise EmbforgeError(f"{source}: unknown key datasets.{key}{did_you_mean(key, DATASET_KEYS)}")
    names = _as_list(ds.get("name"), "name", None, source)
    if not names:
        raise EmbforgeError(f"{source}: datasets.name must list at least one dataset")
    n = len(names)
    paths = _as_list(ds.get("data_path"), "data_path", n, source)
    ratios = _as_list(ds.get("data_ratio"), "data_ratio", n, source)
    splits = _as_list(ds.get("split"), "split", n, source)
    formats = _as_list(ds.get("format"), "format", n, source)
    base = Path(base_dir)
    specs = []
    for name, path, ratio, split, fmt in zip(names, paths, ratios, splits, formats):
        if path is None or not str(path).strip():  # "" would resolve to the YAML's own folder
            raise EmbforgeError(f"{source}: datasets.data_path is missing for {name!r}")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))):
            raise EmbforgeError(f"{source}: datasets.data_ratio for {name!r} must be a number, got {ratio!r}")
        if fmt is not None and str(fmt) not in FORMATS:  # the YAML's mistake, so the YAML is named
            raise EmbforgeError(f"{source}: datasets.format of {name!r}: unknown format {fmt!r} "
                                f"(known: {', '.join(FORMATS)})")
        p = Path(str(path)).expanduser()
        specs.append(DatasetSpec(str(name), p if p.is_absolute() else base / p,
                                 None if ratio is None else float(ratio),
                                 None if split is None else str(split), None if fmt is None else str(fmt)))
    total = data.get("num_total_data")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
        raise EmbforgeError(f"{source}: num_total_data must be an integer, got {total!r}")
    try:
        use_all = parse_bool(data.get("use_all", False))
        allow_duplicate = parse_bool(data.get("allow_duplicate", False))
    except Exception as exc:
        raise EmbforgeError(f"{source}: {exc}") from exc
    return MixtureConfig(specs, use_all=use_all, num_total_data=total, allow_duplicate=allow_duplicate,
                         source=source)


def _data_path_lines(path: Path) -> list[int]:
    """The YAML line of each ``datasets.data_path`` entry (composed, not loaded: nothing is constructed)."""
    import yaml

    def child(node: Any, key: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
        return None

    try:
        node = child(child(yaml.compose(path.read_text(encoding="utf-8")), "datasets"), "data_path")
    except yaml.YAMLError:
        return []
    items = node.value if isinstance(node, yaml.SequenceNode) else [node] if node is not None else []
    return [item.start_mark.line + 1 for item in items]


def load_mixture_config(yaml_path: str | Path) -> MixtureConfig:
    """Read a mixture YAML; data paths are relative to the YAML file's folder and must exist.

    A missing one is reported at its line of the YAML: the resolved path alone does not say which
    mixture, or which entry of it, named the file.
    """
    path = Path(yaml_path)
    cfg = mixture_config_from_dict(load_yaml(path), base_dir=path.parent, source=str(path))
    lines = _data_path_lines(path)
    for i, spec in enumerate(cfg.datasets):
        if not spec.path.exists():
            raise EmbforgeError(f"{where(path, lines[i] if i < len(lines) else None)}: datasets.data_path of "
                                f"{spec.name!r}: {spec.path}: no such file or folder")
    return cfg


def _read(spec: DatasetSpec, **kwargs: Any) -> Iterator[Record]:
    return iter_records(spec.path, format=spec.format, split=spec.split, **kwargs)


def build_mixture(cfg: MixtureConfig, seed: int = 42, *, strict: bool = False, skip_bad_records: bool = False,
                  field_map: Mapping[str, str] | None = None) -> tuple[list[Record], dict[str, Any]]:
    """(records, report). Records come dataset by dataset: the full copies in file order, then the extras.

    The training sampler shuffles, so this order only has to be deterministic, which it is for a
    given seed. Mixing scored pairs with retrieval records is refused: no loss takes both.
    """
    counts: dict[str, int] = {}
    bad: dict[str, BadRecords] = {}
    formats: dict[str, str] = {}
    for spec in cfg.datasets:
        formats[spec.name] = spec.format or detect_format(spec.path, field_map)
        bad[spec.name] = BadRecords(skip=skip_bad_records)
        counts[spec.name] = sum(1 for _ in _read(spec, strict=strict, field_map=field_map, bad_records=bad[spec.name]))
    plan = plan_mixture(cfg, counts, seed)
    records: list[Record] = []
    for spec, dp in zip(cfg.datasets, plan.datasets):
        wanted = set(dp.extra_indices.tolist())
        kept: list[Record] = []
        by_index: dict[int, Record] = {}
        if dp.used:
            # Second pass with a fresh counter: the first pass already reported the skipped records.
            for i, rec in enumerate(_read(spec, strict=strict, field_map=field_map,
                                          bad_records=BadRecords(skip=skip_bad_records))):
                if dp.full_copies:
                    kept.append(rec)
                if i in wanted:
                    by_index[i] = rec
        records.extend(kept * dp.full_copies)
        records.extend(by_index[i] for i in dp.extra_indices.tolist())
    kinds = sorted({type(r).__name__ for r in records})
    if len(kinds) > 1:
        raise EmbforgeError(f"{cfg.source}: the datasets give different record kinds ({', '.join(kinds)}); "
                            "a mixture must be all retrieval records or all scored pairs")
    report = {
        "source": cfg.source, "seed": seed, "use_all": cfg.use_all, "num_total_data": cfg.num_total_data,
        "allow_duplicate": cfg.allow_duplicate, "total": len(records),
        "datasets": [dict(dp.as_dict(), path=str(spec.path), format=formats[spec.name], split=spec.split,
                          bad_records=bad[spec.name].as_dict())
                     for spec, dp in zip(cfg.datasets, plan.datasets)],
    }
    return records, report
