"""``/api/v1/hash-banks``: list the banks, import hashes into one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from backend.db import utcnow
from backend.deps import AnalystUser, PolicyDep, SessionDep
from backend.errors import ErrorBody, ValidationFailed
from backend.hashes import service
from backend.hashes.settings import get_hash_settings
from backend.users.service import audit

router = APIRouter(prefix="/api/v1/hash-banks", tags=["hashes"])


class BankRead(BaseModel):
    name: str
    label: str
    action: str
    queue_kind: str
    hashes: int
    distance: int
    state: str = Field(description="live (matches decide) or shadow (recorded, routed)")
    reason: str
    lower: float | None = None
    n_auto: int | None = None
    n_labelled: int | None = None


class BankedHash(BaseModel):
    hash: str = Field(min_length=64, max_length=64, description="PDQ, 64 hex digits")
    ref: str | None = Field(None, max_length=200)


class HashImport(BaseModel):
    label: str = Field(max_length=50)
    action: str | None = Field(None, max_length=10, description="decide | route (a new "
                                                                "bank: decide; else kept)")
    queue_kind: str | None = Field(None, max_length=64)
    hashes: list[BankedHash] = Field(max_length=100_000)


class HashImportRead(BaseModel):
    bank: str
    label: str
    received: int
    added: int
    already: int


@router.get("", response_model=list[BankRead])
def list_banks(session: SessionDep, user: AnalystUser) -> list[BankRead]:
    """Every bank with its hash count, distance and state."""
    return [BankRead(**b) for b in service.list_banks(session=session)]


@router.post("/{name}/hashes", response_model=HashImportRead, responses={
    422: {"model": ErrorBody, "description": "a bad hash, an unknown label, or a label "
                                             "other than the bank's; nothing was stored"}})
def import_hashes(name: Annotated[str, Path(min_length=1, max_length=100)],
                  body: HashImport, session: SessionDep, policy: PolicyDep,
                  user: AnalystUser) -> HashImportRead:
    """Add hashes to the bank ``name`` (created with the label if new); idempotent."""
    limit = get_hash_settings().max_import
    if len(body.hashes) > limit:
        raise ValidationFailed(f"an import holds at most {limit} hashes")
    lines = [h.hash + ("," + h.ref if h.ref else "") for h in body.hashes]
    parsed = service.parse_hash_lines(lines, limit=limit)
    r = service.import_hashes(session=session, bank=name, label=body.label, hashes=parsed,
                              policy=policy, now=utcnow(), action=body.action,
                              queue_kind=body.queue_kind)
    audit(session=session, user=user, action="hashes.import", target_type="hash_bank",
          target_id=name, details={"added": r.added, "already": r.already, "label": r.label})
    return HashImportRead(**r.__dict__)
