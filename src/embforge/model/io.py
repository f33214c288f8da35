"""The on-disk layout of an embforge model folder.

One folder serves three readers: ``AutoModel``/``AutoTokenizer`` (backbone files at the top level),
sentence-transformers (modules.json and its module folders) and embforge (``embforge.json``, which
holds what neither of the others can express, such as separate query and passage lengths).

Layout::

    config.json, model.safetensors, tokenizer*   the backbone (the passage tower when asymmetric)
    embforge.json                                 EncoderConfig (pooling, lengths, dense, asym, ...)
    modules.json                                  sentence-transformers pipeline, in this order:
        0  Transformer at ""   or, asymmetric, Router at "" (router_config.json)
        k_Dense/               dense layers on token states (SGPT --linearthenpool)
        k_Pooling/
        k_Dense/               dense layers on the pooled vector (SGPT --addxlinear)
        k_Normalize/           when normalising
    query_encoder/                                asymmetric only: the query tower (AutoModel folder
                                                  with its own copy of the tokenizer)

Dense folders hold ``config.json`` + ``model.safetensors`` (``linear.weight``/``linear.bias``) as
sentence-transformers 6.2 writes them; they are also where embforge reads the head's weights from, so
there is one copy. Token-level layers use Dense's ``module_input_name="token_embeddings"``, which
sentence-transformers 5+ understands, so every layout above loads in ``SentenceTransformer`` with the
same vectors; an asymmetric folder routes ``encode_query`` to ``query_encoder/`` and
``encode``/``encode_document`` to the top-level tower. ``AutoModel`` on the folder gives the passage
tower, on ``query_encoder/`` the query tower.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import EmbforgeError
from .heads import activation_name, st_activation_name
from .pooling import canonical_pooling

EMBFORGE_FILE = "embforge.json"
# Present while a save into an existing folder is under way (see training/output.py): a folder that still
# has it holds a mix of two models' files, and loading it is refused.
INCOMPLETE_MARKER = ".embforge-incomplete"
FORMAT_VERSION = 1
QUERY_TOWER_DIR = "query_encoder"
_ST_TYPE = "sentence_transformers.models."

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


def _st_dense_layer(path: Path, before_pooling: bool) -> dict[str, Any]:
    """One head layer from a sentence-transformers Dense config (weights are read by ``read_dense_states``)."""
    cfg = _read_json(path)
    if cfg.get("use_residual"):
        raise EmbforgeError(f"{path}: Dense with use_residual is not supported")
    source = cfg.get("module_input_name", "sentence_embedding")
    target = cfg.get("module_output_name") or source
    if source != target or source not in ("sentence_embedding", "token_embeddings"):
        raise EmbforgeError(f"{path}: Dense from {source!r} to {target!r} is not supported "
                            "(only token_embeddings or sentence_embedding in place)")
    on_tokens = source == "token_embeddings"
    if on_tokens != before_pooling:
        where = "before" if before_pooling else "after"
        raise EmbforgeError(f"{path}: a Dense on {source} {where} Pooling is not supported")
    return {"in_features": int(cfg["in_features"]), "out_features": int(cfg["out_features"]),
            "bias": bool(cfg.get("bias", True)), "activation": activation_name(cfg.get("activation_function")),
            "on_tokens": on_tokens}


def damaged_weights(where: Path, exc: Exception) -> EmbforgeError:
    """A weights file that safetensors cannot read (cut short by a full disk or an interrupted copy), named:
    ``where`` is the file, or a folder whose first unreadable ``*.safetensors`` file is looked up."""
    from safetensors import safe_open

    if where.is_dir():
        for candidate in sorted(where.glob("*.safetensors")):
            try:
                with safe_open(str(candidate), framework="pt"):
                    pass
            except Exception:  # noqa: BLE001 - any failure to open is the damage being reported
                where = candidate
                break
    return EmbforgeError(f"{where}: the weights file is damaged or truncated ({exc}); copy or save the model again")


def load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(path))
    except SafetensorError as exc:
        raise damaged_weights(path, exc) from exc


def read_dense_states(folder: Path) -> list[dict[str, Any]]:
    """Weights of the Dense modules listed in ``folder/modules.json``, in pipeline order."""
    import torch

    if not (folder / "modules.json").exists():
        return []
    states = []
    for module in _read_json(folder / "modules.json"):
        if str(module.get("type", "")).rsplit(".", 1)[-1] != "Dense":
            continue
        sub = folder / module.get("path", "")
        if (sub / "model.safetensors").exists():
            states.append(load_safetensors(sub / "model.safetensors"))
        elif (sub / "pytorch_model.bin").exists():
            states.append(torch.load(sub / "pytorch_model.bin", map_location="cpu", weights_only=True))
        else:
            raise EmbforgeError(f"{sub}: no model.safetensors or pytorch_model.bin for this Dense module")
    return states


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
        elif kind == "Dense":
            settings.setdefault("dense", []).append(_st_dense_layer(sub / "config.json", "pooling" not in settings))
        else:
            raise EmbforgeError(f"{folder / 'modules.json'}: module type {module.get('type')!r} is not supported yet")
    st_cfg = folder / "config_sentence_transformers.json"
    if st_cfg.exists():
        prompts = _read_json(st_cfg).get("prompts") or {}
        settings["query_instruction"] = prompts.get("query", "") or ""
        settings["passage_instruction"] = prompts.get("document", prompts.get("passage", "")) or ""
    return backbone, settings


def model_root(folder: Path) -> Path:
    """The model folder itself, or the final model in ``final/`` of an older ``embforge train`` output folder."""
    if not (folder / "config.json").exists() and (folder / "final" / EMBFORGE_FILE).exists():
        folder = folder / "final"
    if (folder / INCOMPLETE_MARKER).exists():
        raise EmbforgeError(f"{folder}: a save into this folder was interrupted ({INCOMPLETE_MARKER} is still "
                            "there), so it may hold parts of two models; train or save it again")
    return folder


def read_model_folder(folder: Path) -> tuple[Path, dict[str, Any], bool]:
    """Return (backbone folder, encoder settings, is_embforge) for any supported folder layout."""
    folder = model_root(folder)
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


def write_encoder_files(folder: Path, settings: dict[str, Any], hidden_size: int,
                        dense_states: list[dict[str, Any]] | None = None) -> None:
    """Write embforge.json and the sentence-transformers description of the same encoder.

    The backbone(s) and tokenizer are written by the caller; ``dense_states`` are the head's layer
    weights, one per ``settings["dense"]`` entry, written as Dense modules.
    """
    _write_json(folder / EMBFORGE_FILE, {"format_version": FORMAT_VERSION, **settings})
    layers = settings.get("dense") or []
    states = dense_states or []
    if len(states) != len(layers):
        raise EmbforgeError(f"{len(layers)} dense layer(s) configured but {len(states)} weight set(s) given")
    asym = bool(settings.get("asym"))
    modules: list[dict[str, Any]] = []

    def add(kind: str, path: str | None = None) -> Path:
        idx = len(modules)
        path = f"{idx}_{kind}" if path is None else path
        modules.append({"idx": idx, "name": str(idx), "path": path, "type": _ST_TYPE + kind})
        return folder / path

    if asym:
        add("Router", "")
        _write_router(folder, settings)
    else:
        add("Transformer", "")
    pooled_width = hidden_size
    for layer, state in zip(layers, states):
        if layer["on_tokens"]:
            _write_dense(add("Dense"), layer, state)
            pooled_width = layer["out_features"]
    pooling_dir = add("Pooling")
    for layer, state in zip(layers, states):
        if not layer["on_tokens"]:
            _write_dense(add("Dense"), layer, state)
    if settings.get("normalize"):
        add("Normalize").mkdir(exist_ok=True)
    _write_json(folder / "modules.json", modules)
    # Both the legacy boolean keys and the newer single key, so old and new releases read it alike.
    pooling = canonical_pooling(settings["pooling"])
    pooling_cfg: dict[str, Any] = {"word_embedding_dimension": pooled_width}
    pooling_cfg |= {key: mode == pooling for mode, key in _ST_POOLING_KEYS.items()}
    pooling_cfg |= {"pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
                    "pooling_mode": pooling, "include_prompt": True}
    _write_json(pooling_dir / "config.json", pooling_cfg)
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": int(settings["passage_max_len"]), "do_lower_case": False})
    _write_json(folder / "config_sentence_transformers.json", {
        "__version__": {"embforge": _version()},
        "prompts": {"query": settings.get("query_instruction", ""), "document": settings.get("passage_instruction", "")},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })


def _write_dense(sub: Path, layer: dict[str, Any], state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    side = "token_embeddings" if layer["on_tokens"] else "sentence_embedding"
    _write_json(sub / "config.json", {
        "in_features": layer["in_features"], "out_features": layer["out_features"], "bias": layer["bias"],
        "activation_function": st_activation_name(layer["activation"]),
        "module_input_name": side, "module_output_name": side,
    })
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(sub / "model.safetensors"),
              metadata={"format": "pt"})


def _write_router(folder: Path, settings: dict[str, Any]) -> None:
    """Route sentence-transformers' queries to ``query_encoder/`` and everything else to the top level.

    The document route's Transformer sits at ``.`` so the top-level backbone files serve AutoModel and
    sentence-transformers alike; each tower has its own sentence_bert_config.json (its max length).
    """
    transformer = _ST_TYPE + "Transformer"
    _write_json(folder / "router_config.json", {
        "types": {QUERY_TOWER_DIR: transformer, ".": transformer},
        "structure": {"query": [QUERY_TOWER_DIR], "document": ["."]},
        "parameters": {"default_route": "document", "allow_empty_key": True, "route_mappings": {}},
    })
    _write_json(folder / QUERY_TOWER_DIR / "sentence_bert_config.json",
                {"max_seq_length": int(settings["query_max_len"]), "do_lower_case": False})


def _version() -> str:
    from .. import __version__

    return __version__
