"""``embforge export``: a model folder as a clean sentence-transformers folder or as ONNX."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import option

HELP = ("Export a model: --format onnx (encoder + pooling + normalisation in one graph, checked against "
        "embforge's vectors under onnxruntime) or sentence-transformers.")


@dataclass
class Config:
    model: str | None = option(None, "Model folder; default: the embedded all-MiniLM-L6-v2.",
                               aliases=("model_name_or_path",))
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


def run(cfg: Config) -> dict[str, Any]:
    from ..exporting import export_model

    out = cfg.output_dir or str(default_output(cfg.model, cfg.format))
    result = export_model(cfg.model, cfg.format, out, opset=cfg.opset, verify=cfg.verify, tolerance=cfg.tolerance,
                          overwrite=cfg.overwrite)
    check = ("not checked (install onnxruntime / sentence-transformers to check)" if result["max_abs_diff"] is None
             else f"max |difference| from embforge's vectors {result['max_abs_diff']:.2e}")
    print(f"exported {result['model']} as {cfg.format} to {out} ({', '.join(result['files'])}); {check}")
    return result
