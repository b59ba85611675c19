"""Every ORM model, imported in one place (for Alembic and for relationship lookup)."""

from backend.appeals.models import Appeal
from backend.calibration.models import CalibrationRun, ModelArtifact, ThresholdSet
from backend.crowdwork.models import CrowdPool, CrowdTask, Judgment
from backend.db import Base
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.deliveries.models import FeedEntry, WebhookDelivery, WebhookSubscription
from backend.hashes.models import BankHash, HashBank, HashDistance, ItemHash
from backend.items.models import Item, ItemEmbedding, ItemScore, ItemTag
from backend.jobs.models import JobRun
from backend.media.models import ItemImage
from backend.queues.models import Queue, Task, TaskSkip
from backend.routing.models import ShadowOutcome
from backend.rules.models import Rule, RuleHit, RuleRun, RuleVersion
from backend.users.models import (
    ApiToken,
    AuditEntry,
    QueueGrant,
    RateLimitCounter,
    User,
    WebSession,
)

__all__ = [
    "ApiToken", "Appeal", "AuditEntry", "BankHash", "Base", "CalibrationRun", "CrowdPool",
    "CrowdTask", "DecisionEvent", "FeedEntry", "HashBank", "HashDistance", "Item",
    "ItemEmbedding", "ItemHash", "ItemImage", "ItemScore", "ItemStatus", "ItemTag", "JobRun",
    "Judgment", "ModelArtifact", "Queue", "QueueGrant", "RateLimitCounter", "Rule", "RuleHit",
    "RuleRun", "RuleVersion", "ShadowOutcome", "Task", "TaskSkip", "ThresholdSet", "User",
    "WebSession", "WebhookDelivery", "WebhookSubscription",
]
