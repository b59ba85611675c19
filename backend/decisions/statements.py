"""Statements of reasons (EU Digital Services Act, Art. 17) for decisions that restrict an
item, and their export in the shape of the DSA Transparency Database's statements.

A statement names the label and its policy text, the facts (rule and version, model and
threshold-set version, the reused item and distance, who decided), whether detection and
decision were automated, and how to appeal. ``dsa_statement`` maps one to the Transparency
Database's fields (``decision_visibility``, ``decision_ground``, ``category``,
``automated_detection``, ``automated_decision``, ``puid``, …); the mapping per label kind is
below and a policy label may name its own ``dsa_category``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.decisions.models import DecisionEvent
from backend.errors import NotFound
from backend.items.models import Item
from backend.policy import Policy
from backend.rules.models import Rule
from backend.users.models import User

#: What a label kind does to an item on the platform (DSA ``decision_visibility``).
VISIBILITY = {"hide": "DECISION_VISIBILITY_CONTENT_AGE_RESTRICTED",
              "bad": "DECISION_VISIBILITY_CONTENT_REMOVED"}
#: The seed marketplace labels' DSA statement categories (a label may override).
CATEGORY = {"fraud": "STATEMENT_CATEGORY_SCAMS_AND_FRAUD",
            "prohibited": "STATEMENT_CATEGORY_UNSAFE_AND_PROHIBITED_PRODUCTS",
            "adult": "STATEMENT_CATEGORY_PROTECTION_OF_MINORS",
            "restricted": "STATEMENT_CATEGORY_SCOPE_OF_PLATFORM_SERVICE"}
DEFAULT_CATEGORY = "STATEMENT_CATEGORY_SCOPE_OF_PLATFORM_SERVICE"
AUTOMATIC = ("rule", "hash", "similarity", "classifier")
APPEAL_HOW = ("The seller can appeal through the platform, which opens "
              "POST /api/v1/items/{item_id}/appeals; a moderator other than the one who "
              "decided reviews it and upholds or reverses the decision with reasons.")


def restricts(policy: Policy, label: str) -> bool:
    lab = next((x for x in policy.labels if x.key == label), None)
    return lab is not None and lab.kind in VISIBILITY


def _date(value: datetime | None) -> str | None:
    return value.date().isoformat() if value else None


def _label(policy: Policy, ev: DecisionEvent) -> Any:
    """The policy label of ``ev`` if the decision restricts its item, else ``None``."""
    lab = next((x for x in policy.labels if x.key == ev.label), None)
    if lab is None or lab.kind not in VISIBILITY or ev.source == "undo":
        return None
    return lab


def statement_of_reasons(*, session: Session, event_id: int, policy: Policy) -> dict[str, Any]:
    """The statement of reasons for decision ``event_id`` (``NotFound`` if there is none:
    the decision does not restrict the item)."""
    ev = session.get(DecisionEvent, event_id) if 1 <= event_id <= 2**63 - 1 else None
    if ev is None:
        raise NotFound(f"no decision with id {event_id}")
    item = session.get(Item, ev.item_id)
    sor = statements_for(session=session, decisions=[(ev, item)], policy=policy)[ev.id]
    if sor is None:
        raise NotFound(f"decision {event_id} ({ev.label}) does not restrict the item, so it "
                       "has no statement of reasons")
    return sor


def statements_for(*, session: Session, decisions: Sequence[tuple[DecisionEvent, Item | None]],
                   policy: Policy) -> dict[int, dict[str, Any] | None]:
    """Event id -> its statement of reasons (``None`` for a decision that does not restrict
    its item), for many decisions at once: the rule names and moderators' usernames are
    read in one query each (the feed and the webhook fan-out build a page at a time)."""
    restricting = [(ev, item, lab) for ev, item in decisions
                   if (lab := _label(policy, ev)) is not None]
    rule_ids = sorted({ev.rule_id for ev, _, _ in restricting if ev.rule_id is not None})
    user_ids = sorted({ev.user_id for ev, _, _ in restricting if ev.user_id is not None})
    rules = dict(session.execute(select(Rule.id, Rule.name).where(Rule.id.in_(rule_ids)))
                 .tuples().all()) if rule_ids else {}
    users = dict(session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
                 .tuples().all()) if user_ids else {}
    out: dict[int, dict[str, Any] | None] = {ev.id: None for ev, _ in decisions}
    for ev, item, lab in restricting:
        out[ev.id] = _statement(ev, item, lab, policy, rule_name=rules.get(ev.rule_id),
                                moderator=users.get(ev.user_id))
    return out


def _statement(ev: DecisionEvent, item: Item | None, lab: Any, policy: Policy, *,
               rule_name: str | None, moderator: str | None) -> dict[str, Any]:
    facts: dict[str, Any] = {"source": ev.source}
    if ev.rule_id is not None:
        facts["rule"] = {"id": ev.rule_id, "name": rule_name, "version": ev.rule_version}
    if ev.model_id:
        facts["model"] = ev.model_id
    if ev.threshold_set_version is not None:
        facts["threshold_set_version"] = ev.threshold_set_version
    if ev.similar_item_id is not None:
        facts["reused_item_id"] = ev.similar_item_id
        facts["distance"] = ev.distance
    if ev.confidence is not None:
        facts["confidence"] = ev.confidence
    if ev.crowd_pool_id is not None:
        facts["crowd_pool_id"] = ev.crowd_pool_id
        facts["aggregation_method"] = ev.aggregation_method
    if ev.user_id is not None:
        facts["moderator"] = moderator
    for key in ("policy_version", "content_hash"):
        if ev.details and key in ev.details:
            facts[key] = ev.details[key]
    automated = ev.source in AUTOMATIC
    return {
        "event_id": ev.id, "item_id": ev.item_id,
        "source": item.source if item else None,
        "external_id": item.external_id if item else None,
        "decided_at": ev.created_at.isoformat() if ev.created_at else None,
        "label": ev.label, "label_title": lab.title, "policy_text": lab.description,
        "policy": {"name": policy.name, "version": policy.version},
        "restriction": VISIBILITY[lab.kind],
        "automated_detection": automated or ev.source == "similarity",
        "automated_decision": automated,
        "facts": facts,
        "comment": ev.comment,
        "how_to_appeal": APPEAL_HOW.format(item_id=ev.item_id),
    }


def dsa_statement(statement: dict[str, Any], *, policy: Policy,
                  content_date: datetime | None = None) -> dict[str, Any]:
    """One statement in the DSA Transparency Database's shape (``POST /api/v1/statement``)."""
    lab = next(x for x in policy.labels if x.key == statement["label"])
    category = getattr(lab, "dsa_category", None) or CATEGORY.get(lab.key, DEFAULT_CATEGORY)
    f = statement["facts"]
    how = ("an automated rule" if f.get("rule") else
           "an automated similarity match with an item already decided" if
           "reused_item_id" in f else
           "an automated classifier" if statement["automated_decision"] else
           "the crowd's aggregated answers" if f.get("crowd_pool_id") else "a moderator")
    return {
        "decision_visibility": [statement["restriction"]],
        "decision_ground": "DECISION_GROUND_INCOMPATIBLE_CONTENT",
        "incompatible_content_ground": f"{policy.name} policy v{policy.version}: "
                                       f"{statement['label_title']}",
        "incompatible_content_explanation": statement["policy_text"],
        "category": category,
        "content_type": ["CONTENT_TYPE_PRODUCT"],
        "content_date": _date(content_date),
        "application_date": statement["decided_at"][:10] if statement["decided_at"] else None,
        "decision_facts": f"Decided {statement['label_title']} by {how}."
                          + (f" Rule {f['rule']['name']} v{f['rule']['version']}."
                             if f.get("rule") else "")
                          + (f" Model {f['model']}." if f.get("model") else ""),
        "source_type": "SOURCE_VOLUNTARY",
        "automated_detection": "Yes" if statement["automated_detection"] else "No",
        "automated_decision": ("AUTOMATED_DECISION_FULLY" if statement["automated_decision"]
                               else "AUTOMATED_DECISION_NOT_AUTOMATED"),
        "puid": f"quorum-decision-{statement['event_id']}",
    }


def restricting_events(*, session: Session, policy: Policy, since: datetime | None,
                       after_id: int = 0, limit: int = 1000) -> list[int]:
    """Ids of decisions that restrict items (a statement each), oldest first."""
    labels = [x.key for x in policy.labels if x.kind in VISIBILITY]
    stmt = (select(DecisionEvent.id).where(DecisionEvent.label.in_(labels),
                                           DecisionEvent.source != "undo",
                                           DecisionEvent.id > after_id)
            .order_by(DecisionEvent.id).limit(max(1, min(limit, 10_000))))
    if since is not None:
        stmt = stmt.where(DecisionEvent.created_at >= since)
    return list(session.scalars(stmt))
