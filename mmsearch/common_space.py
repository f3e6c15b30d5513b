"""A VATT-style common space: projection heads learnt from the user's own unlabeled videos.

VATT trains one space for video, audio and text with NCE: the streams of the
same moment of a video are positives, other moments and other videos are
negatives. Here the towers are the index's existing encoders (CLIP for frames,
CLAP for sound) and only small projection heads are learnt:

- a fine-grained visual head maps frame vectors (mean over an audio window) and
  a fine-grained audio head maps audio-window vectors into the common space;
- text takes the coarse path: each tower's text embedding goes through that
  tower's head, so a text query lands in the common space from either side.

``train_space`` builds the (visual, audio) pairs of every video that has both,
trains the heads with the project's contrastive trainer, saves them in the
index directory (versioned in the manifest) and indexes the common-space
vectors of every moment as two more spaces, ``common-visual`` and
``common-audio``, which cross-modal queries search.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import IngestConfig, audio_window_config, config_from_record
from .derive import Deriver
from .encoders.base import l2_normalize
from .errors import UsageError
from .spaces import AUDIO, COMMON_AUDIO, COMMON_SOURCES, COMMON_VISUAL, VISUAL, anchor_of
from .store import DATA, IndexWriter, Snapshot, atomic_write, open_snapshot, shard_count

HEADS_FORMAT = 1


@dataclass(frozen=True)
class HeadConfig:
    """Shape and training of the projection heads."""

    common_dim: int = 128
    hidden: int = 256
    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.01
    temperature: float = 0.07
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("common_dim", "hidden", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"the common space's {name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.temperature > 0):
            raise UsageError(f"the common space's learning rate and temperature must be positive, got {self.lr} and {self.temperature}")


def _mlp(in_dim: int, hidden: int, out_dim: int) -> Any:
    import torch.nn as nn

    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class ProjectionHeads:
    """The visual and audio heads, and the text path through them."""

    def __init__(self, visual_dim: int, audio_dim: int, config: HeadConfig = HeadConfig()) -> None:
        import torch

        torch.manual_seed(config.seed)
        self.config = config
        self.visual_dim, self.audio_dim = visual_dim, audio_dim
        self.visual = _mlp(visual_dim, config.hidden, config.common_dim)
        self.audio = _mlp(audio_dim, config.hidden, config.common_dim)

    def parameters(self) -> list[Any]:
        return list(self.visual.parameters()) + list(self.audio.parameters())

    def _apply(self, head: Any, vectors: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = head(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))).numpy()
        return l2_normalize(out)

    def project_visual(self, vectors: np.ndarray) -> np.ndarray:
        """Frame, image or CLIP-text vectors into the common space."""
        return self._apply(self.visual, vectors)

    def project_audio(self, vectors: np.ndarray) -> np.ndarray:
        """Audio-window, sound-file or CLAP-text vectors into the common space."""
        return self._apply(self.audio, vectors)

    def state(self) -> dict[str, Any]:
        return {
            "format": HEADS_FORMAT,
            "visual_dim": self.visual_dim,
            "audio_dim": self.audio_dim,
            "config": asdict(self.config),
            "visual": self.visual.state_dict(),
            "audio": self.audio.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ProjectionHeads":
        heads = cls(int(state["visual_dim"]), int(state["audio_dim"]), HeadConfig(**state["config"]))
        heads.visual.load_state_dict(state["visual"])
        heads.audio.load_state_dict(state["audio"])
        heads.visual.eval()
        heads.audio.eval()
        return heads

    @classmethod
    def load(cls, path: str | Path) -> "ProjectionHeads":
        import torch

        return cls.from_state(torch.load(path, map_location="cpu", weights_only=True))


@dataclass
class Pairs:
    """Co-occurring (visual, audio) vectors: one pair per audio window of a video that has frames there."""

    visual: np.ndarray
    audio: np.ndarray
    media_ids: np.ndarray
    times: np.ndarray


def build_pairs(snapshot: Snapshot, *, audio_window: float) -> Pairs:
    """For every audio window of every video with both spaces: the mean of the frames inside the window."""
    if VISUAL not in snapshot.spaces or AUDIO not in snapshot.spaces:
        raise UsageError(
            f"the index at {snapshot.root} needs both a visual and an audio space to learn a common space; "
            "index videos with soundtracks (without --no-audio) first"
        )
    vis, aud = snapshot.spaces[VISUAL], snapshot.spaces[AUDIO]
    out_v, out_a, ids, times = [], [], [], []
    half = audio_window / 2
    for media_id, row in snapshot.media_rows().items():
        if row["kind"] != "video":
            continue
        ta, va = aud.frames_of(media_id)
        tv, vv = vis.frames_of(media_id)
        if not len(ta) or not len(tv):
            continue
        for t, a in zip(ta, va):
            mask = (tv >= t - half) & (tv < t + half)
            if mask.any():
                out_v.append(vv[mask].mean(axis=0))
                out_a.append(a)
                ids.append(media_id)
                times.append(t)
    if not out_v:
        raise UsageError(f"no video in {snapshot.root} has both frames and sound; nothing to learn from")
    return Pairs(l2_normalize(np.stack(out_v)), np.stack(out_a).astype(np.float32), np.asarray(ids), np.asarray(times))


@dataclass
class TrainSpaceReport:
    pairs: int
    videos: int
    epochs: int
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    heads_version: int = 0
    loss_plot: str | None = None


def train_heads(
    pairs: Pairs, config: HeadConfig, *, progress: Callable[[int, float, float], None] | None = None
) -> tuple[ProjectionHeads, list[float]]:
    """Symmetric InfoNCE between the two heads' outputs; pairs of one video and moment are the positives."""
    import torch

    from .train import train_contrastive

    heads = ProjectionHeads(pairs.visual.shape[1], pairs.audio.shape[1], config)
    v = torch.from_numpy(pairs.visual)
    a = torch.from_numpy(pairs.audio)
    n = len(v)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    rng = np.random.default_rng(config.seed)

    def batches():  # noqa: ANN202
        while True:
            order = rng.permutation(n)
            for s in range(steps_per_epoch):
                idx = torch.from_numpy(order[s * batch : (s + 1) * batch])
                yield v[idx], a[idx], None

    heads.visual.train()
    heads.audio.train()
    losses = train_contrastive(
        heads.visual,
        heads.audio,
        heads.parameters(),
        batches(),
        steps=config.epochs * steps_per_epoch,
        lr=config.lr,
        weight_decay=config.weight_decay,
        logit_scale=1.0 / config.temperature,
        seed=config.seed,
        progress=progress,
    )
    heads.visual.eval()
    heads.audio.eval()
    return heads, losses


def train_space(
    index_dir: str | Path,
    *,
    config: HeadConfig = HeadConfig(),
    progress: Callable[[int, float, float], None] | None = None,
    untrained: bool = False,
) -> TrainSpaceReport:
    """Learn the heads from the index's own videos and index every moment in the common space.

    ``untrained`` skips learning (randomly initialised heads), the baseline the
    README compares against.
    """
    import torch

    started = time.perf_counter()
    root = Path(index_dir)
    if shard_count(root):
        raise UsageError(
            f"the index at {root} is sharded; train-space learns from and writes to an index of one shard "
            "only (not yet one of several): build the common space on an index made without --shards"
        )
    snapshot = open_snapshot(root)
    audio_window = _audio_window(snapshot)
    pairs = build_pairs(snapshot, audio_window=audio_window)
    if untrained:
        heads, losses = ProjectionHeads(pairs.visual.shape[1], pairs.audio.shape[1], config), []
    else:
        heads, losses = train_heads(pairs, config, progress=progress)
    with IndexWriter(root) as writer:
        version = int(writer.manifest.get("common", {}).get("version", 0)) + 1
        heads_rel = f"{DATA}/heads-v{version:04d}.pt"

        buf = io.BytesIO()
        torch.save(heads.state(), buf)
        atomic_write(root / heads_rel, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
        plot_rel = _save_loss_plot(root, version, losses)
        deriver = Deriver(writer, moments=config_from_record(writer.config).moments)
        _write_common_spaces(deriver, snapshot, heads)
        old = writer.manifest.get("attachments", [])  # the previous version's heads and plot go
        writer.manifest["attachments"] = [a for a in old if not a.startswith(f"{DATA}/heads-")]
        writer.attach(heads_rel)
        if plot_rel:
            writer.attach(plot_rel)
        writer.manifest["common"] = {
            "version": version,
            "heads": heads_rel,
            "config": asdict(config),
            "trained": not untrained,
            "pairs": len(pairs.visual),
            "videos": int(len(set(pairs.media_ids.tolist()))),
            "final_loss": losses[-1] if losses else None,
            "loss_plot": plot_rel,
            "spaces": dict(COMMON_SOURCES),
        }
        with deriver:
            deriver.commit()
    return TrainSpaceReport(
        pairs=len(pairs.visual),
        videos=int(len(set(pairs.media_ids.tolist()))),
        epochs=config.epochs,
        steps=len(losses),
        losses=losses,
        seconds=time.perf_counter() - started,
        heads_version=version,
        loss_plot=str(root / plot_rel) if plot_rel else None,
    )


def _audio_window(snapshot: Snapshot) -> float:
    cfg = snapshot.manifest.get("config", {})
    if "audio_window" in cfg:
        return float(cfg["audio_window"])
    identity = snapshot.manifest["spaces"].get(AUDIO, {}).get("encoder", {}).get("identity", {})  # none: build_pairs says why
    window = identity.get("window_seconds")
    if window:
        return float(window)
    return audio_window_config(object(), IngestConfig())[0]


def _write_common_spaces(deriver: Deriver, snapshot: Snapshot, heads: ProjectionHeads) -> None:
    """Every media's frames and audio windows, projected, as the same segments; the spaces are rebuilt from scratch."""
    writer = deriver.writer
    durations = {m: float(r["duration"] or 0.0) for m, r in snapshot.media_rows().items()}
    record = {
        "spec": {"family": "heads", "model": "projection-heads", "pretrained": None, "options": {}},
        "identity": {"family": "heads", "model": "projection-heads", "dim": heads.config.common_dim},
    }
    for common, source, project in (
        (COMMON_VISUAL, VISUAL, heads.project_visual),
        (COMMON_AUDIO, AUDIO, heads.project_audio),
    ):
        writer.reset_space(common, record, heads.config.common_dim, anchor=anchor_of(common))
        data = snapshot.spaces[source]
        for media_id in snapshot.media_rows():
            starts, ends, vecs = data.segments_of(media_id)
            if len(starts):
                deriver.add_segments(common, media_id, starts, ends, project(vecs), duration=durations[media_id])


def _save_loss_plot(root: Path, version: int, losses: list[float]) -> str | None:
    if not losses:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("mmsearch train-space: projection heads")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    rel = f"{DATA}/heads-v{version:04d}-loss.png"
    atomic_write(root / rel, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    return rel


def load_heads(snapshot: Snapshot) -> ProjectionHeads:
    common = snapshot.manifest.get("common")
    if not common and snapshot.manifest.get("shards"):
        raise UsageError(
            f"the index at {snapshot.root} is sharded and has no common space (train-space learns from one shard only): "
            "search pictures with words or an image, sound with words or a sound, or build a 1-shard index for the common space"
        )
    if not common:
        raise UsageError(
            f"the index at {snapshot.root} has no common space yet: run `mmsearch train-space --index {snapshot.root}` first"
        )
    return ProjectionHeads.load(snapshot.root / common["heads"])
