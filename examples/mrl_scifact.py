"""Matryoshka training on SciFact train: nDCG@10 on SciFact test at each prefix size, before and after.

    python examples/mrl_scifact.py [--output_dir runs/mrl-scifact] [--epochs 1] [--sanity_test]

Training goes through the Python API (``embforge.training.run.train`` with a ``Config``): the BEIR
folder's train qrels give (query, positive) records, and ``--recipe mrl`` trains InfoNCE over
in-batch negatives at every prefix of ``mrl_dims`` (384, 256, 128, 64, 32 for the default model),
each prefix re-normalised. The recipe's LoRA is switched off by default here (``--lora`` turns it
on): an explicit setting wins over the preset. Writes ``mrl_table.md``, ``mrl_table.json`` and
``mrl_table.png`` (nDCG@10 against dims, before and after). ``--sanity_test`` trains 4 steps and
scores 10 test queries against their relevant documents plus 100 others.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from embforge.api import evaluate
from embforge.commands.train import Config
from embforge.config import from_dict
from embforge.training.run import train

DATA = Path(__file__).resolve().parent / "data" / "scifact"
DIMS = [384, 256, 128, 64, 32]


def ndcg10_per_dim(model: Path | None, data: Path, report: Path, max_length: int) -> dict[int, float]:
    dims = evaluate(model=str(model) if model else None, data=str(data), split="test",
                    dims=",".join(map(str, DIMS)), k="10", max_length=max_length, report=str(report))["dims"]
    return {int(d): float(next(v for k, v in m.items() if k.lower() == "ndcg@10")) for d, m in dims.items()}


def small_beir(out: Path, queries: int = 10, extra_docs: int = 100) -> Path:
    """A slice of SciFact test: ``queries`` queries, their relevant documents and ``extra_docs`` others."""
    folder = out / "scifact-slice"
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    rows = (DATA / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    keep_q: list[str] = []
    kept_rows = [rows[0]]
    for row in rows[1:]:
        qid = row.split("\t")[0]
        if qid not in keep_q and len(keep_q) == queries:
            continue
        if qid not in keep_q:
            keep_q.append(qid)
        kept_rows.append(row)
    docs = {r.split("\t")[1] for r in kept_rows[1:]}
    corpus = (DATA / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    chosen = [c for c in corpus if json.loads(c)["_id"] in docs] + corpus[:extra_docs]
    (folder / "corpus.jsonl").write_text("\n".join(dict.fromkeys(chosen)) + "\n", encoding="utf-8")
    lines = (DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    (folder / "queries.jsonl").write_text("\n".join(q for q in lines if json.loads(q)["_id"] in keep_q) + "\n",
                                          encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("\n".join(kept_rows) + "\n", encoding="utf-8")
    return folder


def write_table(out: Path, before: dict[int, float], after: dict[int, float], settings: dict) -> dict:
    full_b, full_a = before[max(before)], after[max(after)]
    rows = [{"dim": d, "base": round(before[d], 4), "mrl": round(after[d], 4),
             "base_vs_full": round(before[d] / full_b, 4), "mrl_vs_full": round(after[d] / full_a, 4)}
            for d in sorted(before, reverse=True)]
    result = {"data": "SciFact test (BEIR), nDCG@10", "train": settings, "rows": rows}
    (out / "mrl_table.json").write_text(json.dumps(result, indent=2))
    lines = ["| dim | base nDCG@10 | after MRL training | base / full | MRL / full |", "|---|---|---|---|---|"]
    lines += [f"| {r['dim']} | {r['base']:.4f} | {r['mrl']:.4f} | {100 * r['base_vs_full']:.1f} % | "
              f"{100 * r['mrl_vs_full']:.1f} % |" for r in rows]
    (out / "mrl_table.md").write_text("\n".join(lines) + "\n")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    dims = [r["dim"] for r in rows]
    ax.plot(dims, [r["base"] for r in rows], marker="o", label="base")
    ax.plot(dims, [r["mrl"] for r in rows], marker="o", label="after MRL training")
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xlabel("embedding dims (prefix)")
    ax.set_ylabel("nDCG@10, SciFact test")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "mrl_table.png", dpi=100)
    plt.close(fig)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/mrl-scifact")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max_steps", type=int, default=-1)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--passage_max_len", type=int, default=128, help="Training only; eval uses 256.")
    parser.add_argument("--mrl_weights", default=None, help="Comma-separated weights for 384,256,128,64,32.")
    parser.add_argument("--lora", action="store_true", help="Keep the recipe's LoRA (default: all weights).")
    parser.add_argument("--sanity_test", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    settings = {"recipe": "mrl", "apply_lora": args.lora, "mrl_dims": DIMS, "train_data": str(DATA),
                "train_split": "train", "output_dir": str(out / "model"), "num_train_epochs": args.epochs,
                "max_steps": args.max_steps, "per_device_train_batch_size": args.batch_size,
                "learning_rate": args.learning_rate, "warmup_steps": 0.1, "query_max_len": 64,
                "passage_max_len": args.passage_max_len, "logging_steps": 5, "save_strategy": "no",
                "report_to": "none", "seed": 0}
    if args.mrl_weights:
        settings["mrl_weights"] = [float(w) for w in args.mrl_weights.split(",")]
    eval_data = DATA
    if args.sanity_test:
        settings.update(max_examples=32, max_steps=4, per_device_train_batch_size=8, logging_steps=1)
        eval_data = small_beir(out)
    final = train(from_dict(Config, settings, source="mrl_scifact.py")).output_dir
    before = ndcg10_per_dim(None, eval_data, out / "eval_base.json", 256)
    after = ndcg10_per_dim(final, eval_data, out / "eval_mrl.json", 256)
    result = write_table(out, before, after, {k: v for k, v in settings.items() if k != "output_dir"})
    print((out / "mrl_table.md").read_text())
    return result


if __name__ == "__main__":
    main()
