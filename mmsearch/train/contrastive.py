"""Contrastive training of two-tower models: the InfoNCE loss and the one trainer every model of mmsearch uses.

:func:`info_nce_loss` is the symmetric InfoNCE (CLIP) loss with *multi-positive*
targets: items that share a group id (for example the same caption) are
positives for each other, and the target distribution of a row is spread evenly
over its positives. Items with a negative group id have no positive at all and
serve as pure negatives (for example background frames that no caption
describes). Soft targets (a weight matrix) generalise the groups: ``synth-clap``
trains with the share of a sound window each caption's event covers.

:func:`train_contrastive` is generic over any two towers: it only sees two
``encode`` callables, the parameters to optimise and a batch iterator. It trains
``synth-clip`` (:mod:`mmsearch.train.synth_clip`), ``synth-clap``
(:mod:`mmsearch.train.synth_clap`) and the projection heads of the common space
(:mod:`mmsearch.common_space`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np


__all__ = ["AdamWCosine", "Groups", "ProgressFn", "info_nce_loss", "positive_mask", "step_logger", "train_contrastive", "warmup_cosine"]

Groups = Any  # None | 1-D ints (shared by both sides) | (groups_a, groups_b) | a 2-D (Na, Nb) weight tensor
ProgressFn = Callable[[int, float, float], None]  # (step, loss, logit scale)



# --------------------------------------------------------------------------- the loss
def _as_groups(groups: Any, n: int, device: Any) -> "Any":
    import torch

    if groups is None:
        return torch.arange(n, device=device)
    g = torch.as_tensor(np.asarray(groups) if not isinstance(groups, torch.Tensor) else groups, device=device)
    if g.ndim != 1 or len(g) != n:
        raise ValueError(f"expected {n} group ids, got shape {tuple(g.shape)}")
    return g.long()


def positive_mask(groups_a: Any, groups_b: Any) -> "Any":
    """Boolean (Na, Nb): ``a[i]`` and ``b[j]`` are positives iff they share a group id >= 0."""
    return (groups_a[:, None] == groups_b[None, :]) & (groups_a[:, None] >= 0) & (groups_b[None, :] >= 0)


def _soft_cross_entropy(logits: Any, weights: Any) -> "Any":
    """Mean over rows with some weight of -sum_j t_ij log softmax(logits)_ij, t the row's weights normalised to 1."""
    import torch

    totals = weights.sum(dim=1)
    valid = totals > 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logp = torch.log_softmax(logits[valid], dim=1)
    targets = weights[valid].to(logp.dtype) / totals[valid, None].to(logp.dtype)
    # positions outside the targets contribute 0 * logp (finite), so no masking trick is needed
    return -(targets * logp).sum(dim=1).mean()


def info_nce_loss(
    a: Any,
    b: Any,
    logit_scale: Any,
    groups_a: Any = None,
    groups_b: Any = None,
    *,
    weights: Any = None,
) -> "Any":
    """Symmetric InfoNCE (the CLIP loss) between embeddings ``a`` (Na, D) and ``b`` (Nb, D).

    Both are L2-normalised here; logits are ``scale * a @ b.T`` with ``logit_scale``
    the multiplier itself (CLIP's ``logit_scale.exp()``), a float or a tensor.
    Without group ids, ``a[i]`` and ``b[i]`` are the only positive pair (Na == Nb),
    which is exactly CLIP's loss. With group ids, every pair sharing an id >= 0 is
    positive and each row's target is uniform over its positives; rows without any
    positive (negative ids) are skipped in their own direction but remain negatives
    for the other side. ``groups_b`` defaults to ``groups_a``. ``weights`` (Na, Nb), >= 0,
    instead gives soft targets: how much ``a[i]`` matches ``b[j]`` (e.g. the share of a sound
    window a caption's event covers), normalised along each direction; 0/1 weights equal
    group ids. The result is the mean of the a->b and b->a cross-entropies.
    """
    import torch

    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (Na, D) and (Nb, D) embeddings, got {tuple(a.shape)} and {tuple(b.shape)}")
    if weights is None and groups_a is None and groups_b is None and a.shape[0] != b.shape[0]:
        raise ValueError("without group ids both sides must have the same number of items")
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    logits = logit_scale * (a @ b.T)
    if weights is None:
        ga = _as_groups(groups_a, a.shape[0], a.device)
        gb = _as_groups(groups_b if groups_b is not None else groups_a, b.shape[0], b.device)
        weights = positive_mask(ga, gb)
    elif tuple(weights.shape) != (a.shape[0], b.shape[0]):
        raise ValueError(f"weights must be ({a.shape[0]}, {b.shape[0]}), got {tuple(weights.shape)}")
    return 0.5 * (_soft_cross_entropy(logits, weights) + _soft_cross_entropy(logits.T, weights.T))


# --------------------------------------------------------------------------- the generic trainer
def _targets(groups: Groups) -> dict[str, Any]:
    """A batch's targets as :func:`info_nce_loss` keywords: group ids, a pair of them, or a weight matrix."""
    if groups is None:
        return {}
    if isinstance(groups, tuple) and len(groups) == 2:
        return {"groups_a": groups[0], "groups_b": groups[1]}
    if getattr(groups, "ndim", 1) == 2:
        return {"weights": groups}
    return {"groups_a": groups, "groups_b": groups}


def warmup_cosine(optimizer: Any, *, steps: int, warmup: int, min_lr_ratio: float) -> Any:
    """torch's schedulers: linear warm-up over ``warmup`` steps from lr/warmup to lr, then cosine decay
    to ``min_lr_ratio * lr`` at ``steps`` (call ``step()`` after each optimizer step)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    lr = optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, steps - max(warmup, 0)), eta_min=lr * min_lr_ratio)
    if warmup <= 1:
        return cosine
    ramp = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])



class AdamWCosine:
    """The optimizer the tiny models' recipes share (synth-coca, synth-itm, synth-blip, synth-ast): AdamW
    over every parameter of ``model`` with :func:`warmup_cosine` (``warmup`` steps, default a twentieth
    of ``steps`` and at least 1; decay to ``min_lr_ratio`` of ``lr``). :meth:`step` takes one loss:
    gradients cleared, back-propagated, clipped to ``max_grad_norm`` (when given), one optimizer and one
    schedule step; it returns the loss as a float."""

    def __init__(self, model: Any, *, lr: float, weight_decay: float, steps: int, warmup: int | None = None,
                 min_lr_ratio: float = 0.05, max_grad_norm: float | None = None) -> None:
        import torch

        self.params = list(model.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.schedule = warmup_cosine(self.optimizer, steps=steps, warmup=max(1, steps // 20) if warmup is None else warmup,
                                      min_lr_ratio=min_lr_ratio)
        self.max_grad_norm = max_grad_norm

    def step(self, loss: Any) -> float:
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.schedule.step()
        return float(loss.detach())

def train_contrastive(
    encode_a: Callable[[Any], Any],
    encode_b: Callable[[Any], Any],
    parameters: Iterable[Any],
    batches: Iterable[tuple[Any, Any, Groups]],
    *,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    logit_scale: Any = 1 / 0.07,
    max_logit_scale: float = 100.0,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.05,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Train two towers with :func:`info_nce_loss`; returns the loss of every step.

    ``encode_a(batch_a)`` and ``encode_b(batch_b)`` return (N, D) embeddings (not
    necessarily normalised); ``batches`` yields ``(batch_a, batch_b, groups)`` where
    ``groups`` is None (``a[i]`` pairs with ``b[i]``), one sequence of ids shared by
    both sides, a pair ``(groups_a, groups_b)``, or an (Na, Nb) tensor of soft target
    weights (see :func:`info_nce_loss`).

    ``logit_scale`` is either a number (a fixed multiplier) or a tensor holding the
    *log* of the multiplier, like CLIP's ``model.logit_scale``; a tensor that
    requires grad is learnt with the other parameters (no weight decay) and clamped
    to ``log(max_logit_scale)``. AdamW with linear warm-up and cosine decay to
    ``min_lr_ratio * lr`` (:func:`warmup_cosine`); tensors with fewer than 2 dimensions (biases, norms,
    scales) get no weight decay. ``seed`` seeds torch (initialisation done inside
    the encoders, dropout); ``progress(step, loss, scale)`` is called after each step.
    Modules are left in whatever train/eval mode the caller set.
    """
    import torch

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    learn_scale = isinstance(logit_scale, torch.Tensor) and logit_scale.requires_grad
    params: list[Any] = []
    seen: set[int] = set()
    for p in parameters:
        if isinstance(p, tuple):  # named_parameters() works too
            p = p[1]
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            params.append(p)
    if not params and not learn_scale:
        raise ValueError("no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2 and p is not logit_scale]
    groups_opt = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if learn_scale:
        groups_opt.append({"params": [logit_scale], "weight_decay": 0.0})
    optimizer = torch.optim.AdamW([g for g in groups_opt if g["params"]], lr=lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = warmup_steps if warmup_steps is not None else min(100, steps // 10)
    schedule = warmup_cosine(optimizer, steps=steps, warmup=warmup, min_lr_ratio=min_lr_ratio)
    log_max = math.log(max_logit_scale)

    history: list[float] = []
    iterator: Iterator = iter(batches)
    for step in range(steps):
        try:
            batch_a, batch_b, groups = next(iterator)
        except StopIteration:
            break
        emb_a = encode_a(batch_a)
        emb_b = encode_b(batch_b)
        scale = logit_scale.exp() if isinstance(logit_scale, torch.Tensor) else float(logit_scale)
        loss = info_nce_loss(emb_a, emb_b, scale, **_targets(groups))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        schedule.step()
        if learn_scale:
            with torch.no_grad():
                logit_scale.clamp_(0.0, log_max)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}")
        history.append(value)
        if progress is not None:
            progress(step, value, float(scale.detach() if isinstance(scale, torch.Tensor) else scale))
    return history


def step_logger(steps: int, log_every: int, names: tuple[str, ...]) -> Callable[..., None]:
    """A ``progress(step, *values)`` callback for training loops: every ``log_every`` steps (and at the
    last) it prints the step, the mean of each named value since the last line, and the seconds so far."""
    import time

    t0 = time.time()
    recent: list[tuple[float, ...]] = []

    def report(step: int, *values: float) -> None:
        recent.append(values)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            means = [sum(v) / len(recent) for v in zip(*recent)]
            recent.clear()
            shown = "  ".join(f"{name} {mean:.4f}" for name, mean in zip(names, means))
            print(f"step {step + 1}/{steps}  {shown}  {time.time() - t0:.0f}s", flush=True)

    return report

