import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from tiny import SENTENCES, write_bert
from transformers import AutoModel, AutoTokenizer

from embforge import Encoder
from embforge.cli import main
from embforge.errors import EmbforgeError
from embforge.merging import average_states, merge_models, normalise_weights


@pytest.fixture(scope="module")
def two_berts(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    return write_bert(root / "a", seed=0, dropout=0.0), write_bert(root / "b", seed=1, dropout=0.0)


def test_merged_weights_are_the_weighted_average(two_berts, tmp_path):
    a, b = two_berts
    summary = merge_models([str(a), str(b)], [7, 3], tmp_path / "m")  # normalised to 0.7 / 0.3
    assert summary["weights"] == pytest.approx([0.7, 0.3])
    wa, wb, wm = (load_file(str(p / "model.safetensors")) for p in (a, b, tmp_path / "m"))
    assert set(wm) == set(wa)
    for key, ta in wa.items():
        if ta.is_floating_point():
            expected = 0.7 * ta + 0.3 * wb[key]
            assert torch.allclose(wm[key], expected, atol=1e-6), key
    # the two inputs really differ, so the check above is not comparing a model with itself
    key = "embeddings.word_embeddings.weight"
    assert not torch.allclose(wa[key], wb[key])


def test_average_states_by_hand():
    s1 = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([0, 1])}
    s2 = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([0, 1])}
    out = average_states([s1, s2], [0.25, 0.75])
    assert out["w"].tolist() == [2.5, 5.0]
    assert out["ids"].tolist() == [0, 1] and out["ids"].dtype == torch.long
    with pytest.raises(EmbforgeError, match="integer tensor 'ids'"):
        average_states([s1, {"w": s2["w"], "ids": torch.tensor([1, 0])}], [0.5, 0.5])


@pytest.mark.parametrize("weights, message", [([1.0], "2 model"), ([-1, 2], "non-negative"), ([0, 0], "zero")])
def test_bad_weights(weights, message):
    with pytest.raises(EmbforgeError, match=message):
        normalise_weights(weights, 2)


def test_mismatch_names_the_first_differing_tensor(two_berts, tmp_path):
    a, _ = two_berts
    narrow = write_bert(tmp_path / "narrow", hidden=16)
    with pytest.raises(EmbforgeError, match=r"'backbone\.embeddings\.word_embeddings\.weight' has shape \(\d+, 16\)"):
        merge_models([str(a), str(narrow)], None, tmp_path / "out")
    deeper = write_bert(tmp_path / "deeper", layers=3)
    with pytest.raises(EmbforgeError, match=r"tensor 'backbone\.encoder\.layer\.2\..*' that .* lacks"):
        merge_models([str(a), str(deeper)], None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merged_folder_keeps_the_first_models_settings_and_loads_everywhere(two_berts, tmp_path):
    a, b = two_berts
    first = Encoder.from_pretrained(a, pooling="cls", query_instruction="query: ", query_max_len=16, device="cpu")
    first.save(tmp_path / "first")
    merge_models([str(tmp_path / "first"), str(b)], [0.5, 0.5], tmp_path / "m")
    settings = json.loads((tmp_path / "m" / "embforge.json").read_text())
    assert (settings["pooling"], settings["query_instruction"], settings["query_max_len"]) == ("cls", "query: ", 16)

    enc = Encoder.from_pretrained(tmp_path / "m", device="cpu")
    ours = enc.encode(SENTENCES)
    st = SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(SENTENCES)
    assert np.abs(ours - st).max() <= 1e-5
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    auto = AutoModel.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        batch = tok(SENTENCES, padding=True, truncation=True, max_length=enc.config.passage_max_len,
                    return_tensors="pt")
        cls = torch.nn.functional.normalize(auto(**batch).last_hidden_state[:, 0], dim=-1).numpy()
    assert np.abs(ours - cls).max() <= 1e-5
    # merging a model with itself gives the model back
    merge_models([str(a), str(a)], [0.3, 0.7], tmp_path / "self")
    assert np.abs(Encoder.from_pretrained(tmp_path / "self").encode(SENTENCES)
                  - Encoder.from_pretrained(a).encode(SENTENCES)).max() <= 1e-5


def test_cli_base_shortcut_and_card(two_berts, tmp_path, capsys):
    a, b = two_berts
    out = tmp_path / "merged"
    code = main(["merge", "--models", str(a), "--base", str(b), "--weights", "0.6", "0.4", "--output_dir", str(out)])
    assert code == 0, capsys.readouterr().err
    card = (out / "README.md").read_text()
    assert "## Merge" in card and f"| {a} | 0.6000 |" in card and f"| {b} | 0.4000 |" in card
    assert main(["merge", "--models", str(a), "--base", str(b), "--weights", "1", "--output_dir",
                 str(tmp_path / "x")]) == 2
    assert "--weights has 1 value(s) for 2 model(s)" in capsys.readouterr().err
    assert main(["merge", "--models", str(a), "--output_dir", str(tmp_path / "x")]) == 2
