"""CSR on text: SciFact embeddings -> CSR sparse codes -> sparse retrieval, and an encoder with a CSR head.

    python examples/csr_text.py [--output_dir runs/csr_text] [--topk 32] [--epochs 20] [--sanity_test]

Through the Python API (each call is also an ``embforge csr`` command): ``csr.embed`` writes the
corpus embeddings of the default model plus the train-split queries paired with their relevant
documents; ``csr.train`` fits CSR (hidden 4 x 384) with the query/document contrastive term;
``csr.encode`` writes the sparse codes; the test split is searched with an inverted index over the
codes and compared with Matryoshka truncation to k dims; finally the encoder and the CSR head are
saved as one folder that turns texts straight into sparse codes. ``--sanity_test`` uses 8 train
and 8 test queries with 40 documents, k=8 and a hidden size of 256 (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "scifact"


def small_beir(src: Path, dst: Path, n_queries: int = 8, n_docs: int = 40) -> Path:
    """A few queries of each split, their relevant documents and the first documents of the corpus."""
    from embforge.data.beir import read_corpus, read_qrels, read_queries

    corpus, queries = read_corpus(src / "corpus.jsonl"), read_queries(src / "queries.jsonl")
    docs: set[str] = set(list(corpus)[:n_docs])
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    kept_queries: set[str] = set()
    for split in ("train", "test"):
        qrels = dict(list(read_qrels(src / "qrels" / f"{split}.tsv").items())[:n_queries])
        kept_queries |= set(qrels)
        docs |= {d for rel in qrels.values() for d in rel}
        lines = [f"{q}\t{d}\t{g}" for q, rel in qrels.items() for d, g in rel.items()]
        (dst / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    with (dst / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d, "title": "", "text": corpus[d]}) + "\n")
    with (dst / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for q in kept_queries:
            fh.write(json.dumps({"_id": q, "text": queries[q]}) + "\n")
    return dst


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/csr_text")
    parser.add_argument("--topk", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sanity_test", action="store_true")
    args = parser.parse_args(argv)

    from embforge import Encoder, csr
    from embforge.data.beir import load_beir
    from embforge.evaluation.retrieval import RetrievalTask
    from embforge.evaluation.sparse import evaluate_sparse_retrieval, format_sparse_table

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = small_beir(DATA, out / "scifact_small") if args.sanity_test else DATA
    k, hidden = (8, 256) if args.sanity_test else (args.topk, 4 * 384)
    encoder = Encoder.from_pretrained(None)

    npz = csr.embed(csr.EmbedConfig(data=str(data), output_file=str(out / "emb.npz"), with_queries=True, split="train"),
                    encoder=encoder)
    result = csr.train(csr.TrainConfig(pretrained_emb=str(npz), output_dir=str(out / "csr"), hidden_size=hidden,
                                       topk=k, use_CL=True, cl_coef=0.1, epochs=5 if args.sanity_test else args.epochs,
                                       batch_size=64 if args.sanity_test else 1024, lr=1e-3,
                                       base_model="all-MiniLM-L6-v2"))
    codes = csr.encode(csr.EncodeConfig(csr_model=str(out / "csr"), input_file=str(npz), output_file=str(out / "codes.npz")))
    print(f"corpus codes: {len(codes)} x {codes.k} (indices + values over {codes.hidden_size} latents)")

    split = load_beir(data, "test")
    task = RetrievalTask.from_corpus(split.corpus, split.queries, split.qrels, source=f"{data} (test)")
    metrics = evaluate_sparse_retrieval(encoder, result.model, task, ks=(1, 10, 100), latency_queries=50)
    print(format_sparse_table(metrics, ("nDCG@10", "Recall@100")))

    stacked = csr.save_stacked(encoder, result.model, out / "minilm_csr")
    sparse = csr.load_stacked(stacked)
    query = sparse.encode("Vitamin D deficiency is linked to depression.", is_query=True)
    print(f"stacked model in {stacked}: a query -> latents {query.indices[0].tolist()[:8]}...")
    summary = {"methods": metrics["methods"], "stacked_model": str(stacked)}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


if __name__ == "__main__":
    main()
