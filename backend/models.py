"""Every ORM model, imported in one place (for Alembic and for relationship lookup)."""

from backend.appeals.models import Appeal
from backend.calibration.models import CalibrationRun, ModelArtifact, ThresholdSet
from backend.crowdwork.models import CrowdPool, CrowdTask, Judgment
from backend.db import Base
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.items.models import Item, ItemEmbedding, ItemScore, ItemTag
from backend.queues.models import Queue, Task, TaskSkip
from backend.rules.models import Rule, RuleHit, RuleVersion
from backend.users.models import (
    ApiToken,
    AuditEntry,
    QueueGrant,
    RateLimitCounter,
    User,
    WebSession,
)

__all__ = [
    "Appeal", "ApiToken", "AuditEntry", "Base", "CalibrationRun", "CrowdPool", "CrowdTask",
    "DecisionEvent", "Item", "ItemEmbedding", "ItemScore", "ItemStatus", "ItemTag",
    "Judgment", "ModelArtifact", "Queue", "QueueGrant", "RateLimitCounter", "Rule", "RuleHit",
    "RuleVersion", "Task", "TaskSkip", "ThresholdSet", "User", "WebSession",
]
