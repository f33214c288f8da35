"""What a plan is made of: steps, and the pipeline that orders them. No logic, so every layer can use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    # --sanity_test: source BEIR folder -> its slice under output_dir, cut before the first step runs.
    sliced: dict[str, str] = field(default_factory=dict)
