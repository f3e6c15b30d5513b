"""mmsearch.metrics on hand-computed cases: ranks and ties, R@k / MdR / MnR / mAP@10, TVR-style moment recall."""

from __future__ import annotations

import math

import pytest

from mmsearch.metrics import (
    map_at_10,
    mean_rank,
    median_rank,
    moment_recalls,
    rank_of,
    recall_at,
    retrieval_metrics,
    stable_ranking,
    temporal_iou,
    video_recalls,
)


# --------------------------------------------------------------------------- ranks and ties
def test_stable_ranking_breaks_ties_by_listing_order():
    # candidates 1 and 3 tie at 0.9: the one listed first (1) ranks first; 0 and 4 tie at 0.1 likewise
    scores = [0.1, 0.9, 0.5, 0.9, 0.1]
    assert stable_ranking(scores) == [1, 3, 2, 0, 4]
    assert [rank_of(scores, i) for i in range(5)] == [4, 1, 3, 2, 5]


def test_two_videos_with_the_same_score_the_first_listed_ranks_first():
    scores = [0.3, 0.7, 0.7]  # video B (index 1) and video C (index 2) tie
    assert rank_of(scores, 1) == 1 and rank_of(scores, 2) == 2
    assert rank_of(scores[::-1], 0) == 1  # listed the other way round, C now wins


def test_rank_of_agrees_with_the_stable_sort_and_rejects_bad_targets():
    scores = [0.2, 0.2, 0.2, 0.8, -1.0, 0.2]
    order = stable_ranking(scores)
    assert all(rank_of(scores, c) == order.index(c) + 1 for c in range(len(scores)))
    assert rank_of([0.5, float("nan")], 1) == 2
    with pytest.raises(IndexError):
        rank_of(scores, 6)


# --------------------------------------------------------------------------- retrieval metrics
def test_recall_median_mean_by_hand():
    ranks = [1, 2, 3, 7, 12]
    assert recall_at(ranks, 1) == pytest.approx(20.0)
    assert recall_at(ranks, 5) == pytest.approx(60.0)
    assert recall_at(ranks, 10) == pytest.approx(80.0)
    assert median_rank(ranks) == 3.0
    assert mean_rank(ranks) == pytest.approx(5.0)
    assert median_rank([1, 2, 3, 10]) == 2.5  # even count: mean of the two middle ranks (numpy.median)


def test_map_at_10_is_mean_reciprocal_rank_cut_at_10():
    # 1/1 + 1/2 + 1/4 + 0 (rank 11) = 1.75, over 4 queries = 0.4375 -> 43.75 %
    assert map_at_10([1, 2, 4, 11]) == pytest.approx(43.75)
    assert map_at_10([10]) == pytest.approx(10.0) and map_at_10([11]) == 0.0


def test_not_retrieved_queries_count_with_rank_n_plus_one():
    # 4 candidates; the third query's item was not retrieved at all -> rank 5
    ranks = [1, 3, 4 + 1]
    m = retrieval_metrics(ranks, with_map=True)
    assert set(m) == {"R@1", "R@5", "R@10", "MdR", "MnR", "mAP@10"}
    assert m["R@1"] == pytest.approx(100 / 3)
    assert m["R@5"] == pytest.approx(100.0)  # rank 5 is still <= 5 with only 4 candidates ...
    assert recall_at(ranks, 4) == pytest.approx(200 / 3)  # ... but never within the candidate count
    assert m["MdR"] == 3.0 and m["MnR"] == pytest.approx(3.0)
    assert m["mAP@10"] == pytest.approx(100 * (1 + 1 / 3 + 1 / 5) / 3)


def test_retrieval_metrics_keys_and_edge_cases():
    assert set(retrieval_metrics([1])) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    empty = retrieval_metrics([])
    assert empty["R@1"] == 0.0 and math.isnan(empty["MdR"]) and math.isnan(empty["MnR"])
    with pytest.raises(ValueError):
        retrieval_metrics([0, 1])  # ranks are 1-based


# --------------------------------------------------------------------------- moments (TVR eval)
def test_temporal_iou_by_hand():
    assert temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert temporal_iou((0, 10), (0, 5)) == 0.5  # exactly 0.5, no rounding error
    assert temporal_iou((0, 4), (6, 9)) == 0.0
    assert temporal_iou((3, 3), (3, 3)) == 0.0


def test_moment_recalls_by_hand_at_iou_05_and_07():
    gt = [("A", 0.0, 10.0), ("B", 4.0, 8.0), ("C", 0.0, 5.0), ("D", 2.0, 6.0)]
    preds = [
        # q0: rank 1 is the right moment in the wrong video; rank 2 right video, IoU 0.8
        [("B", 0.0, 10.0, 0.9), ("A", 0.0, 8.0, 0.8)],
        # q1: right video, IoU exactly 0.5 (4..8 vs 4..12 -> 4/8) at rank 1
        [("B", 4.0, 12.0)],
        # q2: right video but a wrong moment (no overlap) at rank 1, right moment (IoU 1) at rank 6
        [("C", 6.0, 9.0)] + [("X", 0.0, 5.0)] * 4 + [("C", 0.0, 5.0)],
        # q3: nothing predicted
        [],
    ]
    r = moment_recalls(preds, gt, ks=(1, 5, 10, 100), ious=(0.5, 0.7))
    assert set(r) == {"0.5", "0.7"}
    # IoU 0.5: q0 hit at 2, q1 hit at 1 (IoU == 0.5 counts: >=), q2 hit at 6, q3 never
    assert r["0.5"] == pytest.approx({"R@1": 25.0, "R@5": 50.0, "R@10": 75.0, "R@100": 75.0})
    # IoU 0.7: q1's 0.5 no longer counts
    assert r["0.7"] == pytest.approx({"R@1": 0.0, "R@5": 25.0, "R@10": 50.0, "R@100": 50.0})


def test_moment_recalls_reads_at_most_100_predictions_and_checks_lengths():
    gt = [("A", 0.0, 2.0)]
    preds = [[("B", 0.0, 2.0)] * 100 + [("A", 0.0, 2.0)]]
    assert moment_recalls(preds, gt, ks=(100,), ious=(0.5,))["0.5"]["R@100"] == 0.0
    with pytest.raises(ValueError):
        moment_recalls([[]], gt * 2)


def test_moment_recalls_with_four_annotations_needs_two_to_agree():
    # DiDeMo-style ground truth (4 annotators): correct when IoU >= thd with at least two of them
    gt = [("V", [[0, 5], [0, 5], [5, 10], [10, 15]]), ("V", [[0, 5], [5, 10], [10, 15], [15, 20]])]
    preds = [[("V", 0.0, 5.0)], [("V", 0.0, 5.0)]]
    assert moment_recalls(preds, gt, ks=(1,), ious=(0.5,))["0.5"]["R@1"] == 50.0


def test_video_recalls_counts_distinct_videos():
    gt = ["A", "B", "C"]
    preds = [
        ["A", "B"],  # rank 1
        [("A", 0, 1), ("A", 2, 3), ("B", 0, 1)],  # moments: distinct videos A, B -> rank 2
        ["A", "B"],  # never
    ]
    r = video_recalls(preds, gt, ks=(1, 2, 5))
    assert r == pytest.approx({"R@1": 100 / 3, "R@2": 200 / 3, "R@5": 200 / 3})
