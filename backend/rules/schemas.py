from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.limits import NoNulModel

#: Rule names are never all digits: ``/rules/{name_or_id}`` reads digits as an id.
NAME_PATTERN = r"^[A-Za-z0-9_.-]*[A-Za-z_.-][A-Za-z0-9_.-]*$"
Position = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]
Expression = Annotated[str, Field(
    min_length=1, max_length=10_000,
    description="a CEL condition on `item` (docs/rules.md); its cost is bounded "
                "(QUORUM_RULE_*: length, comprehension nesting, literal sizes, estimated steps)")]


class RuleBase(NoNulModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=5000)
    expression: Expression
    action: Literal["decide", "route", "tag"]
    label: str | None = Field(default=None, max_length=50)
    queue_kind: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]{0,63}$")
    priority: int | None = Field(default=None, ge=0, le=100)
    tag: str | None = Field(default=None, max_length=100)
    mode: Literal["draft", "shadow", "active", "off"] = Field(
        "draft", description="draft (never evaluated) → shadow (evaluated, never acts) → "
                             "active (live; only through POST …/promote after a dry run); "
                             "off")
    position: Position = 100

    @model_validator(mode="after")
    def _action_fields(self) -> RuleBase:
        if self.action == "decide" and not self.label:
            raise ValueError("a 'decide' rule needs a label")
        if self.action == "route" and not self.queue_kind:
            raise ValueError("a 'route' rule needs a queue_kind")
        if self.action == "tag" and not self.tag:
            raise ValueError("a 'tag' rule needs a tag")
        return self


class RuleCreate(RuleBase):
    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN,
                      description="letters, digits, `_ . -`; not only digits (those address "
                                  "a rule by id)")


class RuleUpdate(NoNulModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=5000)
    expression: Expression | None = None
    action: Literal["decide", "route", "tag"] | None = None
    label: str | None = Field(default=None, max_length=50)
    queue_kind: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]{0,63}$")
    priority: int | None = Field(default=None, ge=0, le=100)
    tag: str | None = Field(default=None, max_length=100)
    mode: Literal["draft", "shadow", "active", "off"] | None = Field(
        None, description="draft, shadow or off; active only through POST …/promote")
    position: Position | None = None


class RuleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    version: int
    position: int
    description: str | None
    expression: str
    action: str
    label: str | None
    queue_kind: str | None
    priority: int | None
    tag: str | None
    mode: str
    hits: int
    shadow_hits: int
    last_hit_at: datetime | None
    created_at: datetime
    updated_at: datetime
    warnings: list[str] = Field(default_factory=list, description=(
        "on create and update: what the save noticed but did not refuse (a metadata key no "
        "recent item has; a live rule moved to shadow by an edit)"))


class FieldPresence(BaseModel):
    field: str = Field(description="an item field the condition reads (metadata.KEY for a "
                                   "metadata key)")
    present_on: int = Field(description="scanned items that have it")


class SampleHit(BaseModel):
    item_id: int
    source: str
    external_id: str
    title: str | None
    label: str | None = Field(description="the item's current label (None: undecided)")
    is_human: bool = Field(description="whether that label is a person's")
    why: dict = Field(description="`parts`: each top-level operand of the condition's "
                                  "outermost &&/|| with its value; `fields`: each field it "
                                  "read with its value on this item")


class BacktestResult(BaseModel):
    run_id: int | None = Field(None, description="the stored run (GET …/runs/{run_id}); a "
                                                 "promotion names the dry run it rests on")
    kind: Literal["backtest", "dry_run"] = "backtest"
    rule: str
    version: int
    mode: str | None = Field(None, description="the rule's mode at that version")
    created_at: datetime | None = None
    items_scanned: int
    hits: int
    hit_rate: float
    with_human_verdict: int
    agree: int | None = Field(description="hits whose human verdict equals the rule's label")
    disagree: int | None
    precision: float | None = Field(description="agree / with_human_verdict; None if undefined")
    human_labels: dict[str, int] = Field(description="human verdicts of the hit items")
    current_labels: dict[str, int] = Field(
        default_factory=dict, description="current labels of the hit items, any source "
                                          "(`undecided`: none yet)")
    sample_item_ids: list[int]
    labelled: int = Field(0, description="hits with a human verdict: what the precision "
                                         "rests on")
    precision_lower: float | None = Field(None, description="lower end of the two-sided "
                                                            "interval on precision")
    precision_upper: float | None = None
    confidence: float | None = Field(None, description="the interval's level "
                                                       "(QUORUM_CALIBRATION_CONFIDENCE)")
    interval_method: str | None = Field(None, description="wilson or clopper-pearson "
                                                          "(QUORUM_CALIBRATION_BOUND_METHOD)")
    too_few_labels: bool = Field(False, description="labelled < QUORUM_RULE_MIN_LABELS")
    fields_read: list[FieldPresence] = Field(default_factory=list)
    samples: list[SampleHit] = Field(default_factory=list, description="hits with why "
                                                                       "they matched")
    warnings: list[str] = Field(default_factory=list, description="what to look at before "
                                "trusting the run (0 hits, a field no item has, too few "
                                "labels)")


class RunSummary(BaseModel):
    id: int
    kind: str
    version: int
    items_scanned: int
    hits: int
    created_at: datetime


class VersionHits(BaseModel):
    version: int
    mode: str | None = Field(description="the mode of that version")
    expression: str | None
    created_at: datetime | None
    hits: int = Field(description="live hits recorded by routing for this version")
    shadow_hits: int = Field(description="shadow hits recorded for this version")


class PromoteRequest(NoNulModel):
    model_config = ConfigDict(extra="forbid")

    run_id: int = Field(ge=1, le=2**31 - 1, description="the dry run of the rule's current "
                        "version that the promotion rests on")
