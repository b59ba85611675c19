"""Rule limits (``QUORUM_RULE_*``): what a condition may cost, at save and per item."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RuleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_RULE_", extra="ignore")

    #: Longest condition accepted, in characters.
    max_expression_chars: int = 4000
    #: Deepest nesting of comprehension macros (``all``, ``exists``, ``exists_one``,
    #: ``map``, ``filter``) in a condition.
    max_comprehension_depth: int = 2
    #: Most elements in one list or map literal of a condition.
    max_literal_elements: int = 100
    #: Most estimated evaluation steps of a condition (see docs/rules.md: a step is one
    #: token of the condition, multiplied by the iterations of the comprehensions around it).
    max_cost: int = 100_000
    #: Iterations assumed for a comprehension over item data (``item.tags``,
    #: ``item.metadata.x``) when estimating the cost.
    assumed_data_elements: int = 100
    #: Time one rule may take on one item, in milliseconds. A rule over it is switched off
    #: (mode ``off``, a new version, an audit entry) and skipped from the next item on.
    item_budget_ms: float = 50.0
    #: Latest items a dry run evaluates a rule on (the evidence shown before promotion).
    dry_run_items: int = Field(5000, ge=1, le=1_000_000)
    #: A rule is promoted to live only on a dry run of its current version at most this
    #: many minutes old.
    dry_run_max_age_minutes: float = Field(60.0, gt=0)
    #: A backtest's or dry run's precision resting on fewer human-labelled hits than this is
    #: shown as "too few labels" (the interval is still given).
    min_labels: int = Field(30, ge=1)


@lru_cache
def get_rule_settings() -> RuleSettings:
    return RuleSettings()
