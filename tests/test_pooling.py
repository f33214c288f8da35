import pytest
import torch

from embforge.errors import EmbforgeError
from embforge.model.pooling import canonical_pooling, pool

# Two texts of 3 and 2 real tokens; hidden states chosen so every mode has a distinct answer.
REAL = [torch.tensor([[1.0, 0.0], [2.0, 4.0], [3.0, 8.0]]), torch.tensor([[5.0, 1.0], [7.0, 3.0]])]
EXPECTED = {
    "cls": [[1.0, 0.0], [5.0, 1.0]],
    "mean": [[2.0, 4.0], [6.0, 2.0]],
    "lasttoken": [[3.0, 8.0], [7.0, 3.0]],
    # weights 1,2,3 and 1,2: (1+4+9)/6, (0+8+24)/6 ; (5+14)/3, (1+6)/3
    "weightedmean": [[14 / 6, 32 / 6], [19 / 3, 7 / 3]],
}


def padded(side: str):
    hidden = torch.full((2, 4, 2), 99.0)  # padding positions hold garbage that must be ignored
    mask = torch.zeros(2, 4, dtype=torch.long)
    for row, seq in enumerate(REAL):
        n = seq.shape[0]
        sl = slice(4 - n, 4) if side == "left" else slice(0, n)
        hidden[row, sl] = seq
        mask[row, sl] = 1
    return hidden, mask


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_pool_matches_hand_values_under_both_paddings(mode, side):
    hidden, mask = padded(side)
    assert torch.allclose(pool(hidden, mask, mode), torch.tensor(EXPECTED[mode]), atol=1e-6)


def test_pool_keeps_gradient():
    hidden, mask = padded("right")
    hidden.requires_grad_(True)
    pool(hidden, mask, "weightedmean").sum().backward()
    assert hidden.grad[:, :, 0].abs().sum() > 0
    assert torch.all(hidden.grad[1, 2:] == 0)  # padding gets no gradient


def test_unknown_pooling_is_a_clear_error():
    with pytest.raises(EmbforgeError, match="unknown pooling 'max'.*cls, mean, weightedmean, lasttoken"):
        canonical_pooling("max")
    assert canonical_pooling("last") == "lasttoken"
