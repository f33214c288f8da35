"""CSR at k active latents vs Matryoshka truncation to k dims, on SciFact with the default model.

    python scripts/csr_scifact.py [--output_dir runs/csr_scifact] [--topk 32] [--epochs 60]

1. Embeds the SciFact corpus (through embforge's embedding cache, so a second run is quick) and the
   train-split queries, paired with their relevant documents (no test query is trained on).
2. Trains CSR (hidden = 4 x 384, k = --topk) on the corpus rows, with the query/document
   contrastive term.
3. Evaluates on the test split: CSR sparse codes through an inverted index, the first k dims of the
   same dense embeddings (re-normalised), and the full 384 dims: nDCG@10, Recall@100 and
   single-query latency. Writes results.md and results.json into --output_dir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO / "examples" / "data" / "scifact"))
    p.add_argument("--output_dir", default="runs/csr_scifact")
    p.add_argument("--topk", type=int, default=32)
    p.add_argument("--hidden_size", type=int, default=4 * 384)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--cl_coef", type=float, default=0.1)
    p.add_argument("--no_queries", action="store_true", help="Train on the corpus only (no contrastive pairs).")
    p.add_argument("--latency_queries", type=int, default=300)
    p.add_argument("--eval_only", action="store_true", help="Evaluate the CSR model already in OUTPUT_DIR/csr.")
    p.add_argument("--corpus_emb", help="A .npy of the corpus embeddings made earlier by this model (e.g. an older "
                                        "embforge cache file); checked on a sample of rows, then used instead of "
                                        "re-encoding the corpus.")
    args = p.parse_args(argv)

    from embforge import Encoder, csr
    from embforge.data.beir import load_beir
    from embforge.evaluation.retrieval import RetrievalTask
    from embforge.evaluation.sparse import evaluate_sparse_retrieval, format_sparse_table, plot_sparse

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder.from_pretrained(None)
    if args.corpus_emb:
        seed_cache(encoder, args.data, args.corpus_emb)
    npz = out / "scifact_train_emb.npz"
    if args.eval_only:
        report = json.loads((out / "csr" / "train_report.json").read_text(encoding="utf-8"))
        result = csr.TrainResult(out / "csr", csr.CSRModel.load(out / "csr"), report)
    else:
        csr.embed(csr.EmbedConfig(data=args.data, output_file=str(npz), with_queries=not args.no_queries,
                                  split="train"), encoder=encoder)
        result = csr.train(csr.TrainConfig(pretrained_emb=str(npz), output_dir=str(out / "csr"), topk=args.topk,
                                           hidden_size=args.hidden_size, epochs=args.epochs, lr=args.lr,
                                           batch_size=args.batch_size, use_CL=not args.no_queries,
                                           cl_coef=args.cl_coef, base_model="all-MiniLM-L6-v2", log_every=10))
    epochs = result.report["epochs"]
    split = load_beir(args.data, "test")
    task = RetrievalTask.from_corpus(split.corpus, split.queries, split.qrels, source=f"{args.data} (test)")
    metrics = evaluate_sparse_retrieval(encoder, result.model, task, ks=(1, 10, 100),
                                        latency_queries=args.latency_queries)
    table = format_sparse_table(metrics, ("nDCG@10", "Recall@100"))
    summary = {"data": "SciFact test (300 queries, 5183 docs)", "model": "all-MiniLM-L6-v2 (embforge default)",
               "csr": {"hidden_size": result.model.hidden_size, "topk": args.topk, "epochs": epochs,
                       "train_rows": result.report["rows"], "train_pairs": result.report["pairs"],
                       "train_seconds": result.report["seconds"],
                       "final_dead_fraction": result.report["dead_fraction"]},
               **metrics}
    csr_m = metrics["methods"][f"csr k={args.topk}"]
    trunc = next(m for name, m in metrics["methods"].items() if m["active_dims"] == args.topk and "dense" in name)
    summary["csr_minus_truncation_ndcg10"] = csr_m["nDCG@10"] - trunc["nDCG@10"]
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md = (f"SciFact test, all-MiniLM-L6-v2; CSR hidden {result.model.hidden_size}, k={args.topk}, trained {epochs} "
          f"epochs on the corpus embeddings{'' if args.no_queries else ' + train-query pairs'}. Latency: one query "
          "at a time over 5183 docs, CPU.\n\n" + table + "\n\nNon-zero latents per code (of k="
          f"{args.topk}): documents {metrics['nonzeros_per_code']['documents']['mean']:.1f}, queries "
          f"{metrics['nonzeros_per_code']['queries']['mean']:.1f} (TopK then ReLU can zero a selected latent).\n")
    (out / "results.md").write_text(md, encoding="utf-8")
    plot_sparse(out / "results.png", metrics, "nDCG@10", title="SciFact: CSR vs Matryoshka truncation")
    print(md)
    print(f"CSR - truncation (nDCG@10): {summary['csr_minus_truncation_ndcg10']:+.4f}; files in {out}")
    return summary


def seed_cache(encoder, data: str, path: str) -> None:
    """Put a precomputed corpus matrix into embforge's cache under this encoder's current key."""
    import numpy as np

    from embforge import cache
    from embforge.data.beir import read_corpus
    from embforge.store.encode import encode_store

    texts = list(read_corpus(Path(data) / "corpus.jsonl").values())
    matrix = np.load(path)
    if matrix.shape != (len(texts), encoder.embedding_dim):
        raise SystemExit(f"{path}: shape {matrix.shape}, expected ({len(texts)}, {encoder.embedding_dim})")
    sample = list(range(0, len(texts), max(1, len(texts) // 8)))
    fresh = encoder.encode([texts[i] for i in sample])
    if not np.allclose(fresh, matrix[sample], atol=1e-4):
        raise SystemExit(f"{path}: rows differ from this model's embeddings of the corpus")
    by_text = {t: matrix[i] for i, t in enumerate(texts)}

    class Precomputed:  # serves the matrix's rows to the store writer, as if it encoded them
        config, name_or_path, embedding_dim = encoder.config, encoder.name_or_path, encoder.embedding_dim

        def encode(self, batch, **_):
            return np.stack([by_text[t] for t in batch]).astype(np.float32)

        def state_dict(self):
            return {}

    encode_store(Precomputed(), texts, fingerprint=cache.model_fingerprint(encoder))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
