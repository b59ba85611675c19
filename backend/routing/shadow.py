"""How the shadow would have done: shadow outcomes against the people's verdicts."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.decisions.models import ItemStatus
from backend.routing.models import ShadowOutcome

COLUMNS = ["source", "band", "model_id", "n", "judged", "agreed", "agreement",
           "disagreed_items"]
#: how many disagreeing items a row names (the report links each to its item page)
SAMPLE_ITEMS = 10


def shadow_agreement(*, session: Session) -> pd.DataFrame:
    """Per source, band and model: shadow outcomes (``n``), how many items have a human
    verdict now (``judged``), how many of those agree with what the shadow would have
    decided (``agreed``), the share (``agreement``, None when nothing is judged) and up to
    ``SAMPLE_ITEMS`` judged items whose verdict differs, latest first (``disagreed_items``)."""
    rows = session.execute(
        select(ShadowOutcome.source, ShadowOutcome.band, ShadowOutcome.model_id,
               ShadowOutcome.label, ItemStatus.label, ItemStatus.is_human,
               ShadowOutcome.item_id)
        .join(ItemStatus, ItemStatus.item_id == ShadowOutcome.item_id, isouter=True)
        .order_by(ShadowOutcome.id.desc())).all()
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows, columns=["source", "band", "model_id", "shadow_label",
                                     "human_label", "is_human", "item_id"])
    df["model_id"] = df["model_id"].fillna("")
    df["judged"] = df["is_human"].fillna(False).astype(bool)
    df["agreed"] = df["judged"] & (df["shadow_label"] == df["human_label"])
    out = df.groupby(["source", "band", "model_id"], as_index=False).agg(
        n=("shadow_label", "size"), judged=("judged", "sum"), agreed=("agreed", "sum"))
    out["agreement"] = [a / j if j else None for a, j in zip(out["agreed"], out["judged"],
                                                             strict=True)]
    wrong = df[df["judged"] & ~df["agreed"]]
    samples = {key: list(dict.fromkeys(int(i) for i in g["item_id"]))[:SAMPLE_ITEMS]
               for key, g in wrong.groupby(["source", "band", "model_id"])}
    out["disagreed_items"] = [samples.get((s, b, m), []) for s, b, m in zip(
        out["source"], out["band"], out["model_id"], strict=True)]
    return out[COLUMNS]
