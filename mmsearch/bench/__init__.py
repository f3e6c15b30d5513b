"""``mmsearch bench``: published retrieval benchmarks, read from their official annotation files.

:func:`run_bench` reads a dataset's annotation file in its official format,
finds the media it names under ``--media`` (default: the data folder), indexes
them (a fresh temporary index, or ``--index DIR``, which is brought up to date
incrementally and kept), encodes every query in one batched pass and scores:

The candidates of a benchmark are the media its (kept) queries name, and only
those, even when ``--index`` holds more. Every query gets **the engine's answer**
over them, by the engine itself: :meth:`mmsearch.Index.search_hits` with the
candidates' media ids as its filter (stage 1 orders them by the cosine of the
query and the media-level vector the index holds, stage 2 localizes moments in
the first ``videos``, default 20 as ``mmsearch query``, and sorts them); the full
stage-1 order is computed here too, from the same vectors, for ranks past those
``videos``. The ranked list of media is each
media item at its first moment, followed by the candidates stage 2 did not reach
in stage-1 order. Then:

* retrieval tasks (``msrvtt``, ``didemo``, ``activitynet``; ``audiocaps``,
  ``clotho``, ``musiccaps``): the rank of the relevant item in that list gives
  R@1/5/10, MdR, MnR (and mAP@10 for sound), :mod:`mmsearch.metrics`;
  ``stage1_metrics`` holds the same from stage 1 alone (mean pooling, the
  protocol of the zero-shot CLIP numbers in the literature);
* moment tasks (``tvr``, ``charades-sta``, ``activitynet-moments``): VCMR reads
  the first 100 moments, SVMR the moments localized inside the ground-truth
  video only, VR the first 100 media of the list; recalls at IoU 0.5 and 0.7 as
  TVR's ``standalone_eval/eval.py``.

Ties: candidates are listed in the order the annotation file first names them,
and every ranking is a stable sort by score, so of two equal scores the
candidate listed first ranks first (:func:`mmsearch.metrics.stable_ranking`).

The ``mmsearch bench`` command (``mmsearch.cli``) calls :func:`run_bench` and prints
:func:`metric_rows`. docs/bench.md describes the formats.

One module per craft: :mod:`.tasks` (the tasks, their annotation files and readers),
:mod:`.media` (finding their media files), :mod:`.run` (:func:`run_bench`: index, ask the
engine through :meth:`mmsearch.api.Index.search_hits`, score), :mod:`.report` (tables, markdown).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {  # imported on first use: the command line reads TASKS without loading the runner
    "encoder_label": "report", "metric_rows": "report", "metrics_markdown": "report", "run_bench": "run",
    "TASKS": "tasks", "Dataset": "tasks", "Query": "tasks", "TaskSpec": "tasks", "load_dataset": "tasks",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mmsearch.bench' has no attribute {name!r}")


__all__ = ["TASKS", "TaskSpec", "Query", "Dataset", "encoder_label", "load_dataset", "metric_rows", "metrics_markdown", "run_bench"]
