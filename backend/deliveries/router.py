"""``GET /api/v1/decisions`` (the cursor feed) and the webhook subscriptions (admins)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from backend.db import utcnow
from backend.deliveries import service
from backend.deliveries.schemas import (
    DeliveryRead,
    FeedPageRead,
    ReplayRequest,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionRead,
)
from backend.deliveries.settings import get_delivery_settings
from backend.deps import AdminUser, CurrentUser, PolicyDep, SessionDep
from backend.errors import ValidationFailed
from backend.users.service import audit

router = APIRouter(prefix="/api/v1", tags=["deliveries"])


@router.get("/decisions", response_model=FeedPageRead)
def decision_feed(session: SessionDep, policy: PolicyDep, user: CurrentUser,
                  after: int = Query(0, ge=0, description="the last cursor you read (0: start)"),
                  limit: int = Query(100, ge=1)) -> FeedPageRead:
    """Decision events in commit order, each with its statement of reasons; page with
    ``after=next_cursor``: every event comes exactly once."""
    cfg = get_delivery_settings()
    if limit > cfg.feed_max_limit:
        raise ValidationFailed(f"limit is at most {cfg.feed_max_limit}, not {limit}")
    service.sequence_feed(session=session, now=utcnow(), policy=policy,
                          horizon_seconds=cfg.feed_horizon_seconds)
    page = service.read_feed(session=session, after=after, limit=limit,
                             policy=policy)
    return FeedPageRead(events=page.events, next_cursor=page.next_cursor,
                        has_more=page.has_more)


@router.post("/webhooks", response_model=SubscriptionCreated, status_code=201)
def create_webhook(body: SubscriptionCreate, session: SessionDep, policy: PolicyDep,
                   user: AdminUser) -> SubscriptionCreated:
    """Subscribe a URL to the decisions (of some sources / labels); the secret is shown once."""
    sub = service.create_subscription(session=session, url=body.url, sources=body.sources,
                                      labels=body.labels, known_labels=policy.keys)
    audit(session=session, user=user, action="webhook.create", target_type="webhook",
          target_id=sub.id, details={"url": sub.url})
    return SubscriptionCreated(**SubscriptionRead.model_validate(sub).model_dump(),
                               secret=sub.secret)


@router.get("/webhooks", response_model=list[SubscriptionRead])
def list_webhooks(session: SessionDep, user: AdminUser) -> list[SubscriptionRead]:
    return [SubscriptionRead.model_validate(s)
            for s in service.list_subscriptions(session=session)]


@router.delete("/webhooks/{subscription_id}", status_code=204)
def delete_webhook(subscription_id: int, session: SessionDep, user: AdminUser) -> None:
    """Stop delivering to this subscription (its history is kept)."""
    service.deactivate_subscription(session=session, subscription_id=subscription_id)
    audit(session=session, user=user, action="webhook.deactivate", target_type="webhook",
          target_id=subscription_id)


@router.get("/webhooks/dead", response_model=list[DeliveryRead])
def dead_letters(session: SessionDep, user: AdminUser) -> list[DeliveryRead]:
    """Deliveries that failed ``max_attempts`` times."""
    return [DeliveryRead.model_validate(d) for d in service.dead_letters(session=session)]


@router.post("/webhooks/dead/replay")
def replay_dead(body: ReplayRequest, session: SessionDep, user: AdminUser) -> dict[str, int]:
    """Send dead deliveries again (these ids, or all), with fresh attempts."""
    n = service.replay(session=session, delivery_ids=body.ids)
    audit(session=session, user=user, action="webhook.replay", target_type="delivery",
          details={"ids": body.ids, "replayed": n})
    return {"replayed": n}
