from __future__ import annotations

import math
import unicodedata
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from backend.limits import NoNulModel, check_metadata


class ItemCreate(NoNulModel):
    """One item to moderate. ``(source, external_id)`` identifies it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source: str = Field(min_length=1, max_length=100)
    external_id: str = Field(min_length=1, max_length=200)
    title: str = Field(default="", max_length=2000)
    description: str = Field(default="", max_length=100_000)
    image: str | None = Field(default=None, max_length=4000)
    url: str | None = Field(default=None, max_length=4000)
    price: float | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    seller_id: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=200)
    gmv: float | None = Field(default=None, ge=0)
    exposure: float | None = Field(default=None, ge=0)
    is_new: bool = False
    is_golden: bool = False
    golden_label: str | None = Field(default=None, max_length=50)
    metadata: dict[str, Any] = Field(default_factory=dict, description=(
        "free JSON: at most QUORUM_LIMIT_MAX_METADATA_BYTES as JSON, "
        "QUORUM_LIMIT_MAX_METADATA_DEPTH levels, QUORUM_LIMIT_MAX_METADATA_KEYS entries a "
        "level; finite numbers only, no NUL characters"))

    @field_validator("external_id", "seller_id", mode="before")
    @classmethod
    def _ids_as_text(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return v

    @field_validator("source", "external_id")
    @classmethod
    def _nfc(cls, v: str) -> str:
        """One spelling per key: ``café`` typed precomposed or as ``e`` + combining accent
        is one item (Unicode NFC, before deduplication)."""
        return unicodedata.normalize("NFC", v)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_metadata(v)

    @field_validator("price", "gmv", "exposure")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("url", "image")
    @classmethod
    def _web_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        """``url`` is an absolute http(s) URL; ``image`` is one too, or a file path under
        the data directory. Other schemes (``javascript:``, ``data:``, ``file:``) are
        refused: moderators open these links, and images are fetched by Quorum."""
        if not v:
            return v
        try:
            parts = urlsplit(v)
        except ValueError as exc:
            raise ValueError("is not a valid URL") from exc
        is_url = bool(parts.scheme) or info.field_name == "url" or v.startswith("//")
        if is_url and (parts.scheme.lower() not in ("http", "https") or not parts.hostname):
            alt = " or a file path under the data directory" if info.field_name == "image" \
                else ""
            raise ValueError(f"must be an http:// or https:// URL with a host{alt}, "
                             f"not {v[:60]!r}")
        return v

    @field_validator("currency")
    @classmethod
    def _upper(cls, v: str | None) -> str | None:
        return v.upper() if v else v

    @model_validator(mode="after")
    def _golden(self) -> ItemCreate:
        if self.is_golden and not self.golden_label:
            raise ValueError("a golden item needs its known golden_label")
        if self.golden_label and not self.is_golden:
            self.is_golden = True
        return self


class RowError(BaseModel):
    row: int = Field(description="1-based position of the row in the batch or file")
    field: str | None
    message: str


class IngestResult(BaseModel):
    received: int
    created: int
    updated: int
    unchanged: int
    rejected: int
    stored: bool = Field(description="False when the batch was refused as a whole")
    errors: list[RowError] = Field(default_factory=list)
    item_ids: list[int] = Field(default_factory=list,
                                description="ids in row order (0 if rejected)")


class ItemBatch(BaseModel):
    items: list[dict[str, Any]]


class DecisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    label: str
    source: str
    is_human: bool
    rule_id: int | None
    rule_version: int | None
    model_id: str | None
    threshold_set_version: int | None
    similar_item_id: int | None
    distance: float | None
    user_id: int | None
    task_id: int | None
    crowd_pool_id: int | None
    aggregation_method: str | None
    confidence: float | None
    comment: str | None
    details: dict[str, Any] | None
    supersedes_id: int | None
    created_at: datetime


class StatusRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    state: str
    label: str | None
    source: str | None
    is_human: bool
    event_id: int | None
    queue_kind: str | None
    decided_at: datetime | None


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    source: str
    external_id: str
    title: str
    description: str
    image: str | None
    url: str | None
    price: float | None
    currency: str | None
    seller_id: str | None
    category: str | None
    gmv: float | None
    exposure: float | None
    is_new: bool
    is_golden: bool
    safety_score: float | None
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("metadata_", "metadata"))
    tags: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_names(cls, v: Any) -> Any:
        return [getattr(t, "tag", t) for t in v or []]


class ItemImageRead(BaseModel):
    """What the embed stage made of the item's image (``backend/media/images.py``)."""

    model_config = ConfigDict(from_attributes=True)

    ref: str = Field(description="the image reference it was for (URL or file path)")
    state: str = Field(description="fetched (downloaded by URL), local (read from a file) "
                                   "or failed (not loaded: the item was embedded and routed "
                                   "on its text)")
    reason: str | None = Field(description="why it failed, in a sentence")
    content_type: str | None
    size: int | None = Field(description="bytes")
    pdq_hash: str | None = Field(description="PDQ perceptual hash, 64 hex digits")
    pdq_quality: int | None
    fetched_at: datetime


class ItemDetail(ItemRead):
    status: StatusRead | None
    history: list[DecisionRead]
    image_fetch: ItemImageRead | None = Field(
        default=None, description="set once the item's image went through the embed stage")


class AutomationReport(BaseModel):
    """What routing did with a batch's new items: how many each automatic source decided
    (and with which label), how many went to which queue, how many a stage in shadow would
    have decided. Without ``wait`` routing has not run yet: only ``routing`` is counted."""

    complete: bool = Field(description="True when routing ran inside the request (wait=true): "
                                       "every count is final; False: only `routing` is known")
    routing: int = Field(description="new items handed to routing")
    decided: dict[str, int] = Field(default_factory=dict,
                                    description="automatic decisions by source (rule, hash, "
                                                "similarity, classifier)")
    labels: dict[str, dict[str, int]] = Field(default_factory=dict,
                                              description="per source, decisions per label")
    queued: dict[str, int] = Field(default_factory=dict,
                                   description="items sent to people, by queue kind")
    shadow: dict[str, int] = Field(default_factory=dict,
                                   description="by source: decisions not taken because the "
                                               "threshold runs in shadow (the item went to "
                                               "people)")
    spot_checks: int = Field(0, description="automatic decisions also queued for a spot "
                                            "check")

    @classmethod
    def of(cls, summary: Any, *, routing: int) -> AutomationReport:
        """From a ``routing.pipeline.RoutingSummary`` (None: routing is queued)."""
        if summary is None:
            return cls(complete=False, routing=routing)
        labels: dict[str, dict[str, int]] = {}
        for key, n in sorted(summary.labels.items()):
            source, _, label = key.partition(":")
            labels.setdefault(source, {})[label] = n
        return cls(complete=True, routing=routing, decided=dict(sorted(summary.decided.items())),
                   labels=labels, queued=dict(sorted(summary.queued.items())),
                   shadow=dict(sorted(summary.shadow_outcomes.items())),
                   spot_checks=summary.spot_checks)

    def lines(self) -> list[str]:
        """The report in sentences (the CLI prints them)."""
        if not self.complete:
            return [f"{self.routing} item(s) received; routing is queued"]
        decided = sum(self.decided.values())
        out = [f"decided automatically: {decided} of {self.routing}" + (": " + "; ".join(
            f"{src} {n} (" + ", ".join(f"{lab} {k}" for lab, k in self.labels.get(src, {})
                                      .items()) + ")" for src, n in self.decided.items())
            if decided else "")]
        if self.queued:
            out.append("to people: " + ", ".join(f"{k} {v}" for k, v in self.queued.items()))
        if self.shadow:
            out.append("in shadow (would have decided, went to people): " + ", ".join(
                f"{k} {v}" for k, v in self.shadow.items()))
        if self.spot_checks:
            out.append(f"spot checks: {self.spot_checks}")
        return out


class IngestAccepted(IngestResult):
    """``POST /api/v1/items``: what was stored, and where each item stands now."""

    states: list[str | None] = Field(
        default_factory=list,
        description="each row's item state in row order: received (routing queued), queued "
                    "(waiting for people), decided; null if rejected")
    routed: bool = Field(description="True when routing finished inside the request "
                                     "(wait=true); False when it was queued")
    automation: AutomationReport | None = Field(
        None, description="the batch's automation report (full with wait=true)")
