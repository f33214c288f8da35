"""Our retrieval and STS numbers equal sentence-transformers' evaluators on real data (default model)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from embforge.data.beir import read_corpus, read_qrels, read_queries
from embforge.data.sts import read_stsb
from embforge.evaluation.metrics import retrieval_metrics
from embforge.evaluation.search import exact_search
from embforge.evaluation.sts import evaluate_sts
from embforge.model import Encoder
from embforge.paths import default_model_path

KS = [1, 3, 10, 100]


@pytest.fixture(scope="module")
def encoder():
    return Encoder.from_pretrained(None, device="cpu", query_max_len=128, passage_max_len=128)


class _FixedEmbeddings:
    """Stands in for a SentenceTransformer: returns our query vectors, so both sides score identical matrices."""

    def __init__(self, by_text):
        self.by_text = by_text

    def encode_query(self, sentences, **_):
        return torch.from_numpy(np.stack([self.by_text[s] for s in sentences]))


@pytest.mark.e2e
def test_retrieval_metrics_equal_information_retrieval_evaluator(bundled_data, encoder):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    folder = bundled_data / "scifact"
    qrels_all = read_qrels(folder / "qrels" / "test.tsv")
    qids = sorted(qrels_all)[:40]
    qrels = {q: qrels_all[q] for q in qids}
    corpus_all = read_corpus(folder / "corpus.jsonl")
    relevant = {d for q in qids for d in qrels[q]}
    others = sorted(d for d in corpus_all if d not in relevant)
    random.Random(0).shuffle(others)
    corpus = {d: corpus_all[d] for d in sorted(relevant) + others[:200]}
    queries_all = read_queries(folder / "queries.jsonl")
    queries = {q: queries_all[q] for q in qids}

    doc_ids = list(corpus)
    doc_emb = encoder.encode([corpus[d] for d in doc_ids], batch_size=64, show_progress=False)
    q_emb = encoder.encode([queries[q] for q in qids], is_query=True, show_progress=False)
    ours = retrieval_metrics(dict(zip(qids, exact_search(q_emb, doc_emb, doc_ids, max(KS)))), qrels, KS)

    st = InformationRetrievalEvaluator(
        queries, corpus, {q: {d for d, g in qrels[q].items() if g > 0} for q in qids},
        mrr_at_k=KS, ndcg_at_k=KS, accuracy_at_k=KS, precision_recall_at_k=KS, map_at_k=KS,
        score_functions={"cosine": cos_sim}, write_csv=False)
    ref = st.compute_all_metrics(_FixedEmbeddings(dict(zip((queries[q] for q in qids), q_emb))),
                                 corpus_embeddings=torch.from_numpy(doc_emb))["cosine"]
    assert ours["queries"] == len(qids)
    for k in KS:
        assert ours[f"nDCG@{k}"] == pytest.approx(ref["ndcg@k"][k], abs=1e-9)
        assert ours[f"MRR@{k}"] == pytest.approx(ref["mrr@k"][k], abs=1e-9)
        assert ours[f"Recall@{k}"] == pytest.approx(ref["recall@k"][k], abs=1e-9)
        assert ours[f"MAP@{k}"] == pytest.approx(ref["map@k"][k], abs=1e-9)
    assert 0.5 < ours["nDCG@10"] < 1.0  # a real model on a real slice, not a degenerate ranking


@pytest.mark.e2e
def test_sts_spearman_equals_embedding_similarity_evaluator(bundled_data, encoder):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    pairs = read_stsb(bundled_data / "stsbenchmark" / "sts-test.csv")[:200]
    ours = evaluate_sts(encoder, pairs, use_cache=False)["dims"]["384"]
    model = SentenceTransformer(str(default_model_path()), device="cpu")
    model.max_seq_length = 128
    st = EmbeddingSimilarityEvaluator([p.text1 for p in pairs], [p.text2 for p in pairs], [p.score for p in pairs],
                                      similarity_fn_names=["cosine"], write_csv=False)
    ref = st(model)
    assert ours["spearman"] == pytest.approx(ref["spearman_cosine"], abs=1e-4)
    assert ours["pearson"] == pytest.approx(ref["pearson_cosine"], abs=1e-4)
    assert ours["spearman"] > 0.7

