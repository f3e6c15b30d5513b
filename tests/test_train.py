"""The contrastive loss and trainer in mmsearch.train (small, CPU-only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmsearch.train import info_nce_loss, train_contrastive


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_info_nce_two_by_two_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = 2 * a @ b.T = [[2, 1.2], [0, 1.6]]; -log softmax of the diagonal, rows then columns
    rows = (_softplus(1.2 - 2.0) + _softplus(0.0 - 1.6)) / 2
    cols = (_softplus(0.0 - 2.0) + _softplus(1.2 - 1.6)) / 2
    expected = (rows + cols) / 2
    assert float(info_nce_loss(a, b, 2.0)) == pytest.approx(expected, rel=1e-6)
    # inputs are L2-normalised inside: scaling them changes nothing
    assert float(info_nce_loss(3 * a, 0.5 * b, torch.tensor(2.0))) == pytest.approx(expected, rel=1e-6)


def test_info_nce_matches_clip_loss_without_groups():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    logits = 10.0 * a @ b.T
    labels = torch.arange(6)
    clip = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    assert float(info_nce_loss(a, b, 10.0)) == pytest.approx(float(clip), rel=1e-6)
    assert float(info_nce_loss(a, b, 10.0, torch.arange(6))) == pytest.approx(float(clip), rel=1e-6)


def test_multi_positive_targets_spread_over_equal_groups():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    groups = torch.tensor([0, 0, 1])
    logits = (torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T) * 5.0
    pos = (groups[:, None] == groups[None, :]).float()
    targets = pos / pos.sum(1, keepdim=True)
    by_hand = (
        -(targets * logits.log_softmax(1)).sum(1).mean() - (targets.T * logits.T.log_softmax(1)).sum(1).mean()
    ) / 2
    assert float(info_nce_loss(a, b, 5.0, groups)) == pytest.approx(float(by_hand), rel=1e-6)

    # Items sharing a caption are not pushed apart: with groups, identical embeddings for the shared
    # caption beat separated ones; with one-to-one pairs it is the other way round.
    e0, e1, e2 = torch.eye(3)
    collapsed = torch.stack([e0, e0, e2])
    separated = torch.stack([e0, e1, e2])
    g = torch.tensor([0, 0, 1])
    assert info_nce_loss(collapsed, collapsed, 20.0, g) < info_nce_loss(separated, separated, 20.0, g)
    assert info_nce_loss(separated, separated, 20.0) < info_nce_loss(collapsed, collapsed, 20.0)
    # at the optimum each row's loss is the entropy of its target: ln 2 for the two group-0 rows
    assert float(info_nce_loss(collapsed, collapsed, 100.0, g)) == pytest.approx(2 / 3 * math.log(2), abs=1e-4)


def test_items_without_positive_are_pure_negatives():
    # side a has an extra item (group -1, e.g. a background frame) that no text describes
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ga, gb = torch.tensor([0, 1, -1]), torch.tensor([0, 1])
    logits = 3.0 * a @ b.T  # (3, 2)
    rows = torch.nn.functional.cross_entropy(logits[:2], torch.tensor([0, 1]))  # the -1 row is skipped
    cols = torch.nn.functional.cross_entropy(logits.T, torch.tensor([0, 1]))  # ... but is a negative here
    expected = (rows + cols) / 2
    assert float(info_nce_loss(a, b, 3.0, ga, gb)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError):
        info_nce_loss(a, b, 3.0)  # different sizes need group ids


def _toy_batches(seed: int, n_classes: int = 4, batch: int = 32):
    """Noisy points around 4 fixed class centres (side a) paired with their class id (side b)."""
    centres = np.random.default_rng(12345).normal(size=(n_classes, 8)).astype(np.float32)
    rng = np.random.default_rng(seed)
    while True:
        y = rng.integers(n_classes, size=batch)
        x = centres[y] + 0.3 * rng.normal(size=(batch, 8)).astype(np.float32)
        yield torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(y)


@pytest.mark.parametrize("learn_scale", [False, True])
def test_train_contrastive_reduces_loss_on_a_separable_toy(learn_scale):
    torch.manual_seed(0)
    tower_a = torch.nn.Linear(8, 16)
    tower_b = torch.nn.Embedding(4, 16)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0))) if learn_scale else None
    steps_seen = []
    history = train_contrastive(
        tower_a, tower_b, list(tower_a.parameters()) + list(tower_b.parameters()), _toy_batches(0),
        steps=60, lr=0.05, weight_decay=0.0, logit_scale=log_scale if learn_scale else 10.0, seed=0,
        progress=lambda step, loss, scale: steps_seen.append((step, loss, scale)),
    )
    assert len(history) == 60 and [s for s, _, _ in steps_seen] == list(range(60))
    assert all(math.isfinite(v) for v in history)
    # 32 items in 4 classes: the best possible loss is the entropy of the targets, about ln(32 / 4)
    first, last = np.mean(history[:5]), np.mean(history[-5:])
    assert last < first - 0.4
    assert last < math.log(8) + 0.2
    # the class of a fresh sample is now the nearest text embedding
    x, y, _ = next(_toy_batches(1))
    with torch.no_grad():
        pred = (tower_a(x) @ tower_b.weight.T).argmax(1)
    assert (pred == y).float().mean() > 0.95
    if learn_scale:
        assert float(log_scale.detach()) != pytest.approx(math.log(10.0))
        assert float(log_scale.detach()) <= math.log(100.0) + 1e-6


def test_train_contrastive_is_reproducible():
    def run():
        torch.manual_seed(0)
        tower_a, tower_b = torch.nn.Linear(8, 16), torch.nn.Embedding(4, 16)
        return train_contrastive(tower_a, tower_b, [*tower_a.parameters(), *tower_b.parameters()],
                                 _toy_batches(0), steps=5, lr=0.01, seed=3)

    assert run() == run()


def test_train_synth_clip_writes_a_loadable_half_checkpoint(tmp_path):
    import open_clip

    from mmsearch.train import train_synth_clip

    out = tmp_path / "tiny.pt"
    history = train_synth_clip(out, steps=2, batch_size=8, seed=0)
    assert len(history) == 2 and all(math.isfinite(v) for v in history)
    state = torch.load(out, map_location="cpu")["state_dict"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert out.stat().st_size < 6_000_000
    assert not list(tmp_path.glob(".*.tmp"))  # written via a temp file, then renamed
    model, _, _ = open_clip.create_model_and_transforms("synth-clip", pretrained=str(out), image_resize_mode="squash")
    assert model.encode_text(open_clip.get_tokenizer("synth-clip")(["a red circle"])).shape == (1, 64)


def test_checkpoint_bytes_depend_on_weights_only(tmp_path):
    """Same weights, same bytes, whatever the file name: the index records the checkpoint's sha256."""
    from mmsearch.train import save_open_clip_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    a = save_open_clip_checkpoint(model, tmp_path / "a.pt")
    b = save_open_clip_checkpoint(model, tmp_path / "sub" / "b.pt")
    assert a.read_bytes() == b.read_bytes()
    state = torch.load(a, map_location="cpu")["state_dict"]
    assert state["weight"].dtype == torch.float16
    assert torch.allclose(state["weight"].float(), model.weight.detach(), atol=1e-3)
