"""The README's Matryoshka table: train on SciFact train, nDCG@10 per dim on SciFact test, before/after.

    python scripts/mrl_scifact.py [--output_dir runs/mrl-scifact] [examples/mrl_scifact.py options]

Runs ``examples/mrl_scifact.py`` (full run, not the sanity slice) and writes ``mrl_table.md``,
``mrl_table.json`` and ``mrl_table.png`` in the output folder. About 30-40 minutes on 2 busy CPU
cores: most of it is encoding the 5,183-document corpus with the fine-tuned model; the base model's
encodings come from the embedding cache after the first run.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    example = Path(__file__).resolve().parents[1] / "examples" / "mrl_scifact.py"
    runpy.run_path(str(example), run_name="mrl_scifact")["main"](sys.argv[1:])
