"""Running a benchmark: index the candidates, ask the engine, score its answers."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UsageError
from ..fileio import atomic_write
from ..metrics import moment_recalls, retrieval_metrics, video_recalls
from .media import _media_folder
from .report import metrics_markdown
from .tasks import (
    AUDIO,
    MAX_MOMENTS,
    MOMENT,
    QUERY_CHUNK,
    TOP_SAVED,
    Query,
    _layout,
    _task,
    load_dataset,
)


# --------------------------------------------------------------------------- running
def run_bench(
    task: str,
    data_dir: str | os.PathLike,
    *,
    media_dir: str | os.PathLike | None = None,
    index_dir: str | os.PathLike | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    audio_model: str | None = None,
    limit: int | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    per_query: str | os.PathLike | None = None,
    markdown: str | os.PathLike | None = None,
    videos: int = 20,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run benchmark ``task`` on the dataset in ``data_dir``; returns (and with ``out`` writes) the result.

    The result is ``{"task", "n_queries", "metrics", ...}``: retrieval tasks
    have ``metrics = {"R@1", "R@5", "R@10", "MdR", "MnR"}`` (sound tasks add
    ``"mAP@10"``), moment tasks ``{"VCMR": {"0.5": {"R@1", "R@5", "R@10",
    "R@100"}, "0.7": {...}}, "SVMR": {...}, "VR": {"R@1", ..., "R@100"}}``;
    recalls are percentages rounded to 2 decimals. Queries whose media file is
    absent are left out (counted in ``missing_media``); ``limit`` keeps the first
    ``limit`` of the rest, and only their media are indexed and ranked. A query
    whose file is there but has no vectors (it failed to index) counts as not
    retrieved, with rank ``n_candidates + 1``. ``videos`` is the number of
    stage-1 candidates stage 2 localizes moments in (``mmsearch query --videos``).
    ``per_query`` writes one JSON line per query (the query, its ground truth,
    ``rank`` and ``stage1_rank``, the first 10 media and moments, and for moment
    tasks the first 10 SVMR moments); ``markdown`` a short report.
    """
    import mmsearch

    from ..spaces import AUDIO as AUDIO_SPACE
    from ..spaces import VISUAL as VISUAL_SPACE

    say = log or (lambda message: None)
    spec = _task(task)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    if videos < 1:
        raise UsageError(f"videos must be at least 1, got {videos}")
    t_start = time.perf_counter()
    dataset = load_dataset(spec.name, data_dir)
    if not dataset.queries:
        raise UsageError(f"{dataset.annotation}: no queries in it; {_layout(spec)}")
    data_root = Path(data_dir) if Path(data_dir).is_dir() else Path(data_dir).parent
    folder = _media_folder(spec, Path(media_dir) if media_dir is not None else data_root)

    # media of each item; queries without a file are left out
    files: dict[str, Path | None] = {key: folder.find(names, youtube=dataset.youtube) for key, names in dataset.names.items()}
    present = [q for q in dataset.queries if files.get(q.item) is not None]
    missing_items = sorted({q.item for q in dataset.queries if files.get(q.item) is None})
    if not present:
        raise UsageError(
            f"{spec.name}: none of the {len(dataset.names)} media files named in {dataset.annotation} is in {folder.root} "
            f"(e.g. {missing_items[0]!r}); {_layout(spec)}"
        )
    queries = present[:limit] if limit is not None else present
    candidates = list(dict.fromkeys(q.item for q in queries))  # listing order = first mention
    position = {key: i for i, key in enumerate(candidates)}
    paths = [files[key] for key in candidates]
    t_loaded = time.perf_counter()
    say(f"{spec.name}: {len(queries)} queries over {len(candidates)} {spec.folder} from {dataset.annotation}"
        + (f" ({len(missing_items)} media files not found, their queries left out)" if missing_items else ""))

    temporary = index_dir is None
    root = Path(tempfile.mkdtemp(prefix=f"mmsearch-bench-{spec.name}-")) if temporary else Path(index_dir)  # type: ignore[arg-type]
    try:
        say(f"indexing into {root}" + (" (temporary)" if temporary else ""))
        report = mmsearch.index_paths(
            sorted({str(p) for p in paths}), root, model=model, pretrained=pretrained,
            audio=spec.kind == AUDIO, audio_model=audio_model if spec.kind == AUDIO else None, device=device,
        )
        t_indexed = time.perf_counter()
        idx = mmsearch.open_index(root, device=device)
        space_name = AUDIO_SPACE if spec.kind == AUDIO else VISUAL_SPACE
        space = idx.snapshot.spaces.get(space_name)
        if space is None:
            raise UsageError(f"{spec.name}: nothing could be indexed in the {space_name} space of {root} (see index failures)")
        path_to_id = idx.media_ids()
        ids: list[int | None] = [path_to_id.get(str(p)) for p in paths]

        # stage-1 vectors of the candidates: the media-level vectors the index holds
        known, media_vectors = idx.media_vectors([m for m in ids if m is not None], space=space_name)
        vector_of = {int(m): v for m, v in zip(known, media_vectors)}
        matrix = np.zeros((len(candidates), space.dim), dtype=np.float32)
        has = np.zeros(len(candidates), dtype=bool)
        for c, mid in enumerate(ids):
            if mid is not None and mid in vector_of:
                matrix[c] = vector_of[mid]
                has[c] = True
        not_indexed = [candidates[c] for c in range(len(candidates)) if not has[c]]

        texts = [q.text for q in queries]
        vectors = np.concatenate(
            [idx.embed_queries(text=texts[s : s + QUERY_CHUNK], space=space_name) for s in range(0, len(texts), QUERY_CHUNK)]
        ).astype(np.float32)
        t_encoded = time.perf_counter()
        encoder = idx.encoder(space_name)
        identity = idx.manifest["spaces"][space_name]["encoder"]["identity"]

        n = len(candidates)
        gt = np.asarray([position[q.item] for q in queries], dtype=np.int64)
        ranked = _rank(idx, space_name, vectors, ids, matrix, has, gt, videos)

        metrics: dict[str, Any]
        if spec.kind == MOMENT:
            metrics = _moment_metrics(idx, space_name, queries, candidates, ids, gt, vectors, ranked)
        else:
            metrics = _round(retrieval_metrics(ranked.ranks.tolist(), with_map=spec.kind == AUDIO))
        stage1 = _round(retrieval_metrics(ranked.stage1_ranks.tolist(), with_map=spec.kind == AUDIO))
        records: list[dict[str, Any]] = []
        for i, q in enumerate(queries):
            rec: dict[str, Any] = {
                "query_id": q.qid, "query": q.text, "gt": q.item,
                "rank": int(ranked.ranks[i]), "stage1_rank": int(ranked.stage1_ranks[i]),
            }
            if q.ts is not None:
                rec["gt_moment"] = [q.ts[0], q.ts[1]]
            if q.extra:
                rec["info"] = q.extra
            best = ranked.best[i]
            rec["top"] = [
                {"item": candidates[c], "score": _r5(best.get(c, ranked.scores[i, c])), "stage1_score": _r5(ranked.scores[i, c])}
                for c in ranked.order[i][:TOP_SAVED]
            ]
            rec["moments"] = [_moment(candidates[c], st, en, sc) for c, st, en, sc in ranked.moments[i][:TOP_SAVED]]
            if spec.kind == MOMENT:
                rec["svmr"] = [_moment(q.item, st, en, sc) for st, en, sc in ranked.svmr[i][:TOP_SAVED]]
            records.append(rec)
        t_done = time.perf_counter()
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)

    result: dict[str, Any] = {
        "task": spec.name,
        "n_queries": len(queries),
        "metrics": metrics,
        "n_candidates": n,
        "protocol": spec.protocol,
        "annotation": str(dataset.annotation),
        "media": str(folder.root),
        "limit": limit,
        "skipped_annotations": dataset.skipped,
        "missing_media": {"items": len(missing_items), "queries": len(dataset.queries) - len(present), "examples": missing_items[:10]},
        "not_indexed": {"items": len(not_indexed), "examples": not_indexed[:10],
                        "failures": [{"path": p, "stage": st, "reason": r} for p, st, r in report.failed][:10]},
        "rank_of_not_retrieved": n + 1,
        "stage1_metrics": stage1,
        "videos": videos,
        "space": space_name,
        "encoder": identity,
        "index": None if temporary else str(Path(root).absolute()),
        "seconds": {
            "load": round(t_loaded - t_start, 3),
            "index": round(t_indexed - t_loaded, 3),
            "encode": round(t_encoded - t_indexed, 3),
            "score": round(t_done - t_encoded, 3),
            "total": round(t_done - t_start, 3),
        },
        "indexed_files": len(report.indexed),
        "machine": _machine(str(getattr(encoder, "device", device))),
    }
    if out is not None:
        _write(Path(out), json.dumps(result, indent=2) + "\n")
    if per_query is not None:
        _write(Path(per_query), "".join(json.dumps(r) + "\n" for r in records))
    if markdown is not None:
        _write(Path(markdown), metrics_markdown(result))
    return result


@dataclass
class _Ranked:
    scores: np.ndarray  # stage-1 score of every (query, candidate); -inf for candidates without vectors
    stage1_ranks: np.ndarray  # 1-based rank of the ground truth by stage-1 score alone
    ranks: np.ndarray  # 1-based rank of the ground truth in the engine's answer
    order: list[list[int]]  # the engine's candidate order per query (the first MAX_MOMENTS)
    moments: list[list[tuple[int, float, float, float]]]  # (candidate, start, end, score), best first, <= MAX_MOMENTS
    best: list[dict[int, float]]  # best moment score of each localized candidate
    svmr: list[list[tuple[float, float, float]]] = field(default_factory=list)


def _rank(
    idx: Any, space: str, vectors: np.ndarray, ids: list[int | None], matrix: np.ndarray, has: np.ndarray, gt: np.ndarray,
    videos: int,
) -> _Ranked:
    """The engine's two stages over the benchmark's candidates, for every query.

    Stage 1 orders the candidates by the cosine of the query and their media
    vector (stable sort: of equal scores the candidate listed first wins); it is
    computed here in full, since a rank past the first ``videos`` still counts.
    Stage 2 is the engine's own: :meth:`mmsearch.api.Index.search_hits` with the
    candidates' media as the filter localizes moments in the first ``videos`` of
    them and orders the moments (moment score, then stage-1 score and rank, then
    start). The engine's answer lists each candidate at its first moment (copies
    of one file, which share a media id, in listing order); the candidates stage 2
    did not reach follow in stage-1 order, so their rank is their stage-1 rank. A
    ground truth without vectors gets rank ``n_candidates + 1``.
    """
    n = matrix.shape[0]
    n_has = int(has.sum())
    col = np.arange(n)
    listed = [m for m in dict.fromkeys(m for m, ok in zip(ids, has) if ok)]  # media ids in listing order
    candidates_of: dict[int, list[int]] = {}
    for c, mid in enumerate(ids):
        if has[c]:
            candidates_of.setdefault(int(mid), []).append(c)  # type: ignore[arg-type]
    scores_all = np.empty((len(vectors), n), dtype=np.float32)
    stage1_ranks = np.empty(len(vectors), dtype=np.int64)
    ranks = np.empty(len(vectors), dtype=np.int64)
    order_all: list[list[int]] = []
    moments_all: list[list[tuple[int, float, float, float]]] = []
    best_all: list[dict[int, float]] = []
    for s in range(0, len(vectors), QUERY_CHUNK):
        block = vectors[s : s + QUERY_CHUNK]
        scores = block @ matrix.T
        scores[:, ~has] = -np.inf
        g = gt[s : s + QUERY_CHUNK]
        own = scores[np.arange(len(g)), g][:, None]
        higher = (scores > own).sum(axis=1)
        tied_before = ((scores == own) & (col[None, :] < g[:, None])).sum(axis=1)
        stage1_ranks[s : s + len(g)] = np.where(has[g], 1 + higher + tied_before, n + 1)
        scores_all[s : s + len(g)] = scores
        hits = idx.search_hits(block, space=space, k=MAX_MOMENTS * 10, videos=videos, media=listed) if listed else [[]] * len(g)
        for j, row in enumerate(scores):
            i = s + j
            stage1_order = [int(c) for c in np.argsort(-row, kind="stable")[:n_has]]
            moments = [(c, h.start, h.end, h.score) for h in hits[j] for c in candidates_of[h.media_id]]
            localized = list(dict.fromkeys(c for c, _, _, _ in moments))
            reached = set(localized)
            order = localized + [c for c in stage1_order if c not in reached]
            gi = int(g[j])
            if not has[gi]:
                ranks[i] = n + 1
            elif gi in reached:
                ranks[i] = localized.index(gi) + 1
            else:
                ranks[i] = stage1_ranks[i]
            order_all.append(order[:MAX_MOMENTS])
            moments_all.append(moments[:MAX_MOMENTS])
            best: dict[int, float] = {}
            for c, _, _, score in moments:
                best.setdefault(c, score)
            best_all.append(best)
    return _Ranked(scores_all, stage1_ranks, ranks, order_all, moments_all, best_all)


def _moment_metrics(
    idx: Any, space: str, queries: list[Query], candidates: list[str], ids: list[int | None], gt: np.ndarray,
    vectors: np.ndarray, ranked: _Ranked,
) -> dict[str, Any]:
    """VCMR (the engine's moments over the corpus), SVMR (inside the ground-truth video), VR; TVR's rules."""
    truth: list[tuple[str, float, float]] = []
    for i, q in enumerate(queries):
        mid = ids[int(gt[i])]
        inside = idx.search_hits(vectors[i : i + 1], space=space, k=MAX_MOMENTS, videos=1, media=[mid])[0] if mid is not None else []
        ranked.svmr.append([(h.start, h.end, h.score) for h in inside])
        assert q.ts is not None
        truth.append((q.item, q.ts[0], q.ts[1]))
    vcmr = [[(candidates[c], st, en) for c, st, en, _ in moments] for moments in ranked.moments]
    svmr = [[(q.item, st, en) for st, en, _ in segs] for q, segs in zip(queries, ranked.svmr)]
    vr = [[candidates[c] for c in order] for order in ranked.order]
    return {
        "VCMR": {thd: _round(r) for thd, r in moment_recalls(vcmr, truth).items()},
        "SVMR": {thd: _round(r) for thd, r in moment_recalls(svmr, truth).items()},
        "VR": _round(video_recalls(vr, [t[0] for t in truth])),
    }


def _moment(video: str, start: float, end: float, score: float) -> dict[str, Any]:
    return {"video": video, "start": round(float(start), 3), "end": round(float(end), 3), "score": _r5(score)}


def _r5(x: float) -> float:
    return round(float(x), 5)


def _round(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 2) for k, v in metrics.items()}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=False)


def _machine(device: str) -> dict[str, Any]:
    import mmsearch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "device": device,
        "mmsearch": mmsearch.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info
