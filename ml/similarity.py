"""The reuse decision: take a past verdict for a new item only when its neighbours agree.

"Similar" is not "same decision": the nearest decided item within ``reuse_distance``
gives its label only if every other decided neighbour within that distance (among the
``k`` the index returned) has the same label. A disagreement is a ``"conflict"`` and
goes to a human. The cut-off is inclusive: ``distance <= reuse_distance`` counts as
within, matching the calibration convention "pairs at distance ≤ T are called similar".

Distances are cosine distances (``1 - dot`` on unit vectors), as :mod:`ml.index`
returns them; an id of ``-1`` is index padding and is skipped, and so is a neighbour
whose label is ``None`` (not decided yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Neighbour", "ReuseDecision", "decide_reuse", "labelled_neighbour_pairs"]

ReuseKind = Literal["reuse", "conflict", "none"]


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One decided neighbour within the reuse distance."""

    id: int
    distance: float
    label: str


@dataclass(frozen=True, slots=True)
class ReuseDecision:
    """``kind``: ``"reuse"`` (take ``label`` from ``neighbour_id`` at ``distance``),
    ``"conflict"`` (neighbours within the distance disagree) or ``"none"`` (nothing close).
    ``neighbours`` lists every decided neighbour within the distance, nearest first."""

    kind: ReuseKind
    label: str | None = None
    neighbour_id: int | None = None
    distance: float | None = None
    neighbours: list[Neighbour] = field(default_factory=list)


def decide_reuse(
    neighbour_ids: Sequence[int] | np.ndarray,
    distances: Sequence[float] | np.ndarray,
    neighbour_labels: Mapping[int, str | None] | Sequence[str | None],
    *,
    reuse_distance: float,
    min_agreeing: int = 1,
) -> ReuseDecision:
    """Decide for one item from its ``k`` neighbours (one row of ``VectorIndex.search``).

    ``neighbour_labels`` is either a mapping ``id -> label`` or a sequence aligned with
    ``neighbour_ids``. ``min_agreeing`` is how many decided neighbours within the
    distance must agree (all of them, always) before the label is reused; fewer gives
    ``"none"``.
    """
    if min_agreeing < 1:
        raise ValueError("min_agreeing must be >= 1")
    ids = np.asarray(neighbour_ids, dtype=np.int64).ravel()
    dist = np.asarray(distances, dtype=np.float64).ravel()
    if ids.shape != dist.shape:
        raise ValueError(f"ids and distances differ in shape: {ids.shape} vs {dist.shape}")
    if isinstance(neighbour_labels, Mapping):
        labels = [neighbour_labels.get(int(i)) for i in ids]
    else:
        labels = list(neighbour_labels)
        if len(labels) != len(ids):
            raise ValueError("neighbour_labels must align with neighbour_ids")

    within = [
        Neighbour(id=int(i), distance=float(d), label=str(label))
        for i, d, label in zip(ids, dist, labels, strict=True)
        if i >= 0 and label is not None and np.isfinite(d) and d <= reuse_distance
    ]
    within.sort(key=lambda n: (n.distance, n.id))
    if not within:
        return ReuseDecision(kind="none")
    nearest = within[0]
    if any(n.label != nearest.label for n in within):
        return ReuseDecision(
            kind="conflict",
            label=None,
            neighbour_id=nearest.id,
            distance=nearest.distance,
            neighbours=within,
        )
    if len(within) < min_agreeing:
        return ReuseDecision(kind="none", neighbours=within)
    return ReuseDecision(
        kind="reuse",
        label=nearest.label,
        neighbour_id=nearest.id,
        distance=nearest.distance,
        neighbours=within,
    )


def labelled_neighbour_pairs(
    item_ids: Sequence[int] | np.ndarray,
    neighbour_ids: np.ndarray,
    distances: np.ndarray,
    labels: Mapping[int, str],
) -> pd.DataFrame:
    """History answers the reuse question: each labelled item and its nearest *labelled*
    neighbour, and whether they got the same label.

    ``item_ids``: the anchors (labelled items); ``neighbour_ids`` / ``distances``: their
    ``k`` nearest rows from ``VectorIndex.search`` (the anchor itself, padding ``-1``
    and neighbours without a label in ``labels`` are skipped); ``labels``: ``id ->
    label`` of every labelled item. The reuse decision takes the nearest labelled
    neighbour's verdict when it is within the distance, so "precision at T" is the share
    of these pairs at ``distance <= T`` whose labels agree (without the conflict check,
    which only ever removes reuses: an estimate on the safe side).

    Returns one row per unordered pair (a mutual nearest pair counts once): ``item_id``,
    ``other_item_id``, ``distance``, ``same`` (bool), ``reused_label`` (the neighbour's
    label: what reuse would give the anchor); sorted by distance.
    """
    import pandas as pd

    rows: dict[tuple[int, int], tuple[int, int, float, bool, str]] = {}
    ids = np.asarray(neighbour_ids, dtype=np.int64)
    dist = np.asarray(distances, dtype=np.float64)
    for a, row_ids, row_d in zip(np.asarray(item_ids, dtype=np.int64), ids, dist, strict=True):
        a = int(a)
        if a not in labels:
            continue
        for b, d in zip(row_ids.tolist(), row_d.tolist(), strict=True):
            if b < 0 or b == a or b not in labels or not np.isfinite(d):
                continue
            key = (min(a, b), max(a, b))
            if key not in rows:
                rows[key] = (a, int(b), max(float(d), 0.0), labels[a] == labels[b],
                             labels[b])
            break
    frame = pd.DataFrame(list(rows.values()),
                         columns=["item_id", "other_item_id", "distance", "same",
                                  "reused_label"])
    frame["same"] = frame["same"].astype(bool)
    return frame.sort_values(["distance", "item_id"], kind="stable").reset_index(drop=True)
