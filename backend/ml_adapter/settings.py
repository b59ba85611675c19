"""ML settings (``QUORUM_ML_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MLSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUORUM_ML_", extra="ignore")

    #: Run the similarity and classifier hooks in the routing pipeline.
    enabled: bool = True
    #: ``auto`` (CLIP if weights are configured/cached, else MiniLM), ``open_clip``,
    #: ``minilm`` or ``hashing`` (a weightless baseline for tests).
    encoder: str = "auto"
    #: open_clip architecture and pretrained tag or local checkpoint path (never downloaded).
    clip_arch: str = "ViT-B-32"
    clip_pretrained: str | None = None
    #: Weight of the image embedding in the fused item vector (text gets the rest).
    clip_image_weight: float = 0.5
    #: Items per encoder batch.
    batch_size: int = 64
    #: In-process index kind for the embedded default: ``hnsw`` or ``exact``.
    index_kind: str = "hnsw"
    #: HNSW search breadth: recall@1 on near-duplicate queries at 1,000,000 vectors is
    #: 0.815 at 64, 0.949 at 256, 0.961 at 512 (p99 0.9 ms) — see docs/ml.md.
    index_ef_search: int = 512
    #: Use pgvector for neighbour search on PostgreSQL when the extension is available.
    use_pgvector: bool = True
    #: Neighbours looked at for a reuse decision.
    neighbours: int = 5
    #: Final human verdicts needed before ``quorum train`` replaces the zero-shot start.
    min_train_verdicts: int = 100
    #: Bands that may decide automatically in a new default threshold set.
    auto_decide_bands: list[str] = Field(default_factory=lambda: ["auto_ok", "ML_BAD_HIGH"])
    #: Similarity reuse distance (cosine) in a new default threshold set.
    default_reuse_distance: float = 0.05
    #: Classifier families ``quorum train`` scores out of fold (comma-separated:
    #: ``embedding``, ``text_stack``, ``minilm_finetune``), or ``auto``: all three on a
    #: CUDA machine, the first two on a CPU (``ml.families.default_families``).
    families: str = "auto"
    #: The fine-tuned MiniLM is a candidate only with at least this many labelled items.
    finetune_min_labels: int = Field(default=1000, ge=10)
    #: Passes over the labels when fine-tuning MiniLM.
    finetune_epochs: int = Field(default=2, ge=1, le=20)
    #: Transformer layers fine-tuned (from the top), or ``auto``: 6 on CUDA, 2 on a CPU.
    finetune_layers: str = "auto"
    #: Score images with NudeNet (optional ``safety`` extra) as the ``safety_score`` signal.
    safety: bool = False


@lru_cache
def get_ml_settings() -> MLSettings:
    return MLSettings()
