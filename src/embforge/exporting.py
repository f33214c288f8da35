"""Export a model folder for serving: a clean sentence-transformers folder, or ONNX.

The ONNX graph holds the whole encoder, backbone + dense head + pooling + normalisation, so a
runtime that knows nothing about embforge (onnxruntime, a C# or JS client) gets the same vector
from token ids and an attention mask. Tokenisation stays outside the graph: the tokenizer files
are written beside it. An export is checked before it is reported done: the exported folder is
run (onnxruntime or sentence-transformers, when installed) on sample texts and compared with
embforge's own vectors.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .config import option
from .errors import EmbforgeError

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime as ort

    from .model.encoder import Encoder

FORMATS = ("sentence-transformers", "onnx")
ONNX_FILE = "model.onnx"
ONNX_QUERY_FILE = "query_model.onnx"
ONNX_CONFIG = "onnx_config.json"
SAMPLE_TEXTS = (
    "What causes vitamin C deficiency?",
    "Scurvy is a disease resulting from a lack of vitamin C, which is required for collagen synthesis.",
    "embeddings",
    "A much longer passage about protein folding, the shape of molecules, and how cells decide which genes "
    "to express under stress, repeated to make the padding differ between rows of the batch.",
)


class EncoderGraph(nn.Module):
    """token ids + attention mask -> the encoder's final vectors; the module that ONNX traces."""

    def __init__(self, encoder: Encoder, is_query: bool, left_padding: bool):
        super().__init__()
        self.encoder = encoder
        self.is_query = is_query
        self.left_padding = left_padding

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.left_padding:
            features["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        return self.encoder(features, is_query=self.is_query)


def _sample_features(encoder: Encoder, is_query: bool) -> dict[str, torch.Tensor]:
    return encoder.tokenize(list(SAMPLE_TEXTS), is_query=is_query)


def export_onnx(encoder: Encoder, output_dir: Path, opset: int = 18) -> list[str]:
    """Write model.onnx (and query_model.onnx for two-tower encoders); returns the file names."""
    encoder = encoder.to("cpu").eval()
    left = encoder.config.padding_side == "left"
    towers = [(ONNX_FILE, False)] + ([(ONNX_QUERY_FILE, True)] if encoder.query_backbone is not None else [])
    written = []
    for name, is_query in towers:
        graph = EncoderGraph(encoder, is_query, left).eval()
        feats = _sample_features(encoder, is_query)
        _trace(graph, (feats["input_ids"], feats["attention_mask"]), output_dir / name, opset)
        written.append(name)
    return written


def _trace(graph: nn.Module, args: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    """torch.onnx's TorchScript exporter (seconds), or its dynamo exporter where that one is gone.

    Both get dynamic batch and sequence axes; export_model checks the result against embforge.
    """
    import warnings

    names = {"input_names": ["input_ids", "attention_mask"], "output_names": ["sentence_embedding"],
             "opset_version": opset}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                    "sentence_embedding": {0: "batch"}}
            torch.onnx.export(graph, args, str(path), dynamic_axes=axes, dynamo=False, **names)
            return
        except (TypeError, RuntimeError, NotImplementedError, ImportError) as exc:
            legacy_error = exc
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        try:
            torch.onnx.export(graph, args, str(path), dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
                              dynamo=True, external_data=False, verbose=False, **names)
        except ImportError as exc:
            raise EmbforgeError(f"ONNX export needs the onnx and onnxscript packages ({exc}; the TorchScript "
                                f"exporter failed too: {legacy_error}); pip install 'embforge[onnx]'") from exc


def onnx_session(path: Path) -> ort.InferenceSession | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: ort.InferenceSession, features: dict[str, torch.Tensor]) -> np.ndarray:
    feeds = {"input_ids": features["input_ids"].numpy().astype(np.int64),
             "attention_mask": features["attention_mask"].numpy().astype(np.int64)}
    return np.asarray(session.run(["sentence_embedding"], feeds)[0])


def verify_onnx(encoder: Encoder, output_dir: Path, files: list[str]) -> float | None:
    """Largest |ONNX - embforge| over the sample texts; None when onnxruntime is not installed."""
    worst = 0.0
    for name in files:
        session = onnx_session(output_dir / name)
        if session is None:
            return None
        is_query = name == ONNX_QUERY_FILE
        feats = _sample_features(encoder, is_query)
        with torch.no_grad():
            want = encoder(feats, is_query=is_query).float().numpy()
        worst = max(worst, float(np.abs(run_onnx(session, feats) - want).max()))
    return worst


def verify_sentence_transformers(encoder: Encoder, output_dir: Path) -> float | None:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    st = SentenceTransformer(str(output_dir), device="cpu")
    want = encoder.encode(list(SAMPLE_TEXTS), show_progress=False)
    got = st.encode(list(SAMPLE_TEXTS), convert_to_numpy=True, show_progress_bar=False)
    return float(np.abs(got - want).max())


def export_model(model: str | os.PathLike[str] | None, fmt: str, output_dir: str | os.PathLike[str],
                 opset: int = 18, verify: bool = True, tolerance: float = 1e-4,
                 overwrite: bool = False) -> dict[str, Any]:
    """Export ``model`` to ``output_dir`` in ``fmt``; returns what was written and the check's max diff."""
    from .model import Encoder
    from .model.card import CARD_DATA, CARD_FILE
    from .model.io import model_root
    from .paths import atomic_dir, check_output_dir, resolve_model_path

    if fmt not in FORMATS:
        raise EmbforgeError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    source = model_root(resolve_model_path(model))
    out = check_output_dir(output_dir, command="export", inputs=[source], overwrite=overwrite)
    encoder = Encoder.from_pretrained(source, device="cpu")
    diff: float | None = None
    with atomic_dir(out, command="export", overwrite=overwrite) as tmp:
        if fmt == "onnx":
            files = export_onnx(encoder, tmp, opset=opset)
            encoder.tokenizer.save_pretrained(tmp)
            settings = dict(vars(encoder.config))
            (tmp / ONNX_CONFIG).write_text(json.dumps({
                "files": {"passage" if f == ONNX_FILE else "query": f for f in files},
                "inputs": ["input_ids", "attention_mask"], "output": "sentence_embedding",
                "embedding_dim": encoder.embedding_dim, "encoder": settings,
                "note": "the graph includes pooling and normalisation; tokenize with the tokenizer files here, "
                        "prepending the query/passage instruction and truncating to the max lengths above",
            }, indent=2, default=str) + "\n")
            if verify:
                diff = verify_onnx(encoder, tmp, files)
        else:
            encoder.save_to(tmp)
            files = sorted(p.name for p in tmp.iterdir())
            if verify:
                diff = verify_sentence_transformers(encoder, tmp)
        for name in (CARD_FILE, CARD_DATA, "loss.png"):
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        if diff is not None and diff > tolerance:
            raise EmbforgeError(f"exported {fmt} model differs from embforge's vectors by {diff:.2e} "
                                f"(tolerance {tolerance:g}); nothing was written")
    return {"model": str(source), "format": fmt, "output_dir": str(out), "files": files, "max_abs_diff": diff}


@dataclass
class ExportConfig:
    model_name_or_path: str | None = option(None, "Model folder; default: the embedded all-MiniLM-L6-v2.",
                                            aliases=("model",))
    format: str = option("onnx", "Target format.", choices=("onnx", "sentence-transformers"))
    output_dir: str | None = option(None, "Where to write; default: MODEL-onnx or MODEL-st beside the model.",
                                    aliases=("output",))
    opset: int = option(18, "ONNX opset version.")
    verify: bool = option(True, "Run the export on sample texts and compare with embforge's vectors (needs "
                                "onnxruntime / sentence-transformers; skipped when missing).")
    tolerance: float = option(1e-4, "Largest allowed |difference| in the check.")
    overwrite: bool = option(False, "Replace --output_dir even if it holds files that an earlier export did not "
                                    "write (a folder holding the model is refused regardless).",
                             aliases=("overwrite_output_dir",))


def default_output(model: str | None, fmt: str) -> Path:
    suffix = "-onnx" if fmt == "onnx" else "-st"
    if not model or model == "default":
        return Path("all-MiniLM-L6-v2" + suffix)
    path = Path(model).resolve()
    if path.name == "final":  # OUTPUT_DIR/final of a training run: name it after the run
        path = path.parent
    return path.with_name(path.name + suffix)


def export(cfg: ExportConfig) -> dict[str, Any]:

    out = cfg.output_dir or str(default_output(cfg.model_name_or_path, cfg.format))
    result = export_model(cfg.model_name_or_path, cfg.format, out, opset=cfg.opset, verify=cfg.verify, tolerance=cfg.tolerance,
                          overwrite=cfg.overwrite)
    check = ("not checked (install onnxruntime / sentence-transformers to check)" if result["max_abs_diff"] is None
             else f"max |difference| from embforge's vectors {result['max_abs_diff']:.2e}")
    print(f"exported {result['model']} as {cfg.format} to {out} ({', '.join(result['files'])}); {check}")
    return result
