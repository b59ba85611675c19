from __future__ import annotations

import numpy as np
import pytest

from ml.similarity import decide_reuse

LABELS = {10: "ok", 11: "ok", 12: "fraud", 13: None}


def test_reuses_nearest_label_within_distance() -> None:
    decision = decide_reuse([10, 11, 12], [0.05, 0.2, 0.7], LABELS, reuse_distance=0.3)
    assert (decision.kind, decision.label, decision.neighbour_id) == ("reuse", "ok", 10)
    assert decision.distance == pytest.approx(0.05)
    assert [n.id for n in decision.neighbours] == [10, 11]


def test_disagreeing_neighbour_within_distance_is_a_conflict() -> None:
    decision = decide_reuse([10, 12, 11], [0.05, 0.2, 0.25], LABELS, reuse_distance=0.3)
    assert decision.kind == "conflict" and decision.label is None
    assert {n.label for n in decision.neighbours} == {"ok", "fraud"}


def test_nothing_within_distance_is_none() -> None:
    decision = decide_reuse([10, 12], [0.31, 0.5], LABELS, reuse_distance=0.3)
    assert (decision.kind, decision.label, decision.neighbours) == ("none", None, [])


def test_cut_off_is_inclusive() -> None:
    assert decide_reuse([10], [0.3], LABELS, reuse_distance=0.3).kind == "reuse"
    assert decide_reuse([10], [np.nextafter(0.3, 1)], LABELS, reuse_distance=0.3).kind == "none"


def test_padding_and_undecided_neighbours_are_skipped() -> None:
    decision = decide_reuse(
        np.array([13, 11, -1]),
        np.array([0.01, 0.1, np.inf], dtype=np.float32),
        LABELS,
        reuse_distance=0.3,
    )
    assert (decision.kind, decision.neighbour_id) == ("reuse", 11)


def test_labels_can_be_aligned_sequence_and_min_agreeing() -> None:
    decision = decide_reuse(
        [1, 2], [0.1, 0.2], ["adult", "adult"], reuse_distance=0.3, min_agreeing=2
    )
    assert (decision.kind, decision.label) == ("reuse", "adult")
    assert (
        decide_reuse(
            [1, 2], [0.1, 0.5], ["adult", "adult"], reuse_distance=0.3, min_agreeing=2
        ).kind
        == "none"
    )


def test_unsorted_neighbours_use_the_nearest() -> None:
    decision = decide_reuse([11, 10], [0.2, 0.1], LABELS, reuse_distance=0.3)
    assert (decision.neighbour_id, decision.distance) == (10, pytest.approx(0.1))
