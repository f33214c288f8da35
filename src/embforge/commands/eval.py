"""``embforge eval``: binds the command line to :mod:`embforge.evaluation` (and, with ``--sparse``, to the
CSR engine's sparse evaluation)."""

from __future__ import annotations

from typing import Any

from ..evaluation.config import EvalConfig as Config

HELP = "Evaluate a model: nDCG/MRR/Recall/MAP@k on BEIR or JSONL, Spearman/Pearson on STS-B or SICK-R."


def run(cfg: Config) -> dict[str, Any]:
    if cfg.sparse:
        from ..csr.evaluation import evaluate_sparse

        return evaluate_sparse(cfg)
    from ..evaluation.run import evaluate

    return evaluate(cfg)


__all__ = ["HELP", "Config", "run"]
