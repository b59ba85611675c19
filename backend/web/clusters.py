"""Near-duplicate clusters of a queue's pending items, for review in one go.

Items are grouped by the **similarity index's vectors** where they have one (the same
embeddings the reuse decision uses): two items are linked when their cosine distance is at
most ``max_distance``, and a cluster is a connected component of that graph
(``scipy.sparse.csgraph``). Items without a vector (ML off, not embedded yet) fall back to
title words (Jaccard ≥ ``min_similarity`` against a cluster's first item), so re-posts with
"NEW" or "(copy)" still group.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from backend.items.models import Item, ItemEmbedding
from backend.queues.models import Queue, Task, TaskSkip
from backend.users.models import User

_WORD = re.compile(r"[a-z0-9]+")


def title_tokens(title: str) -> frozenset[str]:
    return frozenset(_WORD.findall((title or "").lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


@dataclass
class Cluster:
    key: str
    tasks: list[tuple[Task, Item]]
    #: "embedding" (the similarity index's vectors) or "title words"
    method: str = "title words"
    #: per task id: distance to the cluster's first item (embedding clusters only)
    distances: dict[int, float] = field(default_factory=dict)


def _vectors(session: Session, item_ids: list[int]) -> tuple[list[int], np.ndarray | None]:
    """Vectors of the most common encoder among these items (one encoder per comparison)."""
    if not item_ids:
        return [], None
    rows = session.execute(select(ItemEmbedding.item_id, ItemEmbedding.encoder_id,
                                  ItemEmbedding.dim, ItemEmbedding.vector)
                           .where(ItemEmbedding.item_id.in_(item_ids))).all()
    if not rows:
        return [], None
    encoder = Counter(r.encoder_id for r in rows).most_common(1)[0][0]
    mine = [r for r in rows if r.encoder_id == encoder]
    ids = [r.item_id for r in mine]
    mat = np.stack([np.frombuffer(r.vector, dtype=np.float32, count=r.dim) for r in mine])
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    mat = mat / np.where(norms == 0, 1, norms)
    return ids, mat


def near_duplicate_clusters(*, session: Session, queue: Queue, user: User, limit: int = 2000,
                            max_distance: float = 0.08, min_similarity: float = 0.6,
                            max_clusters: int = 20) -> list[Cluster]:
    """Pending items in ``queue`` that look alike (two or more per cluster), largest first.
    Tasks this user skipped are left out."""
    rows = session.execute(
        select(Task, Item).join(Item, Item.id == Task.item_id)
        .where(Task.queue_id == queue.id, Task.state == "pending", Task.task_type == "item")
        .where(~exists().where(and_(TaskSkip.task_id == Task.id, TaskSkip.user_id == user.id)))
        .order_by(Task.id).limit(limit)).all()
    by_item = {item.id: (task, item) for task, item in rows}
    found: list[Cluster] = []
    ids, mat = _vectors(session, list(by_item))
    clustered: set[int] = set()
    if mat is not None and len(ids) > 1:
        sims = mat @ mat.T
        adj = csr_matrix(sims >= 1.0 - max_distance)
        n, comp = connected_components(adj, directed=False)
        members: dict[int, list[int]] = {}
        for pos, c in enumerate(comp):
            members.setdefault(int(c), []).append(pos)
        for positions in members.values():
            if len(positions) < 2:
                continue
            positions.sort(key=lambda p: by_item[ids[p]][0].id)
            head = positions[0]
            tasks = [by_item[ids[p]] for p in positions]
            found.append(Cluster(
                key=tasks[0][1].title or f"item {tasks[0][1].id}", tasks=tasks,
                method="embedding",
                distances={by_item[ids[p]][0].id: max(0.0, float(1.0 - sims[head, p]))
                           for p in positions}))
            clustered.update(ids[p] for p in positions)
    # the rest by title words
    groups: list[tuple[frozenset[str], list[tuple[Task, Item]]]] = []
    by_token: dict[str, list[int]] = {}
    for task, item in rows:
        if item.id in clustered:
            continue
        tokens = title_tokens(item.title)
        candidates = sorted({c for tok in tokens for c in by_token.get(tok, ())})
        home = next((c for c in candidates if jaccard(tokens, groups[c][0]) >= min_similarity),
                    None)
        if home is None:
            home = len(groups)
            groups.append((tokens, []))
            for tok in tokens:
                by_token.setdefault(tok, []).append(home)
        groups[home][1].append((task, item))
    found += [Cluster(key=m[0][1].title, tasks=m) for _, m in groups if len(m) > 1]
    found.sort(key=lambda c: (-len(c.tasks), c.tasks[0][0].id))
    return found[:max_clusters]
