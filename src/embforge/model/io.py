"""The on-disk layout of an embforge model folder.

One folder serves three readers: ``AutoModel``/``AutoTokenizer`` (backbone files at the top level),
sentence-transformers (modules.json and its module folders) and embforge (``embforge.json``, which
holds what neither of the others can express, such as separate query and passage lengths).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import EmbforgeError
from .pooling import canonical_pooling

EMBFORGE_FILE = "embforge.json"
FORMAT_VERSION = 1

_ST_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
_LEGACY_TO_MODE = {v: k for k, v in _ST_POOLING_KEYS.items()} | {
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EmbforgeError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _st_pooling_mode(cfg: dict[str, Any], path: Path) -> str:
    mode = cfg.get("pooling_mode")
    if mode is None:
        active = [m for key, m in _LEGACY_TO_MODE.items() if cfg.get(key)]
        mode = active if len(active) != 1 else active[0]
        if not active:
            mode = "mean"
    if isinstance(mode, list):
        mode = mode[0] if len(mode) == 1 else mode
    if not isinstance(mode, str):
        raise EmbforgeError(f"{path}: concatenated pooling modes {mode} are not supported; use one mode")
    if mode not in _ST_POOLING_KEYS:
        raise EmbforgeError(f"{path}: pooling mode {mode!r} is not supported (cls, mean, weightedmean, lasttoken)")
    return mode


def read_sentence_transformers(folder: Path) -> tuple[Path, dict[str, Any]]:
    """Backbone folder and encoder settings read from a sentence-transformers model folder."""
    modules = _read_json(folder / "modules.json")
    settings: dict[str, Any] = {"normalize": False}
    backbone = folder
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        sub = folder / module.get("path", "")
        if kind == "Transformer":
            backbone = sub
            bert_cfg = sub / "sentence_bert_config.json"
            if not bert_cfg.exists():
                bert_cfg = folder / "sentence_bert_config.json"
            if bert_cfg.exists():
                max_len = _read_json(bert_cfg).get("max_seq_length")
                if max_len:
                    settings["query_max_len"] = settings["passage_max_len"] = int(max_len)
        elif kind == "Pooling":
            settings["pooling"] = _st_pooling_mode(_read_json(sub / "config.json"), sub / "config.json")
        elif kind == "Normalize":
            settings["normalize"] = True
        else:
            raise EmbforgeError(f"{folder / 'modules.json'}: module type {module.get('type')!r} is not supported yet")
    st_cfg = folder / "config_sentence_transformers.json"
    if st_cfg.exists():
        prompts = _read_json(st_cfg).get("prompts") or {}
        settings["query_instruction"] = prompts.get("query", "") or ""
        settings["passage_instruction"] = prompts.get("document", prompts.get("passage", "")) or ""
    return backbone, settings


def read_model_folder(folder: Path) -> tuple[Path, dict[str, Any], bool]:
    """Return (backbone folder, encoder settings, is_embforge) for any supported folder layout."""
    if not (folder / "config.json").exists() and (folder / "final" / EMBFORGE_FILE).exists():
        folder = folder / "final"  # an `embforge train` output folder: its final model
    if (folder / EMBFORGE_FILE).exists():
        data = _read_json(folder / EMBFORGE_FILE)
        data.pop("format_version", None)
        return folder, data, True
    if (folder / "modules.json").exists():
        backbone, settings = read_sentence_transformers(folder)
        return backbone, settings, False
    if (folder / "config.json").exists():
        return folder, {}, False
    raise EmbforgeError(
        f"{folder}: not a model folder (expected config.json of a Hugging Face model, modules.json of a "
        f"sentence-transformers model, or {EMBFORGE_FILE})"
    )


def write_encoder_files(folder: Path, settings: dict[str, Any], hidden_size: int) -> None:
    """Write embforge.json and the sentence-transformers description of the same encoder."""
    _write_json(folder / EMBFORGE_FILE, {"format_version": FORMAT_VERSION, **settings})
    pooling = canonical_pooling(settings["pooling"])
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if settings.get("normalize"):
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    _write_json(folder / "modules.json", modules)
    # Both the legacy boolean keys and the newer single key, so old and new releases read it alike.
    pooling_cfg: dict[str, Any] = {"word_embedding_dimension": hidden_size}
    pooling_cfg |= {key: mode == pooling for mode, key in _ST_POOLING_KEYS.items()}
    pooling_cfg |= {"pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
                    "pooling_mode": pooling, "include_prompt": True}
    _write_json(folder / "1_Pooling" / "config.json", pooling_cfg)
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": int(settings["passage_max_len"]), "do_lower_case": False})
    _write_json(folder / "config_sentence_transformers.json", {
        "__version__": {"embforge": _version()},
        "prompts": {"query": settings.get("query_instruction", ""), "document": settings.get("passage_instruction", "")},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })


def _version() -> str:
    from .. import __version__

    return __version__


def settings_of(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
