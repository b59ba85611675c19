"""Toloka objects Quorum creates, built with toloka-kit: client, project, pool, training, tasks.

Two task kinds share the machinery:

* ``"label"`` — input ``item_id`` (string), ``title``, ``description``, ``image``
  (url), ``price``, ``link`` (url); output ``label`` among the policy keys plus
  ``not_found`` ("task error / page not found").
* ``"pair"`` — input ``item_id`` (the pair key ``"<a>|<b>"``, `crowd.pairs.pair_key`),
  ``item_a``, ``item_b`` (item cards as JSON); output ``same_decision`` ``yes`` / ``no``
  (similarity calibration).

Every object carries ``metadata={"quorum_key": [key]}`` so `crowd.push` can find
what an interrupted run already created.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pandas as pd

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # toloka-kit imports pkg_resources
    import toloka.client as tc
    from toloka.client import actions, collectors, conditions
    from toloka.client.primitives.retry import STATUSES_TO_RETRY, TolokaRetry
    from toloka.client.project import field_spec as fs
    from toloka.client.project import template_builder as tb
    from toloka.client.project import view_spec as vs
    from toloka.client.project.task_spec import TaskSpec

from crowd.config import CrowdConfig
from crowd.pairs import PAIR_ANSWERS

TaskKind = Literal["label", "pair"]
NOT_FOUND = "not_found"
MARKER = "quorum_key"
ITEM_FIELDS = ("title", "description", "image", "price", "link")
#: The comment of the pool rule's restriction after skipped suites: a pause, not a
#: judgement of the worker's answers (review does not reject them for it).
SKIPPED_COMMENT = "skipped suites"


def make_client(
    *,
    url: str,
    token: str = "emulator-token",
    retries: int = 5,
    timeout: float = 10.0,
    backoff: float = 0.05,
    retry_quotas: str | list[str] | None = TolokaRetry.Unit.MIN,
) -> tc.TolokaClient:
    """A `TolokaClient` pointed at ``url`` (the emulator or Toloka) retrying 408/429/5xx and
    time-outs ``retries`` times with exponential ``backoff`` seconds.

    The retries are toloka-kit's own (`TolokaRetry`, what ``TolokaClient(retries=...,
    retry_quotas=...)`` builds, over urllib3's ``Retry``), given through
    ``retryer_factory`` only to set the backoff (toloka-kit's default factor of 2 s is
    for scripts): a 429 waits its ``Retry-After`` (else the backoff, or a minute when
    the minute quota named in Toloka's body is in ``retry_quotas``); an hour or day quota
    is not waited for unless listed. Out of retries, toloka-kit raises
    ``TooManyRequestsApiError``, which the CLI turns into a sentence."""

    def retryer() -> TolokaRetry:
        return TolokaRetry(
            retry_quotas=retry_quotas,
            total=retries,
            status_forcelist=list(STATUSES_TO_RETRY),
            allowed_methods=["HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST", "PATCH"],
            backoff_factor=backoff,
        )

    return tc.TolokaClient(
        token, url=url, timeout=timeout, retryer_factory=retryer, retry_quotas=None
    )


def labels_for(*, policy: Sequence[Mapping[str, str]], kind: TaskKind = "label") -> list[str]:
    """Allowed answers: the policy keys plus ``not_found`` (labels), or yes/no (pairs)."""
    if kind == "pair":
        return list(PAIR_ANSWERS)
    keys = [str(p["key"]) for p in policy]
    return keys + ([NOT_FOUND] if NOT_FOUND not in keys else [])


def output_field(kind: TaskKind) -> str:
    return "same_decision" if kind == "pair" else "label"


def _card(prefix: Literal["", "item_a.", "item_b."]) -> list[Any]:
    def data(name: str) -> Any:
        return tb.InputData(prefix + name)

    return [
        tb.TextViewV1(data("title"), label="Title"),
        tb.TextViewV1(data("description"), label="Description"),
        tb.helpers.IfHelperV1(
            tb.conditions.EmptyConditionV1(data("image")),
            else_=tb.ImageViewV1(data("image"), ratio=[1, 1], rotatable=True),
        ),
        tb.TextViewV1(data("price"), label="Price"),
        tb.LinkViewV1(data("link"), content="Open the page"),
    ]


def task_spec(*, policy: Sequence[Mapping[str, str]], kind: TaskKind = "label") -> TaskSpec:
    titles = {str(p["key"]): str(p.get("title", p["key"])) for p in policy}
    titles.setdefault(NOT_FOUND, "Task error / page not found")
    titles.update(yes="Same decision", no="Different decisions")
    answers = labels_for(policy=policy, kind=kind)
    field = output_field(kind)
    radio = tb.RadioGroupFieldV1(
        tb.OutputData(field),
        [tb.GroupFieldOption(a, titles.get(a, a)) for a in answers],
        validation=tb.RequiredConditionV1(),
    )
    if kind == "pair":
        inputs: dict[str, Any] = {
            "item_id": fs.StringSpec(),
            "item_a": fs.JsonSpec(),
            "item_b": fs.JsonSpec(),
        }
        body: list[Any] = [
            tb.ListViewV1(_card("item_a."), label="Item A"),
            tb.ListViewV1(_card("item_b."), label="Item B"),
            radio,
        ]
    else:
        inputs = {
            "item_id": fs.StringSpec(),
            "title": fs.StringSpec(required=False),
            "description": fs.StringSpec(required=False),
            "image": fs.UrlSpec(required=False),
            "price": fs.FloatSpec(required=False),
            "link": fs.UrlSpec(required=False),
        }
        body = [*_card(""), radio]
    return TaskSpec(
        input_spec=inputs,
        output_spec={field: fs.StringSpec(allowed_values=answers)},
        view_spec=vs.TemplateBuilderViewSpec(view=tb.ListViewV1(body)),
    )


def build_project(
    *, key: str, policy: Sequence[Mapping[str, str]], kind: TaskKind = "label"
) -> tc.Project:
    """The project: a label task (choose the policy label) or a pair task (would both
    items get the same policy label?); the instructions list the policy labels."""
    labels = "<p>" + "</p><p>".join(f"<b>{p.get('title', p['key'])}</b>" for p in policy) + "</p>"
    if kind == "pair":
        what = "Do these two items deserve the same decision?"
        description = "Compare two item cards: would the same policy label apply to both?"
        instructions = (
            "<p>Answer <b>Same decision</b> when both items deserve the same one of these "
            "labels, <b>Different decisions</b> otherwise. Similar-looking items can "
            "deserve different decisions (a price, a word, a photo can change it).</p>" + labels
        )
    else:
        what = "Moderate a listing"
        description = "Read the item card and choose the policy label that applies."
        instructions = labels
    return tc.Project(
        public_name=what,
        public_description=description,
        public_instructions=instructions,
        task_spec=task_spec(policy=policy, kind=kind),
        metadata={MARKER: [key]},
        private_comment=f"{MARKER}={key}",
    )


def build_training(*, project_id: str, key: str, config: CrowdConfig) -> tc.Training:
    return tc.Training(
        project_id=project_id,
        private_name=f"{key} training",
        may_contain_adult_content=True,
        assignment_max_duration_seconds=config.assignment_time_limit_s,
        mix_tasks_in_creation_order=True,
        shuffle_tasks_in_task_suite=False,
        training_tasks_in_task_suite_count=config.training_tasks_per_suite,
        task_suites_required_to_pass=1,
        retry_training_after_days=1,
        inherited_instructions=True,
        metadata={MARKER: [key]},
    )


def golden_distribution(config: CrowdConfig) -> Any:
    """``config.golden_schedule`` as Toloka's ``golden_task_distribution_function`` (None:
    the mixer's default, ``golden_tasks_count`` in every suite)."""
    if not config.golden_schedule or not config.golden_per_suite:
        return None
    tdf = tc.task_distribution_function.TaskDistributionFunction
    return tdf(scope=config.golden_schedule_scope, distribution="UNIFORM",
               window_days=config.golden_schedule_window_days,
               intervals=[tdf.Interval(from_=a, to=b, frequency=f)
                          for a, b, f in config.golden_schedule])


def build_pool(
    *,
    project_id: str,
    key: str,
    config: CrowdConfig,
    training_id: str | None = None,
    now: dt.datetime | None = None,
) -> tc.Pool:
    """A pool with the quality rules of `CrowdConfig` that Toloka enforces: skipped suites in
    a row always; golden accuracy and fast answers when ``config.quality_control`` is
    ``"toloka"`` (the golden one only without ``golden_ban_confidence``); else Quorum's
    review enforces those (never both)."""
    now = now or dt.datetime.now(dt.UTC)
    restrict = dict(scope="PROJECT", duration=config.ban_days, duration_unit="DAYS")
    pool = tc.Pool(
        project_id=project_id,
        private_name=key,
        may_contain_adult_content=config.may_contain_adult_content,
        will_expire=now + dt.timedelta(days=config.pool_lifetime_days),
        reward_per_assignment=config.reward_per_suite,
        assignment_max_duration_seconds=config.assignment_time_limit_s,
        auto_accept_solutions=config.auto_accept,
        auto_accept_period_day=config.auto_accept_period_days,
        defaults=tc.Pool.Defaults(
            default_overlap_for_new_tasks=config.overlap,
            default_overlap_for_new_task_suites=config.overlap,
        ),
        metadata={MARKER: [key]},
    )
    pool.set_mixer_config(
        real_tasks_count=config.tasks_per_suite,
        golden_tasks_count=config.golden_per_suite,
        training_tasks_count=0,
        golden_task_distribution_function=golden_distribution(config),
    )
    qc = pool.quality_control
    if config.toloka_bans_golden:
        qc.add_action(
            collector=collectors.GoldenSet(history_size=max(config.golden_min_answers * 3, 10)),
            conditions=[
                conditions.GoldenSetCorrectAnswersRate < round(100 * config.golden_min_accuracy),
                conditions.GoldenSetAnswersCount >= config.golden_min_answers,
            ],
            action=actions.RestrictionV2(**restrict, private_comment="golden accuracy"),
        )
    if config.toloka_bans_fast:
        qc.add_action(
            collector=collectors.AssignmentSubmitTime(
                history_size=10, fast_submit_threshold_seconds=config.fast_suite_seconds
            ),
            conditions=[conditions.FastSubmittedCount >= config.fast_max_count],
            action=actions.RestrictionV2(**restrict, private_comment="fast answers"),
        )
    qc.add_action(
        collector=collectors.SkippedInRowAssignments(),
        conditions=[conditions.SkippedInRowCount >= config.skipped_in_row],
        action=actions.RestrictionV2(
            scope="PROJECT", duration=1, duration_unit="DAYS", private_comment=SKIPPED_COMMENT
        ),
    )
    if training_id is not None:
        qc.training_requirement = tc.pool.QualityControl.TrainingRequirement(
            training_pool_id=training_id, training_passing_skill_value=config.training_pass_mark
        )
    return pool


def _input_values(row: Mapping[str, Any], kind: TaskKind) -> dict[str, Any]:
    fields = ("item_a", "item_b") if kind == "pair" else ITEM_FIELDS
    values: dict[str, Any] = {"item_id": str(row["item_id"])}
    for name in fields:
        value = row.get(name)
        if value is not None and not (isinstance(value, float) and pd.isna(value)) and value != "":
            values[name] = float(value) if name == "price" else value
    return values


def build_tasks(
    *,
    pool_id: str,
    items: pd.DataFrame,
    kind: TaskKind = "label",
    overlap: int | None = None,
    hint: str | None = None,
) -> list[tc.Task]:
    """Tasks for ``items`` (``item_id`` + card columns). Rows with a ``label`` value
    become control tasks (known solution, infinite overlap)."""
    field = output_field(kind)
    out = []
    for row in items.to_dict("records"):
        label = row.get("label")
        if label is not None and not pd.isna(label):
            out.append(
                tc.Task(
                    pool_id=pool_id,
                    input_values=_input_values(row, kind),
                    infinite_overlap=True,
                    known_solutions=[
                        tc.Task.KnownSolution(
                            output_values={field: str(label)}, correctness_weight=1
                        )
                    ],
                    message_on_unknown_solution=hint or f"The right answer is {label}.",
                )
            )
        else:
            out.append(
                tc.Task(pool_id=pool_id, input_values=_input_values(row, kind), overlap=overlap)
            )
    return out
