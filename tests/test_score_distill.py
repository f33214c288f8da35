"""Distillation from the data's teacher scores (--teacher_scores kd|margin_mse): the pure losses against numbers
worked out by hand, the objective built from train flags on fixed embeddings, the scores following the
sampled passages into the batch, and a real training step whose update depends on the scores."""

import json
import logging
import math
import random

import pytest
import torch
from safetensors.torch import load_file

from embforge.commands.train import Config
from embforge.config import from_dict
from embforge.data.records import RetrievalRecord
from embforge.errors import EmbforgeError
from embforge.losses.score_distill import kd_loss, margin_mse
from embforge.training import run as train_run
from embforge.training.batches import GroupCollator, GroupDataset
from embforge.training.objective import Objective
from embforge.training.recipes import check_model_dims, resolve

TEMP = 0.5


def assert_value(got, expected, tol=1e-10):
    assert float(got) == pytest.approx(float(expected), rel=0, abs=tol)


def cross_entropy(student, teacher, t=1.0):
    """sum_g softmax(teacher / t)_g * -log softmax(student / t)_g, one row, in plain floats."""
    zt = sum(math.exp(x / t) for x in teacher)
    zs = sum(math.exp(x / t) for x in student)
    return -sum(math.exp(a / t) / zt * (b / t - math.log(zs)) for a, b in zip(teacher, student))


# ---------------------------------------------------------------------------------------------- the pure losses
def test_kd_loss_is_flagembeddings_cross_entropy_on_fixed_logits():
    # Worked by hand: student = teacher = (ln 3, 0) -> both (3/4, 1/4); the cross-entropy is the entropy
    # -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623351446188083. Equal logits (0, 0) against anything give ln 2.
    row = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.double)
    assert_value(kd_loss(row, row.clone()), 0.5623351446188083)
    assert_value(kd_loss(torch.zeros(1, 2, dtype=torch.double), torch.tensor([[5.0, -1.0]], dtype=torch.double)),
                 math.log(2.0))
    # Two rows of three at temperature 2: the batch mean of each row's cross-entropy.
    s = [[1.0, 0.0, -1.0], [0.5, 2.0, -0.5]]
    t = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]
    got = kd_loss(torch.tensor(s, dtype=torch.double), torch.tensor(t, dtype=torch.double), temperature=2.0)
    assert_value(got, (cross_entropy(s[0], t[0], 2.0) + cross_entropy(s[1], t[1], 2.0)) / 2)
    # The teacher's scale matters (T sharpens or flattens its target), and the target takes no gradient.
    student = torch.tensor(s, dtype=torch.double, requires_grad=True)
    teacher = torch.tensor(t, dtype=torch.double, requires_grad=True)
    kd_loss(student, teacher, 1.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0.1
    assert abs(float(kd_loss(student.detach(), teacher.detach(), 1.0) - kd_loss(student.detach(), teacher.detach(), 4.0))) > 0.05


def test_margin_mse_on_fixed_scores():
    # student margins (0.9-0.1, 0.9-0.5; 0.4-0.3, 0.4+0.2) = (0.8, 0.4; 0.1, 0.6); the teacher's (4, 1; 0, 2);
    # squared gaps 10.24, 0.36, 0.01, 1.96: mean 3.1425.
    got = margin_mse(torch.tensor([0.9, 0.4], dtype=torch.double),
                     torch.tensor([[0.1, 0.5], [0.3, -0.2]], dtype=torch.double),
                     torch.tensor([5.0, 2.0], dtype=torch.double),
                     torch.tensor([[1.0, 4.0], [2.0, 0.0]], dtype=torch.double))
    assert_value(got, 3.1425)
    # Only margins count: shifting all of a query's teacher scores changes nothing.
    shifted = margin_mse(torch.tensor([0.9, 0.4], dtype=torch.double),
                         torch.tensor([[0.1, 0.5], [0.3, -0.2]], dtype=torch.double),
                         torch.tensor([15.0, -3.0], dtype=torch.double),
                         torch.tensor([[11.0, 14.0], [-3.0, -5.0]], dtype=torch.double))
    assert_value(shifted, 3.1425)


# ------------------------------------------------------------------ the objective the train flags build
def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


_g = torch.Generator().manual_seed(7)
Q = unit(torch.randn(2, 6, generator=_g, dtype=torch.double))   # two queries
P = unit(torch.randn(6, 6, generator=_g, dtype=torch.double))   # groups of three, positive first
TS = torch.tensor([[4.0, 1.0, 2.5], [3.0, 3.5, -1.0]], dtype=torch.double)  # the teacher's scores of those


def nce(q, p, g=3):
    rows = torch.arange(q.shape[0])
    return -(q @ p.T / TEMP).log_softmax(dim=-1)[rows, rows * g].mean()


def own(q, p, g=3):
    """Each query's similarities with its own group, as lists of floats."""
    return [[float(q[b] @ p[b * g + j]) for j in range(g)] for b in range(q.shape[0])]


def kd_by_hand(q, p, teacher, t):
    return sum(cross_entropy([x / TEMP for x in row], teacher[b], t) for b, row in enumerate(own(q, p))) / 2


def margins_by_hand(q, p, teacher):
    gaps = [((row[0] - row[j]) / TEMP - (teacher[b][0] - teacher[b][j])) ** 2
            for b, row in enumerate(own(q, p)) for j in (1, 2)]
    return sum(gaps) / len(gaps)


def objective(tmp_path, **flags):
    cfg = from_dict(Config, {"output_dir": str(tmp_path), "report_to": "none", "use_cpu": True,
                             "temperature": TEMP, "train_group_size": 3, **flags})
    cfg = check_model_dims(resolve(cfg), 6)
    obj = train_run.build_objective(cfg, [], with_teacher=False, pairs=False)
    assert isinstance(obj, Objective)
    return obj


def test_kd_term_from_flags_adds_to_infonce_and_follows_the_teacher_scores(tmp_path):
    w, t = 0.7, 2.0
    obj = objective(tmp_path, teacher_scores="kd", kd_weight=w, kd_temperature=t)
    teacher = TS.tolist()
    assert_value(obj(Q, P, teacher_scores=TS), nce(Q, P) + w * kd_by_hand(Q, P, teacher, t), 1e-12)
    # other teacher scores, other value (by the amount the hand computation says)
    other = [[-1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]
    assert_value(obj(Q, P, teacher_scores=torch.tensor(other, dtype=torch.double)),
                 nce(Q, P) + w * kd_by_hand(Q, P, other, t), 1e-12)
    assert abs(kd_by_hand(Q, P, teacher, t) - kd_by_hand(Q, P, other, t)) > 0.05
    # FlagEmbedding's spelling turns on the same term, with its default weight 1 and temperature 1
    flag = objective(tmp_path, knowledge_distillation=True)
    assert_value(flag(Q, P, teacher_scores=TS), nce(Q, P) + kd_by_hand(Q, P, teacher, 1.0), 1e-12)
    with pytest.raises(ValueError, match="needs the batch's teacher scores"):
        obj(Q, P)


def test_margin_mse_term_from_flags(tmp_path):
    obj = objective(tmp_path, teacher_scores="margin_mse", kd_weight=0.25)
    assert_value(obj(Q, P, teacher_scores=TS), nce(Q, P) + 0.25 * margins_by_hand(Q, P, TS.tolist()), 1e-12)


def test_kd_term_is_applied_to_every_matryoshka_prefix(tmp_path):
    obj = objective(tmp_path, teacher_scores="kd", kd_weight=0.5, mrl_dims="6,4,2", mrl_weights="1,0.5,0.25")
    expected = sum(w * (nce(unit(Q[:, :d]), unit(P[:, :d])) + 0.5 * kd_by_hand(unit(Q[:, :d]), unit(P[:, :d]),
                                                                                TS.tolist(), 1.0))
                   for d, w in ((6, 1.0), (4, 0.5), (2, 0.25)))
    assert_value(obj(Q, P, teacher_scores=TS), expected, 1e-12)


# ------------------------------------------------------------------- the scores follow the sampled passages
def scored_record(n_neg=7, source="data.jsonl:3"):
    return RetrievalRecord("q", pos=["p0", "p1", "p2"], neg=[f"n{i}" for i in range(n_neg)],
                           pos_scores=[10.0, 11.0, 12.0], neg_scores=[float(i) / 8 for i in range(n_neg)],
                           source=source)


def test_batches_carry_the_scores_of_exactly_the_passages_drawn():
    record = scored_record()
    score_of = dict(zip(record.pos + record.neg, record.pos_scores + record.neg_scores))
    ds = GroupDataset([record] * 6, group_size=4, seed=5, query_instruction=None, passage_instruction="doc: ",
                      with_scores=True)
    drawn = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            _, group, scores = ds[i]
            assert scores == [score_of[text.removeprefix("doc: ")] for text in group]
            drawn.add(tuple(group))
    assert len(drawn) > 10  # many different draws, each with its own scores
    # the collator stacks them row by row; a group short of negatives repeats its positive and its score
    short = scored_record(n_neg=0, source="data.jsonl:9")
    items = [ds[0], GroupDataset([short], 4, 5, None, None, with_scores=True)[0]]

    class Texts:  # tokenisation is not what is tested here
        def token_ids(self, texts, **_):
            return texts

        def collate(self, texts):
            return texts

    batch = GroupCollator(Texts(), 4)(items)
    assert batch["teacher_scores"].tolist() == [items[0][2], [items[1][2][0]] * 4]
    assert batch["passage"][4:] == [items[1][1][0]] * 4
    # without --teacher_scores the items stay (query, passages), as before
    assert len(GroupDataset([record], 4, 5, None, None)[0]) == 2


def test_missing_or_miscounted_scores_fail_naming_the_record(tmp_path, tiny_bert):
    data = tmp_path / "train.jsonl"
    lines = [{"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}", f"m{i}"], "pos_scores": [1.0],
              "neg_scores": [0.5, 0.2]} for i in range(4)]
    del lines[2]["neg_scores"]
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(EmbforgeError, match=r"train.jsonl:3: --teacher_scores kd needs 'neg_scores'"):
        train_run.train(train_config(tiny_bert, tmp_path / "out", data, teacher_scores="kd"))
    # records built in Python skip the reader's count check: training checks it, naming the record
    cfg = from_dict(Config, {"output_dir": str(tmp_path / "o"), "report_to": "none", "teacher_scores": "kd",
                             "train_group_size": 3})
    bad = scored_record(source="mine.jsonl:7")
    bad.neg_scores = bad.neg_scores[:-1]
    with pytest.raises(EmbforgeError, match=r"mine.jsonl:7: field 'neg_scores' has 6 scores for 7 texts"):
        train_run.check_teacher_scores(cfg, [scored_record(), bad], "mine.jsonl")
    with pytest.raises(EmbforgeError, match="needs --train_group_size 2 or more"):
        train_run.check_teacher_scores(from_dict(Config, {"output_dir": str(tmp_path / "o"), "report_to": "none",
                                                          "teacher_scores": "kd", "train_group_size": 1}),
                                       [scored_record()], "mine.jsonl")
    # a streamed record is checked when its group is drawn
    with pytest.raises(EmbforgeError, match=r"data.jsonl:3: --teacher_scores needs 'pos_scores'"):
        record = scored_record()
        record.pos_scores = None
        GroupDataset([record], 3, 0, None, None, with_scores=True)[0]


# ------------------------------------------------------------------------------- a real training step
def write_scored(path, permute=None, scale=1.0):
    """8 records, 2 positives and 3 negatives each, every passage with its own teacher score."""
    words = "cat dog bird fish house tree car road".split()
    rng = random.Random(0)
    with path.open("w") as fh:
        for i, w in enumerate(words):
            neg = [f"{w} and the {words[(i + k + 1) % 8]} road" for k in range(3)]
            neg_scores = [scale * (1.5 - k) for k in range(3)]
            if permute:
                rng.shuffle(neg_scores)
            fh.write(json.dumps({"query": f"the {w}", "pos": [f"a {w} in the house", f"the {w} is big"],
                                 "neg": neg, "pos_scores": [scale * 3.0, scale * 2.0], "neg_scores": neg_scores})
                     + "\n")
    return path


def train_config(model, out, data, **kw):
    return from_dict(Config, {"model_name_or_path": str(model), "train_data": str(data), "output_dir": str(out),
                              "per_device_train_batch_size": 4, "max_steps": 1, "optim": "sgd",
                              "learning_rate": 0.05, "max_grad_norm": 0, "report_to": "none", "use_cpu": True,
                              "save_strategy": "no", "disable_tqdm": True, "temperature": 0.05,
                              "train_group_size": 4, "query_max_len": 16, "passage_max_len": 16, **kw})


def moved(folder, base):
    after = load_file(str(folder / "model.safetensors"))
    return {k: after[k] - base[k] for k in after}


def test_teacher_scores_change_the_update_and_gradcache_matches(tiny_bert_nodrop, tmp_path, caplog):
    base = load_file(str(tiny_bert_nodrop / "model.safetensors"))

    def step(name, data, **kw):
        out = train_run.train(train_config(tiny_bert_nodrop, tmp_path / name, data, teacher_scores="kd",
                                           kd_weight=5.0, **kw)).output_dir
        return moved(out, base)

    with caplog.at_level(logging.WARNING):
        real = step("real", write_scored(tmp_path / "real.jsonl"))
    assert not [r for r in caplog.records if "no loss uses them" in r.getMessage()]
    zeroed = step("zeroed", write_scored(tmp_path / "zeroed.jsonl", scale=0.0))
    shuffled = step("shuffled", write_scored(tmp_path / "shuffled.jsonl", permute=True))
    cached = step("cached", write_scored(tmp_path / "real.jsonl"), gradcache=True, chunk_size=3)

    def gap(a, b):
        return max((a[k] - b[k]).abs().max().item() for k in a)

    # measured: largest move 0.27; real vs zeroed 0.35, real vs shuffled 0.067; GradCache vs plain 2e-7
    assert max(v.abs().max().item() for v in real.values()) > 1e-2
    assert gap(real, zeroed) > 1e-2 and gap(real, shuffled) > 1e-2 and gap(zeroed, shuffled) > 1e-2
    for key in real:  # GradCache with the kd term: the same update as the plain step
        torch.testing.assert_close(cached[key], real[key], atol=1e-6, rtol=0, msg=lambda m, key=key: f"{key}: {m}")
