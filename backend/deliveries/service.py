"""Decisions delivered to the platform: the cursor feed and signed webhooks.

**Feed.** ``decision_events.id`` comes from a sequence, and on PostgreSQL transactions
commit out of id order: a reader paging by event id could pass id 41 while the
transaction holding id 40 is still open, and never see 40. So the feed pages by
``decision_feed.seq`` instead, a per-commit sequence: ``sequence_feed`` (one at a time,
under an advisory lock) appends the committed events it has not fed yet, in id order, and
commits; the next sequencer starts after that commit, so ``seq`` grows in commit order
and a page read at any time is a prefix of every later read. Late events (an old id
committing late) get a later ``seq``, never a gap. SQLite commits one writer at a time,
so the same code gives the same guarantee there.

**Webhooks.** Sequencing also fans each event out to the matching subscriptions (by item
source and label) as ``webhook_deliveries`` rows, in the same transaction. A sender
claims due rows (``FOR UPDATE SKIP LOCKED``), posts the body signed with HMAC-SHA256 and
the event id as the idempotency key, and records the outcome: delivered, or retried with
exponential backoff, or ``dead`` after ``max_attempts`` (admins replay dead ones).
Delivery is at least once: a receiver must de-duplicate by ``Idempotency-Key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.orm import Session, lazyload, sessionmaker

from backend.db import transaction, utcnow
from backend.decisions.models import DecisionEvent
from backend.decisions.statements import statements_for
from backend.deliveries.models import FeedEntry, WebhookDelivery, WebhookSubscription
from backend.deliveries.settings import DeliverySettings
from backend.errors import NotFound, ValidationFailed
from backend.items.models import Item
from backend.policy import Policy

#: ``pg_try_advisory_xact_lock`` key of the feed sequencer.
FEED_LOCK_KEY = 0x51_46_45_45_44  # "QFEED"
SIGNATURE_HEADER = "X-Quorum-Signature"
EVENT_HEADER = "X-Quorum-Event-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"


# ---------------------------------------------------------------- statement of reasons
def event_payload(event: DecisionEvent, item: Item, policy: Policy,
                  statement: dict[str, Any] | None) -> dict[str, Any]:
    """What a consumer is told about one decision: the label, every reason behind it, and
    for a decision that restricts the item its statement of reasons
    (``decisions.statements``, the same as ``GET /api/v1/decisions/{id}/statement``;
    ``null`` for one that does not restrict)."""
    return {
        "event_id": event.id,
        "item": {"id": item.id, "source": item.source, "external_id": item.external_id},
        "label": event.label,
        "decided_by": event.source,
        "is_human": event.is_human,
        "policy_version": policy.version,
        "reasons": {
            "rule_id": event.rule_id, "rule_version": event.rule_version,
            "model_id": event.model_id, "threshold_set_version": event.threshold_set_version,
            "similar_item_id": event.similar_item_id, "distance": event.distance,
            "crowd_pool_id": event.crowd_pool_id,
            "aggregation_method": event.aggregation_method,
            "confidence": event.confidence, "details": event.details,
        },
        "supersedes_event_id": event.supersedes_id,
        "decided_at": event.created_at.isoformat(),
        "statement_of_reasons": statement,
    }


def payloads(session: Session, rows: Sequence[tuple[DecisionEvent, Item]],
             policy: Policy) -> list[dict[str, Any]]:
    """``event_payload`` of each (event, item), the statements built for all at once."""
    sors = statements_for(session=session, decisions=rows, policy=policy)
    return [event_payload(ev, item, policy, sors[ev.id]) for ev, item in rows]


# ---------------------------------------------------------------- feed
def sequence_feed(*, session: Session, now: datetime, policy: Policy,
                  horizon_seconds: float, limit: int = 20_000) -> int:
    """Append the committed, not yet fed events to the feed (and fan them out to the
    webhook subscriptions). Returns how many; 0 when another sequencer holds the lock."""
    if session.get_bind().dialect.name == "postgresql" and not session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": FEED_LOCK_KEY}):
        return 0
    floor = session.scalar(
        select(FeedEntry.event_id).where(FeedEntry.fed_at < now - timedelta(
            seconds=horizon_seconds)).order_by(FeedEntry.seq.desc()).limit(1)) or 0
    new_ids = list(session.scalars(
        select(DecisionEvent.id)
        .outerjoin(FeedEntry, FeedEntry.event_id == DecisionEvent.id)
        .where(DecisionEvent.id > floor, FeedEntry.event_id.is_(None))
        .order_by(DecisionEvent.id).limit(limit)))
    if not new_ids:
        return 0
    session.execute(insert(FeedEntry), [{"event_id": i, "fed_at": now} for i in new_ids])
    _fan_out(session, event_ids=new_ids, now=now, policy=policy)
    session.flush()
    return len(new_ids)


def _matches(sub: WebhookSubscription, event: DecisionEvent, item: Item) -> bool:
    return (not sub.sources or item.source in sub.sources) and (
        not sub.labels or event.label in sub.labels)


def _fan_out(session: Session, *, event_ids: Sequence[int], now: datetime,
             policy: Policy) -> None:
    subs = list(session.scalars(select(WebhookSubscription)
                                .where(WebhookSubscription.is_active.is_(True))))
    if not subs:
        return
    rows = []
    for start in range(0, len(event_ids), 1000):
        chunk = session.execute(
            select(DecisionEvent, Item).join(Item, Item.id == DecisionEvent.item_id)
            .where(DecisionEvent.id.in_(event_ids[start:start + 1000]))
            .options(lazyload(Item.status))  # not needed: no joined load of each status
            .order_by(DecisionEvent.id)).tuples().all()
        wanted = [(event, item, matching) for event, item in chunk
                  if (matching := [sub for sub in subs if _matches(sub, event, item)])]
        bodies = payloads(session, [(event, item) for event, item, _ in wanted], policy)
        for (event, _, matching), payload in zip(wanted, bodies, strict=True):
            rows.extend({"subscription_id": sub.id, "event_id": event.id, "state": "pending",
                         "attempts": 0, "next_attempt_at": now, "payload": payload,
                         "created_at": now} for sub in matching)
    if rows:
        session.execute(insert(WebhookDelivery), rows)


@dataclass
class FeedPage:
    events: list[dict[str, Any]]
    next_cursor: int
    has_more: bool


def read_feed(*, session: Session, after: int, limit: int, policy: Policy) -> FeedPage:
    """Events after ``after`` (a ``seq``; 0 = from the start), oldest first."""
    rows = session.execute(
        select(FeedEntry.seq, DecisionEvent, Item)
        .join(DecisionEvent, DecisionEvent.id == FeedEntry.event_id)
        .join(Item, Item.id == DecisionEvent.item_id)
        .where(FeedEntry.seq > after).options(lazyload(Item.status))
        .order_by(FeedEntry.seq).limit(limit + 1)).tuples().all()
    more = len(rows) > limit
    rows = rows[:limit]
    events = [{"cursor": seq, **p} for (seq, _, _), p in
              zip(rows, payloads(session, [(ev, it) for _, ev, it in rows], policy),
                  strict=True)]
    return FeedPage(events=events, next_cursor=rows[-1][0] if rows else after, has_more=more)


# ---------------------------------------------------------------- subscriptions
def create_subscription(*, session: Session, url: str, sources: Sequence[str] = (),
                        labels: Sequence[str] = (), known_labels: Sequence[str] | None = None,
                        now: datetime | None = None) -> WebhookSubscription:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(f"a webhook URL must be http(s)://host/..., not {url!r}")
    if known_labels is not None:
        unknown = sorted(set(labels) - set(known_labels))
        if unknown:
            raise ValidationFailed(f"unknown label(s) {unknown}; use some of {list(known_labels)}")
    sub = WebhookSubscription(url=url, secret=secrets.token_hex(32), sources=list(sources),
                              labels=list(labels), is_active=True, created_at=now or utcnow())
    session.add(sub)
    session.flush()
    return sub


def list_subscriptions(*, session: Session) -> list[WebhookSubscription]:
    return list(session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)))


def get_subscription(*, session: Session, subscription_id: int) -> WebhookSubscription:
    sub = session.get(WebhookSubscription, subscription_id)
    if sub is None:
        raise NotFound(f"no webhook subscription {subscription_id}")
    return sub


def deactivate_subscription(*, session: Session, subscription_id: int) -> None:
    get_subscription(session=session, subscription_id=subscription_id).is_active = False
    session.flush()


def dead_letters(*, session: Session, limit: int = 500) -> list[WebhookDelivery]:
    return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.state == "dead")
                                .order_by(WebhookDelivery.id).limit(limit)))


def replay(*, session: Session, delivery_ids: Sequence[int] | None = None,
           now: datetime | None = None) -> int:
    """Put dead deliveries (these, or all) back to ``pending`` with fresh attempts."""
    stmt = update(WebhookDelivery).where(WebhookDelivery.state == "dead")
    if delivery_ids is not None:
        stmt = stmt.where(WebhookDelivery.id.in_(list(delivery_ids)))
    n = session.execute(stmt.values(state="pending", attempts=0,
                                    next_attempt_at=now or utcnow())).rowcount or 0
    if delivery_ids is not None and n < len(set(delivery_ids)):
        raise NotFound("some of these deliveries are not in the dead-letter list")
    return n


# ---------------------------------------------------------------- sending
def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes with the subscription's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class DeliveryPass:
    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


def backoff_seconds(attempts: int, cfg: DeliverySettings, rng: random.Random) -> float:
    raw = min(cfg.backoff_max_seconds, cfg.backoff_base_seconds * 2 ** max(attempts - 1, 0))
    return raw * rng.uniform(0.5, 1.0)


def deliver_due(*, sessions: sessionmaker[Session], cfg: DeliverySettings,
                client: httpx.Client | None = None, now: datetime | None = None,
                rng: random.Random | None = None) -> DeliveryPass:
    """One pass: claim up to ``batch_size`` due deliveries, call them, record outcomes.
    The calls happen outside any transaction (a claim hides a row for ``claim_seconds``)."""
    rng = rng or random.Random()
    now = now or utcnow()
    result = DeliveryPass()
    with transaction(sessions) as session:
        stmt = (select(WebhookDelivery, WebhookSubscription.url, WebhookSubscription.secret)
                .join(WebhookSubscription,
                      WebhookSubscription.id == WebhookDelivery.subscription_id)
                .where(WebhookDelivery.state == "pending",
                       WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(cfg.batch_size))
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=WebhookDelivery, skip_locked=True)
        claimed = [(d.id, d.event_id, d.attempts, d.payload, url, secret)
                   for d, url, secret in session.execute(stmt).tuples()]
        if claimed:
            session.execute(update(WebhookDelivery)
                            .where(WebhookDelivery.id.in_([c[0] for c in claimed]))
                            .values(next_attempt_at=utcnow() + timedelta(
                                seconds=cfg.claim_seconds)))
    result.claimed = len(claimed)
    if not claimed:
        return result
    own = client is None
    client = client or httpx.Client(timeout=cfg.timeout_seconds, follow_redirects=False)
    outcomes: list[tuple[int, int, int | None, str | None]] = []
    try:
        for delivery_id, event_id, attempts, payload, url, secret in claimed:
            body = body_of(payload or {})
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body),
                       IDEMPOTENCY_HEADER: str(event_id), EVENT_HEADER: str(event_id)}
            status: int | None = None
            error: str | None = None
            try:
                resp = client.post(url, content=body, headers=headers)
                status = resp.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            outcomes.append((delivery_id, attempts + 1, status, error))
    finally:
        if own:
            client.close()
    done_at = utcnow()
    delivered, dead, retry = [], [], []
    for delivery_id, attempts, status, error in outcomes:
        values: dict[str, Any] = {"b_id": delivery_id, "attempts": attempts,
                                  "last_status": status, "last_error": error}
        if error is None:
            delivered.append(values)
        elif attempts >= cfg.max_attempts:
            dead.append(values)
        else:
            retry.append({**values, "next_attempt_at": done_at + timedelta(
                seconds=backoff_seconds(attempts, cfg, rng))})
    result.delivered, result.dead, result.failed = len(delivered), len(dead), len(retry)
    table = WebhookDelivery.__table__
    by_id = update(table).where(table.c.id == bindparam("b_id"))
    with transaction(sessions) as session:  # one executemany per outcome, not a statement each
        for rows, extra in ((delivered, {"state": "delivered", "delivered_at": done_at}),
                            (dead, {"state": "dead"}), (retry, {})):
            if rows:
                session.execute(by_id.values(**extra) if extra else by_id, rows)
    return result


def run_deliveries(*, sessions: sessionmaker[Session], cfg: DeliverySettings,
                   policy: Policy, deadline: Any = None) -> dict[str, int]:
    """The periodic delivery task: sequence the feed, then send what was due when the pass
    began (a delivery that fails now waits for a later pass, after its backoff)."""
    started = utcnow()
    with transaction(sessions) as session:
        fed = sequence_feed(session=session, now=started, policy=policy,
                            horizon_seconds=cfg.feed_horizon_seconds)
    total = DeliveryPass()
    with httpx.Client(timeout=cfg.timeout_seconds, follow_redirects=False) as client:
        while deadline is None or not deadline.expired:
            p = deliver_due(sessions=sessions, cfg=cfg, client=client, now=started)
            total.claimed += p.claimed
            total.delivered += p.delivered
            total.failed += p.failed
            total.dead += p.dead
            if p.claimed < cfg.batch_size:
                break
    return {"fed": fed, "delivered": total.delivered, "failed": total.failed,
            "dead": total.dead}
