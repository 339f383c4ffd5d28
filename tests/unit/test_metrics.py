from __future__ import annotations

import torch

from carrygate.models.metrics import fidelity, task_accuracy, token_cosine

IGN = -100


def test_cell_accuracy_is_mean_per_sequence_not_pooled() -> None:
    labels = torch.tensor([[1, 2, IGN, IGN], [1, 1, 1, 1], [IGN, IGN, IGN, IGN]])
    preds = torch.tensor([[1, 0, 5, 5], [1, 1, 1, 1], [0, 0, 0, 0]])
    scores = task_accuracy(preds, labels)
    # row 0: 1/2, row 1: 4/4, row 2 (all ignored) not counted -> (0.5 + 1) / 2; pooled would be 5/6
    assert scores["count"] == 2
    assert abs(scores["cell_accuracy"] - 0.75) < 1e-7
    assert abs(scores["puzzle_exact"] - 0.5) < 1e-7


def test_token_cosine_and_fidelity_by_hand() -> None:
    a = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    b = torch.tensor([[[0.0, 1.0], [2.0, 2.0]]])
    assert torch.allclose(token_cosine(a, b), torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(fidelity(a, b), torch.tensor([0.5], dtype=torch.float64))
    assert torch.equal(fidelity(a.bfloat16(), a.bfloat16()), torch.tensor([1.0], dtype=torch.float64))  # exactly one
