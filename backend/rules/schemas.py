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
    mode: Literal["active", "shadow", "off"] = "active"
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
    mode: Literal["active", "shadow", "off"] | None = None
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


class BacktestResult(BaseModel):
    rule: str
    version: int
    items_scanned: int
    hits: int
    hit_rate: float
    with_human_verdict: int
    agree: int | None = Field(description="hits whose human verdict equals the rule's label")
    disagree: int | None
    precision: float | None = Field(description="agree / with_human_verdict; None if undefined")
    human_labels: dict[str, int] = Field(description="human verdicts of the hit items")
    sample_item_ids: list[int]
