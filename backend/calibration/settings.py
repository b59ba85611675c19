"""Calibration settings (``QUORUM_CALIBRATION_*``): targets, confidence, objective, pairs."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CalibrationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_CALIBRATION_", extra="ignore")

    #: Precision the deciding bands (``auto`` / ``high`` cut-offs) must reach, as a
    #: lower confidence bound, to decide automatically.
    target_precision: float = Field(0.95, gt=0, le=1)
    #: Precision the routing bands (``good`` / ``middle`` cut-offs) must reach: the share of
    #: a band's queue that really is the label.
    routing_target_precision: float = Field(0.80, gt=0, le=1)
    #: Confidence level of the one-sided lower bound used to choose thresholds (and of the
    #: two-sided intervals shown in what-if and spot checks).
    confidence: float = Field(0.95, gt=0, lt=1)
    #: ``wilson`` or ``clopper-pearson``.
    bound_method: Literal["wilson", "clopper-pearson"] = "wilson"
    #: How the deciding cut-off is chosen: ``max_automation`` (most items decided subject
    #: to the precision bound), ``f_beta`` or ``cost`` (both keep the precision bound).
    objective: Literal["max_automation", "f_beta", "cost"] = "max_automation"
    #: Beta of ``f_beta`` (> 1 weighs recall more).
    beta: float = Field(1.0, gt=0)
    #: Cost matrix of ``objective=cost``, per item: a wrong automatic decision, a positive
    #: left to people, and one item routed to people.
    cost_false_positive: float = 1.0
    cost_false_negative: float = 0.0
    cost_routed: float = 0.01
    #: Precision the similarity reuse distance must reach (share of reused pairs that
    #: people call "same decision"), as a lower confidence bound.
    reuse_target_precision: float = Field(0.95, gt=0, le=1)
    #: Folds of the out-of-fold refit when the active classifier was trained on the
    #: labelled set (calibrating on training data would be optimistic).
    folds: int = Field(5, ge=2)
    #: Pair tasks sampled by ``quorum calibrate pairs`` (and the demo).
    pair_sample_size: int = Field(200, ge=1)
    #: Queue kind of pair tasks, and who works them: ``crowd`` (``quorum crowd push`` makes
    #: a pair pool of the queue) or ``moderators`` (answered through the API).
    pair_queue_kind: str = "PAIRS"
    pair_audience: Literal["crowd", "moderators"] = "crowd"
    #: Answers wanted per pair (overlap): a moderator-answered pair task is done after this
    #: many; a crowd pair pool starts every pair at this many (dynamic overlap adds more).
    pair_overlap: int = Field(3, ge=1)
    #: Neighbours looked up per item when sampling pairs.
    pair_neighbours: int = Field(10, ge=2)
    #: Pairs beyond the current reuse distance are sampled up to this multiple of it, so one
    #: calibration round can widen the reuse distance at most that much (explore gradually).
    pair_max_distance_factor: float = Field(3.0, ge=1.0)
    #: A reuse distance above this is never proposed, whatever the pairs say.
    max_reuse_distance: float = Field(0.3, gt=0, le=2)
    #: Crowd cost per answer and answers per item, for the what-if's crowd cost.
    crowd_cost_per_item: float = Field(0.01, ge=0)
    crowd_overlap: int = Field(3, ge=1)
    #: Price of one moderator decision (their time at their wage), for the people's work a
    #: threshold sends to moderators or saves in the threshold report and the what-if.
    moderator_cost_per_item: float = Field(0.10, ge=0)


@lru_cache
def get_calibration_settings() -> CalibrationSettings:
    return CalibrationSettings()
