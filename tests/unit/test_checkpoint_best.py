"""best.pt after a kill between Ultralytics' writes of last.pt and best.pt (found by the crash harness: the
resumed run ended with the previous epoch's model). Small stand-in checkpoints with Ultralytics' keys."""

from __future__ import annotations

import pytest
import torch

from al.core.paths import good_copy
from al.yolo import checkpoints


def _ckpt(path, epoch: int, fitness, best_fitness, weight: float) -> None:
    model = torch.nn.Linear(1, 1)
    model.weight.data.fill_(weight)
    torch.save({"epoch": epoch, "best_fitness": best_fitness, "train_metrics": {"fitness": fitness}, "ema": model,
                "model": None}, path)


@pytest.mark.parametrize("case, from_last", [
    ("last is a newer best epoch", True),   # the kill came while best.pt was being written with last.pt's bytes
    ("no verified copy yet", True),         # ... in the first epoch
    ("last is not the best", False),        # best.pt was not being written this epoch: the copy is the best
    ("same epoch as the copy", False),      # the verified copy is that epoch already
    ("last is stripped", False),            # the final strip (epoch -1): the copy is the final best
])
def test_a_damaged_best_comes_back_as_the_epoch_training_made(tmp_path, case, from_last):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    epoch = {"same epoch as the copy": 0, "last is stripped": -1}.get(case, 1)
    fitness = 0.1 if case == "last is not the best" else 0.3
    _ckpt(last, epoch, fitness, 0.3, weight=2.0)
    if case != "no verified copy yet":
        _ckpt(good_copy(best), 0, 0.3, 0.3, weight=1.0)
    best.write_bytes(last.read_bytes()[:1000])  # truncated mid-write
    t = checkpoints.trust_best(best, last)
    assert t.ok and t.restored and t.problem.startswith("truncated")
    assert (t.source == last) is from_last
    assert best.read_bytes() == (last if from_last else good_copy(best)).read_bytes()


def test_a_loadable_best_is_left_alone(tmp_path):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    _ckpt(last, 1, 0.3, 0.3, weight=2.0)
    _ckpt(best, 0, 0.3, 0.3, weight=1.0)
    before = best.read_bytes()
    assert checkpoints.trust_best(best, last) == checkpoints.Trust(ok=True)
    assert best.read_bytes() == before
