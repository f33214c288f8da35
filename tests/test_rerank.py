"""Cross-encoder reranker training (``embforge train --task rerank``): the losses on fixed logits, the groups
and their teacher scores, bad data, and a trained folder that scores the same in embforge's CrossEncoder,
sentence-transformers' CrossEncoder and AutoModelForSequenceClassification."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import WORDS

from embforge.cli import main
from embforge.data.records import RetrievalRecord
from embforge.errors import EmbforgeError
from embforge.losses.rerank import bce, group_softmax_ce, margin_mse
from embforge.model.cross_encoder import CrossEncoder
from embforge.training.config import TrainConfig
from embforge.training.rerank import RerankCollator, RerankGroups, rerank_loss
from embforge.training.run import train


def test_losses_on_fixed_logits_match_hand_computed_values():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # row 0: -log(e^2 / (e^2 + e + 1)) = log(1 + e^-1 + e^-2); row 1: log 3 (uniform over 3)
    expected_ce = (math.log(1 + math.exp(-1) + math.exp(-2)) + math.log(3)) / 2
    assert group_softmax_ce(logits).item() == pytest.approx(expected_ce, abs=1e-6)
    assert group_softmax_ce(logits).item() == pytest.approx(0.753109, abs=1e-6)
    # label 1 at logit 0: log 2; label 0 at logit 2: log(1 + e^2)
    assert bce(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])).item() == pytest.approx(
        (math.log(2) + math.log(1 + math.exp(2))) / 2, abs=1e-6)
    # student margins 3-1=2, 3-2=1; teacher 5-4=1, 5-1=4; errors 1 and -3: (1 + 9) / 2
    assert margin_mse(torch.tensor([3.0]), torch.tensor([[1.0, 2.0]]), torch.tensor([5.0]),
                      torch.tensor([[4.0, 1.0]])).item() == pytest.approx(5.0, abs=1e-6)


def test_rerank_loss_dispatch_uses_groups_labels_and_teacher_scores():
    logits = torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # two queries x group of 3, positive first
    assert rerank_loss("ce", logits, {}, 3).item() == pytest.approx(0.753109, abs=1e-6)
    labels = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    assert rerank_loss("bce", logits, {}, 3).item() == pytest.approx(bce(logits.view(2, 3), labels).item(), abs=1e-7)
    teacher = torch.tensor([[5.0, 4.0, 1.0], [0.0, 0.0, 0.0]])
    # query 0: student margins 1, 2 vs teacher 1, 4 -> errors 0, -2; query 1: all 0 -> (0 + 4 + 0 + 0) / 4
    assert rerank_loss("margin_mse", logits, {"teacher": teacher}, 3).item() == pytest.approx(1.0, abs=1e-6)
    pair_targets = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.0, 1.0])
    assert rerank_loss("ce", logits, {"targets": pair_targets}, 3).item() == pytest.approx(
        bce(logits, pair_targets).item(), abs=1e-7)


def test_groups_put_the_positive_first_and_keep_each_teacher_score_with_its_text():
    rec = RetrievalRecord("q", pos=["p0", "p1"], neg=[f"n{i}" for i in range(6)], pos_scores=[10.0, 11.0],
                          neg_scores=[float(i) for i in range(6)], source="d.jsonl:1")
    groups = RerankGroups([rec], group_size=4, seed=3, with_scores=True)
    seen = set()
    for epoch in range(6):
        groups.set_epoch(epoch)
        query, texts, scores = groups[0]
        assert query == "q" and texts[0] in ("p0", "p1") and len(texts) == 4 and len(set(texts[1:])) == 3
        assert scores == [10.0 + int(texts[0][1])] + [float(t[1:]) for t in texts[1:]]
        seen.add(tuple(texts))
    assert len(seen) > 1  # the epoch redraws the group
    batch = RerankCollator(_FakeEncoder())([groups[0], groups[0]])
    assert batch["teacher"].shape == (2, 4) and batch["features"] == (["q"] * 8, [*groups[0][1]] * 2)


class _FakeEncoder:
    def tokenize(self, queries, passages):
        return (list(queries), list(passages))


def write_groups(path: Path, n: int = 16, negs: int = 5, seed: int = 0, empty_at: int | None = None) -> Path:
    """Queries of 3 vocabulary words; the positive repeats them, negatives are random words (learnable)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            q = " ".join(rng.sample(WORDS, 3))
            neg = [] if i == empty_at else [" ".join(rng.sample(WORDS, 6)) for _ in range(negs)]
            f.write(json.dumps({"query": q, "pos": [q + " " + " ".join(rng.sample(WORDS, 3))], "neg": neg}) + "\n")
    return path


def test_a_record_without_negatives_is_an_error_naming_its_line(tmp_path, tiny_bert):
    data = write_groups(tmp_path / "groups.jsonl", n=4, empty_at=2)
    cfg = TrainConfig(task="rerank", model_name_or_path=str(tiny_bert), train_data=str(data),
                      output_dir=str(tmp_path / "out"), train_group_size=3, max_steps=1, report_to=[])
    with pytest.raises(EmbforgeError, match=r"groups\.jsonl:3: field 'neg' is empty"):
        train(cfg)
    assert not (tmp_path / "out").exists()


def group_ce(ce: CrossEncoder, data: Path, group: int = 4) -> float:
    """Mean group softmax CE over the data's first ``group - 1`` negatives (a fixed set of groups)."""
    losses = []
    for line in data.read_text().splitlines():
        r = json.loads(line)
        texts = [r["pos"][0], *r["neg"][: group - 1]]
        scores = torch.from_numpy(ce.predict([(r["query"], t) for t in texts]))
        losses.append(group_softmax_ce(scores[None]).item())
    return float(np.mean(losses))


def test_trained_reranker_learns_and_scores_the_same_in_three_loaders(tmp_path, tiny_bert_nodrop, monkeypatch):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    monkeypatch.setenv("EMBFORGE_CACHE", str(tmp_path / "cache"))
    data = write_groups(tmp_path / "groups.jsonl")
    out = tmp_path / "reranker"
    set_seed(42)  # the score head the run starts from (it seeds the same way)
    before = group_ce(CrossEncoder.from_pretrained(str(tiny_bert_nodrop), max_length=16, device="cpu"), data)
    main(["train", "--task", "rerank", "--model_name_or_path", str(tiny_bert_nodrop), "--train_data", str(data),
          "--output_dir", str(out), "--train_group_size", "4", "--per_device_train_batch_size", "4",
          "--max_steps", "12", "--learning_rate", "2e-2", "--max_length", "16", "--logging_steps", "1",
          "--save_steps", "100", "--report_to", "none"])
    ours = CrossEncoder.from_pretrained(str(out), device="cpu")
    assert ours.max_length == 16
    after = group_ce(ours, data)
    assert after < before - 0.3, (before, after)

    long = " ".join(WORDS[:40])  # far beyond 16 tokens: every loader must truncate the pair the same way
    pairs = [("the cat", "the cat sleeps in the house"), ("a dog runs", long), (long, "one two three"),
             ("science", "study of protein and gene data")]
    st_scores = STCrossEncoder(str(out), device="cpu").predict(pairs)
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        feats = tok([q for q, _ in pairs], [p for _, p in pairs], truncation=True, padding=True, return_tensors="pt")
        hf_scores = hf(**feats).logits.squeeze(-1).numpy()
    assert feats["input_ids"].shape[1] == 16
    np.testing.assert_allclose(ours.predict(pairs), hf_scores, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(st_scores), hf_scores, atol=1e-5, rtol=0)

    card = (out / "README.md").read_text()
    assert "cross-encoder" in card and "softmax cross-entropy" in card
    assert json.loads((out / "model_card.json").read_text())["training"]["rerank_loss"] == "ce"
    assert json.loads((out / "train_report.json").read_text())["global_steps"] == 12


def test_lora_on_scored_pairs_saves_a_merged_folder_that_scores_the_same(tmp_path, tiny_bert_nodrop):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rng = random.Random(1)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"text1": " ".join(rng.sample(WORDS, 3)), "text2": " ".join(rng.sample(WORDS, 4)),
                                        "label": float(i % 6)}) + "\n" for i in range(12)))
    out = tmp_path / "lora-reranker"
    result = train(TrainConfig(task="rerank", model_name_or_path=str(tiny_bert_nodrop), train_data=str(data),
                               output_dir=str(out), apply_lora=True, lora_r=4, per_device_train_batch_size=4,
                               max_steps=3, learning_rate=1e-2, passage_max_len=24, report_to=[]))
    assert result.report["rerank_loss"] == "bce" and result.report["global_steps"] == 3
    assert not (out / "adapter_config.json").exists()
    pairs = [("the cat", "a dog runs"), ("science study", "protein gene data model")]
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in hf.named_parameters())
    with torch.no_grad():
        feats = AutoTokenizer.from_pretrained(out)([q for q, _ in pairs], [p for _, p in pairs], truncation=True,
                                                   padding=True, return_tensors="pt")
        hf_scores = hf(**feats).logits.squeeze(-1).numpy()
    np.testing.assert_allclose(CrossEncoder.from_pretrained(str(out), device="cpu").predict(pairs), hf_scores,
                               atol=1e-5, rtol=0)
    base = CrossEncoder.from_pretrained(str(tiny_bert_nodrop), device="cpu").hf_model.state_dict()
    moved = hf.state_dict()
    assert not torch.allclose(base["bert.encoder.layer.0.attention.self.query.weight"],
                              moved["bert.encoder.layer.0.attention.self.query.weight"])  # the adapter was merged in
