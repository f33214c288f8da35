"""Check that `--torch_compile` trains like eager mode with GradCache and dropout on (the same weights).

Compiling costs minutes on 2 CPU cores (200-400 s measured), too long for the test suite, so this
check is a script: run it after changing the trainer, GradCache or the training attention.

    python scripts/check_torch_compile.py        # exits 1 when the compiled run drifts from eager
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def main() -> int:
    from _common import write_tiny_bert
    from safetensors.torch import load_file

    import embforge

    tmp = Path(tempfile.mkdtemp(prefix="embforge-compile-"))
    model = write_tiny_bert(tmp / "tiny")
    data = tmp / "train.jsonl"
    words = "cat dog bird fish house tree car road city water".split()
    data.write_text("".join(json.dumps({"query": f"the {w}", "pos": [f"a {w} in the house"],
                                        "neg": [f"{w} and the road"]}) + "\n" for w in words))
    common = {"model_name_or_path": str(model), "train_data": str(data), "max_steps": 2, "optim": "sgd", "learning_rate": 1e-2,
              "gradcache": True, "chunk_size": 3, "per_device_train_batch_size": 4, "report_to": "none",
              "use_cpu": True, "save_strategy": "no", "query_max_len": 16, "passage_max_len": 16}
    eager = load_file(str(embforge.train(output_dir=str(tmp / "eager"), **common) / "model.safetensors"))
    compiled = load_file(str(embforge.train(output_dir=str(tmp / "compiled"), torch_compile=True, **common)
                             / "model.safetensors"))
    worst = max((compiled[k] - eager[k]).abs().max().item() for k in eager)
    print(f"largest weight difference, compiled vs eager: {worst:.3g} (allowed 1e-5)")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
