"""The losses ``--loss`` can name: each loss module declares its spec here once.

A spec is everything training needs to know about a loss: its name and old spellings, the data it
takes (query/passage groups, scored pairs, or both), its settings with their defaults, and how to
compute it from a batch of embeddings. The objective, the recipes and their checks read it from
here, so a new loss is one module that calls :func:`register` (docs/losses.md, "Adding a loss").

A setting becomes a train flag through the train Config field of the same name (default None =
"not given"); a setting without such a field keeps its declared default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch

from ..errors import EmbforgeError

Kind = Literal["groups", "pairs"]
KINDS: tuple[Kind, ...] = ("groups", "pairs")


@dataclass(frozen=True)
class Groups:
    """A batch of query/passage groups. ``q`` (B, D) this process's queries; ``p`` (P, D) passages in groups
    of ``group_size``, positive first, possibly every process's groups with ``query_offset`` the global
    index of the first local query; ``q_all`` every process's queries when a symmetric loss needs them."""

    q: torch.Tensor
    p: torch.Tensor
    group_size: int
    query_offset: int = 0
    q_all: torch.Tensor | None = None
    in_batch: bool = True
    symmetric: bool = False


@dataclass(frozen=True)
class Pairs:
    """A batch of scored pairs: row i of ``a`` (N, D) with row i of ``b``, ``scores`` (N,) in [0, 1]."""

    a: torch.Tensor
    b: torch.Tensor
    scores: torch.Tensor


GroupLoss = Callable[..., torch.Tensor]   # (Groups, **settings) -> scalar
PairLoss = Callable[..., torch.Tensor]    # (Pairs, **settings) -> scalar


@dataclass(frozen=True)
class LossSpec:
    """``groups`` / ``pairs``: the loss on that kind of batch, called with the batch and every setting
    as a keyword; a loss takes the kinds it has a function for. ``positive``: settings that must be > 0.
    ``check``: given the resolved settings, an error message when they cannot train, else None."""

    name: str
    help: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    groups: GroupLoss | None = None
    pairs: PairLoss | None = None
    aliases: tuple[str, ...] = ()
    positive: tuple[str, ...] = ()
    check: Callable[[Mapping[str, Any]], str | None] | None = None

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return tuple(k for k in KINDS if getattr(self, k) is not None)

    def compute(self, batch: Groups | Pairs, settings: Mapping[str, Any]) -> torch.Tensor:
        kind: Kind = "pairs" if isinstance(batch, Pairs) else "groups"
        fn = getattr(self, kind)
        if fn is None:
            raise ValueError(f"loss {self.name!r} does not apply to scored pairs" if kind == "pairs" else
                             f"loss {self.name!r} needs scored pairs, not query/passage groups")
        return fn(batch, **settings)


_SPECS: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: LossSpec) -> LossSpec:
    """Add ``spec``; a name, alias or setting default that clashes with a registered loss fails here."""
    if not spec.kinds:
        raise ValueError(f"loss {spec.name!r} computes on neither groups nor pairs")
    for name in (spec.name, *spec.aliases):
        if name in _SPECS or name in _ALIASES:
            raise ValueError(f"loss name {name!r} is already registered (by {canonical(name)!r})")
    undeclared = [s for s in spec.positive if s not in spec.settings]
    if undeclared:
        raise ValueError(f"loss {spec.name!r}: positive names undeclared setting {undeclared[0]!r}")
    shared = defaults()
    for key, value in spec.settings.items():   # one Config field, one default, whichever loss reads it
        if key in shared and shared[key] != value:
            raise ValueError(f"loss {spec.name!r}: setting {key} defaults to {value}, another loss to {shared[key]}")
    spec = dataclasses.replace(spec, settings=MappingProxyType(dict(spec.settings)))
    _SPECS[spec.name] = spec
    _ALIASES.update(dict.fromkeys(spec.aliases, spec.name))
    return spec


def unregister(name: str) -> None:
    spec = _SPECS.pop(name)
    for alias in spec.aliases:
        del _ALIASES[alias]


def canonical(name: str) -> str:
    """The registered name for a name or alias, any case; an unknown one fails listing the names."""
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _SPECS:
        raise EmbforgeError(f"--loss {key!r} is not a loss; choose from {', '.join(_SPECS)}")
    return key


def get(name: str) -> LossSpec:
    return _SPECS[canonical(name)]


def names(kind: Kind | None = None) -> tuple[str, ...]:
    """Registered losses in registration order (the default, InfoNCE, first); only those taking ``kind``."""
    return tuple(n for n, s in _SPECS.items() if kind is None or kind in s.kinds)


def aliases() -> dict[str, str]:
    return dict(_ALIASES)


def defaults() -> dict[str, Any]:
    """Every registered loss's settings with their defaults (settings shared by losses agree)."""
    return {k: v for spec in _SPECS.values() for k, v in spec.settings.items()}


def settings_from(name: str, source: Any) -> dict[str, Any]:
    """Loss ``name``'s settings read from ``source`` (a resolved Config): its value where it has one, else
    the declared default."""
    out = {}
    for key, default in get(name).settings.items():
        value = getattr(source, key, None)
        out[key] = default if value is None else value
    return out
