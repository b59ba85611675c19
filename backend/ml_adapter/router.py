from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from backend.calibration import thresholds
from backend.db import utcnow
from backend.deps import AnalystUser, CurrentUser, PolicyDep, SessionDep
from backend.items.service import get_item
from backend.limits import IdPath
from backend.ml_adapter.service import neighbours_for_item
from backend.users.service import audit

router = APIRouter(prefix="/api/v1", tags=["ml"])


class Neighbour(BaseModel):
    item_id: int
    distance: float
    label: str
    title: str
    image: str | None


class BandStateRead(BaseModel):
    """Whether a deciding band (or the reuse distance) decides: ``live`` (backed at its
    target), ``shadow`` (recorded, routed to people) or ``off``; the bound behind it."""

    key: str
    label: str | None
    band: str
    value: float | None
    state: str
    reason: str
    lower: float | None
    precision: float | None
    n_auto: int | None
    n_labelled: int | None
    target: float | None
    run_id: int | None
    bound_to: str | None


class ThresholdSetRead(BaseModel):
    version: int
    state: str
    bands: dict[str, Any]
    reuse_distance: float | None
    auto_decide: list[str]
    calibration_run_id: int | None
    note: str | None
    model_id: str | None
    encoder_id: str | None
    band_states: list[BandStateRead]
    hash_distances: list[BandStateRead] = Field(
        default_factory=list,
        description="the hash banks' distances (key bank:<name>) and the PDQ image reuse "
                    "distance (pdq_reuse), each live / shadow / off with the bound behind "
                    "it; they are not versioned with the sets, so only the active set "
                    "lists them")


def ts_read(ts: Any, policy: Any, *, session: Any = None) -> ThresholdSetRead:
    """The set as the API shows it; with ``session`` and the set active, the hash
    distances too (``backend.hashes.service.hash_states``)."""
    hashed: list[BandStateRead] = []
    if session is not None and ts.state == "active":
        from backend.hashes.service import hash_states

        hashed = [BandStateRead(**s.to_dict()) for s in hash_states(session=session)]
    return ThresholdSetRead(version=ts.version, state=ts.state, bands=ts.bands,
                            reuse_distance=ts.reuse_distance, auto_decide=ts.auto_decide,
                            calibration_run_id=ts.calibration_run_id, note=ts.note,
                            model_id=ts.model_id, encoder_id=ts.encoder_id,
                            band_states=[BandStateRead(**s.to_dict()) for s in
                                         thresholds.band_states(ts, policy=policy)],
                            hash_distances=hashed)


@router.get("/items/{item_id}/neighbours", response_model=list[Neighbour])
def item_neighbours(item_id: IdPath, session: SessionDep, user: CurrentUser,
                    k: int = Query(5, ge=1, le=50)) -> list[Neighbour]:
    """The item's nearest past human verdicts, with their cosine distances."""
    get_item(session=session, item_id=item_id)
    return [Neighbour(**n) for n in neighbours_for_item(session=session, item_id=item_id, k=k)]


@router.get("/thresholds", response_model=list[ThresholdSetRead])
def list_thresholds(session: SessionDep, policy: PolicyDep,
                    user: AnalystUser) -> list[ThresholdSetRead]:
    thresholds.active_threshold_set(session=session, policy=policy)
    return [ts_read(t, policy, session=session)
            for t in thresholds.list_sets(session=session)]


class ThresholdSetEdit(BaseModel):
    """Changes to a set; what is left out stays as in the source set."""

    cuts: dict[str, float] = Field(default_factory=dict,
                                   description='{"<label>.<cut>": value}, e.g. {"ok.auto": 0.99}')
    reuse_distance: float | None = Field(None, ge=0, le=2)
    reuse_off: bool = Field(False, description="switch similarity reuse off")
    auto_decide: list[str] | None = None
    note: str | None = Field(None, max_length=500)


@router.post("/thresholds/{version}/edit", response_model=ThresholdSetRead, status_code=201)
def edit_thresholds(version: int, body: ThresholdSetEdit, session: SessionDep,
                    policy: PolicyDep, user: AnalystUser) -> ThresholdSetRead:
    """Propose a new set edited from ``version`` (validated, audited). A changed cut-off
    stays backed only where the calibration curve behind it backs the new value."""
    from backend.calibration.editing import edit_set

    thresholds.active_threshold_set(session=session, policy=policy)
    extra: dict[str, Any] = {}
    if body.reuse_off:
        extra["reuse_distance"] = None
    elif body.reuse_distance is not None:
        extra["reuse_distance"] = body.reuse_distance
    ts = edit_set(session=session, policy=policy, version=version, cuts=body.cuts,
                  auto_decide=body.auto_decide, note=body.note, user_id=user.id, **extra)
    audit(session=session, user=user, action="thresholds.edit", target_type="threshold_set",
          target_id=ts.version, details={"from": version, **body.model_dump(exclude_none=True)})
    return ts_read(ts, policy, session=session)


@router.post("/thresholds/{version}/apply", response_model=ThresholdSetRead)
def apply_thresholds(version: IdPath, session: SessionDep, policy: PolicyDep,
                     user: AnalystUser) -> ThresholdSetRead:
    """Make a proposed (or earlier) threshold set active; routing uses it from the next item."""
    ts, _ = thresholds.apply_set(session=session, policy=policy, version=version, user=user,
                                 via="api", now=utcnow())
    return ts_read(ts, policy, session=session)
