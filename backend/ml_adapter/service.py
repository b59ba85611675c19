"""The backend side of ``ml/``: encoder, stored embeddings, the neighbour index,
the active classifier, training. The pipeline hooks are in ``hooks.py``.

Embeddings are stored per ``(item, encoder_id)`` so vectors of different encoders never
mix. The in-process index (embedded default) holds the vectors of items with a final
*human* verdict; it lives under ``data_dir/index/<encoder>/`` and is grown
incrementally from the decision log (a watermark of the last human decision event
synced), never rebuilt at process start. Neighbour labels are read live from the
items' current status, so a corrected verdict is reused as corrected.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from backend.calibration.models import ModelArtifact
from backend.contextvalues import bound
from backend.db import in_values, read_only
from backend.decisions.models import DecisionEvent, ItemStatus
from backend.errors import ValidationFailed
from backend.items.models import Item, ItemEmbedding
from backend.ml_adapter.settings import MLSettings, get_ml_settings
from backend.policy import Policy, get_policy
from backend.settings import Settings, get_settings

log = logging.getLogger("quorum.ml")
SIGNALS = ["price", "gmv", "exposure", "safety_score"]
_lock = threading.RLock()
_encoders: dict[tuple, Any] = {}
_stores: dict[str, LocalVectorStore] = {}
_classifiers: dict[str, Any] = {}


# ------------------------------------------------------------------ encoder
def get_encoder(ml: MLSettings | None = None) -> Any:
    """The process's encoder (cached): CLIP if weights are here, else MiniLM (one warning)."""
    from ml.encoders import create_encoder, load_default_encoder

    ml = ml or get_ml_settings()
    key = (ml.encoder, ml.clip_arch, ml.clip_pretrained, ml.clip_image_weight)
    with _lock:
        if key not in _encoders:
            if ml.encoder == "auto":
                _encoders[key] = load_default_encoder(ml.clip_pretrained, arch=ml.clip_arch)
            elif ml.encoder == "open_clip":
                _encoders[key] = create_encoder("open_clip", arch=ml.clip_arch,
                                                pretrained=ml.clip_pretrained,
                                                image_weight=ml.clip_image_weight)
            else:
                _encoders[key] = create_encoder(ml.encoder)
        return _encoders[key]


def warm_up(ml: MLSettings | None = None) -> str | None:
    """Load the process's encoder (and NudeNet when ``QUORUM_ML_SAFETY`` is on) and run
    one tiny batch through it, so that the first routing job does not pay for it: a fresh
    embed worker spends ~6 s importing torch and loading MiniLM on the 2-core machines,
    longer for CLIP. Returns the encoder's id (None with ML off)."""
    ml = ml or get_ml_settings()
    if not ml.enabled:
        return None
    encoder = get_encoder(ml)
    encoder.encode(item_inputs([{"title": "warm-up", "description": ""}]), batch_size=1)
    if ml.safety:
        get_safety_scorer()
    return str(encoder.encoder_id)


def item_inputs(rows: Sequence[dict[str, Any]],
                images: Mapping[int, bytes | None] | None = None) -> list[Any]:
    """``ml.inputs.ItemInput`` of each row. ``images`` (item id → bytes, or None for an
    image that could not be loaded) comes from ``backend.media.images.load_images``; an
    http(s) image not in it is left out (``ml/`` is never handed a URL to download)."""
    from ml.inputs import ItemInput

    images = images or {}
    out = []
    for r in rows:
        image, item_id = r.get("image"), r.get("id")
        if item_id is not None and int(item_id) in images:
            image = images[int(item_id)]
        elif image and str(image).lower().startswith(("http://", "https://")):
            image = None
        elif image and not str(image).startswith("file://"):
            image = image if Path(image).exists() else None
        out.append(ItemInput(title=r.get("title") or "", description=r.get("description") or "",
                             image=image or None))
    return out


def missing_embeddings(*, session: Session, item_ids: Sequence[int], encoder_id: str
                       ) -> list[int]:
    """Those of ``item_ids`` without a stored vector for ``encoder_id``."""
    ids = [int(i) for i in item_ids]
    have: set[int] = set()
    for start in range(0, len(ids), 500):
        have.update(session.scalars(select(ItemEmbedding.item_id).where(
            ItemEmbedding.encoder_id == encoder_id,
            in_values(session, ItemEmbedding.item_id, ids[start:start + 500]))))
    return [i for i in ids if i not in have]


def _rows_for(session: Session, item_ids: Sequence[int]) -> list[dict[str, Any]]:
    cols = [Item.id, Item.title, Item.description, Item.image]
    rows = {r.id: r._asdict() for r in session.execute(select(*cols).where(
        in_values(session, Item.id, list(item_ids))))}
    return [rows[i] for i in item_ids if i in rows]


def ensure_embeddings(*, session: Session, rows: Sequence[dict[str, Any]], encoder: Any,
                      batch_size: int = 64, now: datetime | None = None,
                      images: Mapping[int, bytes | None] | None = None) -> np.ndarray:
    """Vectors for ``rows`` (dicts with ``id``, ``title``, ``description``, ``image``) in
    order: stored ones are read, missing ones are encoded in batches and stored.
    ``images``: the loaded images of rows (see `item_inputs`)."""
    ids = [int(r["id"]) for r in rows]
    have: dict[int, np.ndarray] = {}
    for start in range(0, len(ids), 500):
        for item_id, blob in session.execute(
            select(ItemEmbedding.item_id, ItemEmbedding.vector).where(
                ItemEmbedding.encoder_id == encoder.encoder_id,
                in_values(session, ItemEmbedding.item_id, ids[start:start + 500]))):
            have[item_id] = np.frombuffer(blob, dtype=np.float32)
    missing = [r for r in rows if int(r["id"]) not in have]
    if missing:
        ready = _PREPARED_VECTORS.get() or {}
        pre: dict[int, np.ndarray] = {}
        for r in missing:  # encoded before the transaction, from the same inputs
            hit = ready.get((int(r["id"]), encoder.encoder_id))
            if hit is not None and hit[0] == _fingerprint(r):
                pre[int(r["id"])] = hit[1]
        to_encode = [r for r in missing if int(r["id"]) not in pre]
        fresh = iter(encoder.encode(item_inputs(to_encode, images), batch_size=batch_size)
                     if to_encode else ())
        vecs = [pre[int(r["id"])] if int(r["id"]) in pre else next(fresh) for r in missing]
        session.execute(insert(ItemEmbedding), [
            {"item_id": int(r["id"]), "encoder_id": encoder.encoder_id, "dim": int(v.shape[0]),
             "vector": np.ascontiguousarray(v, dtype=np.float32).tobytes(),
             **({"created_at": now} if now else {})}
            for r, v in zip(missing, vecs, strict=True)])
        for r, v in zip(missing, vecs, strict=True):
            have[int(r["id"])] = v.astype(np.float32)
    if not ids:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return np.stack([have[i] for i in ids]).astype(np.float32)


#: (item id, encoder id) -> (the inputs' fingerprint, vector), encoded before the routing
#: transaction (`prepare_embeddings`, handed over with `prepared_vectors`)
_PREPARED_VECTORS: contextvars.ContextVar[
    Mapping[tuple[int, str], tuple[tuple[str, str, str | None], np.ndarray]] | None] = \
    contextvars.ContextVar("quorum_prepared_vectors", default=None)


def _fingerprint(row: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """What an item's vector is computed from (its image by reference: the bytes are the
    ones prefetched for that reference, handed to both encodings)."""
    image = row.get("image")
    return (row.get("title") or "", row.get("description") or "",
            str(image) if image else None)


def prepared_vectors(vectors: Mapping[tuple[int, str], tuple[Any, np.ndarray]]
                     ) -> contextlib.AbstractContextManager[None]:
    """Within the block, `ensure_embeddings` stores these vectors (when the item's inputs
    are unchanged) instead of encoding again."""
    return bound(_PREPARED_VECTORS, vectors)


def prepare_embeddings(*, sessions: sessionmaker[Session], item_ids: Sequence[int],
                       images: Mapping[tuple[int, str], Any] | None = None,
                       ml: MLSettings | None = None
                       ) -> dict[tuple[int, str], tuple[tuple[str, str, str | None], np.ndarray]]:
    """Encode the items of ``item_ids`` that have no vector yet for the configured
    encoder, outside any transaction: one short read-only session for their inputs, then
    the encoder with no session open, so no lock is held while it runs (SQLite's write
    lock above all). ``images``: ``backend.media.images.prefetch``'s result. Nothing is
    stored here; the routing transaction stores what it uses (`ensure_embeddings`)."""
    ml = ml or get_ml_settings()
    if not item_ids or not ml.enabled:
        return {}
    encoder = get_encoder(ml)
    with read_only(sessions) as session:
        todo = missing_embeddings(session=session, item_ids=sorted(set(item_ids)),
                                  encoder_id=encoder.encoder_id)
        rows = _rows_for(session, todo) if todo else []
    if not rows:
        return {}
    loaded = images or {}
    by_id = {int(r["id"]): loaded[(int(r["id"]), str(r["image"]))].content
             for r in rows if r.get("image") and (int(r["id"]), str(r["image"])) in loaded}
    vecs = encoder.encode(item_inputs(rows, by_id), batch_size=ml.batch_size)
    return {(int(r["id"]), encoder.encoder_id):
            (_fingerprint(r), np.ascontiguousarray(v, dtype=np.float32))
            for r, v in zip(rows, vecs, strict=True)}


_safety: list[Any] = []


def get_safety_scorer() -> Any:
    """The process's NudeNet scorer (optional ``safety`` extra; a clear error without it)."""
    from ml.safety import SafetyScorer

    with _lock:
        if not _safety:
            _safety.append(SafetyScorer())
        return _safety[0]


# ------------------------------------------------------------------ index
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:120]


class LocalVectorStore:
    """An ``ml.index`` index on disk plus the watermark of the decision log it has seen.

    Several processes may share the directory: a process reloads when another one saved
    a newer version (``state.json``'s ``generation``).
    """

    def __init__(self, directory: Path, *, encoder_id: str, dim: int, kind: str,
                 ef_search: int = 512) -> None:
        self.directory = directory
        self.encoder_id = encoder_id
        self.dim = dim
        self.kind = kind
        self.ef_search = ef_search
        self.index: Any = None
        self.watermark = 0
        self.generation = -1
        self.lock = threading.RLock()

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"generation": 0, "watermark": 0}

    def refresh(self) -> None:
        from ml.index import create_index, load_index

        with self.lock:
            state = self._read_state()
            if self.index is not None and state["generation"] == self.generation:
                return
            index_dir = self.directory / "index"
            if (index_dir / "meta.json").exists():
                self.index = load_index(index_dir, encoder_id=self.encoder_id)
            else:
                self.index = create_index(self.kind, dim=self.dim, encoder_id=self.encoder_id)
            if hasattr(self.index, "ef_search"):
                self.index.ef_search = self.ef_search
            self.watermark = int(state["watermark"])
            self.generation = int(state["generation"])

    def add(self, ids: np.ndarray, vectors: np.ndarray, watermark: int) -> None:
        with self.lock:
            self.refresh()
            if len(ids):
                self.index.add(np.asarray(ids, dtype=np.int64), vectors)
            self.directory.mkdir(parents=True, exist_ok=True)
            self.index.save(self.directory / "index")
            self.watermark = watermark
            self.generation += 1
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"generation": self.generation, "watermark": watermark,
                                       "encoder_id": self.encoder_id, "size": len(self.index)}))
            tmp.replace(self.state_path)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            self.refresh()
            if self.index is None or len(self.index) == 0:
                n = len(vectors)
                return np.full((n, k), -1, dtype=np.int64), np.full((n, k), np.inf, np.float32)
            return self.index.search(vectors, k)

    def __len__(self) -> int:
        self.refresh()
        return len(self.index) if self.index is not None else 0


def get_store(*, encoder: Any, settings: Settings | None = None, ml: MLSettings | None = None,
              session: Session | None = None) -> Any:
    """pgvector on PostgreSQL with the extension (shared by every process, bound to
    ``session``), else the in-process index under ``data_dir``."""
    settings = settings or get_settings()
    ml = ml or get_ml_settings()
    if session is not None and ml.use_pgvector:
        from backend.ml_adapter import pgvector

        if pgvector.available(session):
            return pgvector.PgVectorStore(session, encoder_id=encoder.encoder_id,
                                          dim=encoder.dim)
    directory = settings.data_dir / "index" / _slug(encoder.encoder_id)
    key = str(directory.resolve())
    with _lock:
        if key not in _stores:
            _stores[key] = LocalVectorStore(directory, encoder_id=encoder.encoder_id,
                                            dim=encoder.dim, kind=ml.index_kind,
                                            ef_search=ml.index_ef_search)
        return _stores[key]


def sync_index(*, session: Session, encoder: Any, store: Any,
               batch_size: int = 64, encode: bool = True) -> int:
    """Add the items that got a human verdict since the store's watermark. Returns how many.

    ``encode=False`` (a web request) never runs the encoder: the index grows only up to
    the first new verdict whose item has no stored vector, and the watermark stops just
    before it, so that item and the ones after it join at the next sync that may encode
    (``quorum embed``, routing, calibration)."""
    store.refresh()
    top = session.scalar(select(func.max(DecisionEvent.id)).where(
        DecisionEvent.is_human.is_(True))) or 0
    if top <= store.watermark:
        return 0
    events = session.execute(select(DecisionEvent.id, DecisionEvent.item_id).where(
        DecisionEvent.is_human.is_(True), DecisionEvent.id > store.watermark,
        DecisionEvent.id <= top).order_by(DecisionEvent.id)).tuples().all()
    if not encode:
        missing = set(missing_embeddings(session=session, encoder_id=encoder.encoder_id,
                                         item_ids=sorted({i for _, i in events})))
        if missing:
            first = min(e for e, i in events if i in missing)
            top = first - 1
            events = [(e, i) for e, i in events if e < first]
            if top <= store.watermark:
                return 0
    item_ids = sorted({i for _, i in events})
    rows = _rows_for(session, item_ids)
    vecs = ensure_embeddings(session=session, rows=rows, encoder=encoder, batch_size=batch_size)
    store.add(np.asarray([r["id"] for r in rows], dtype=np.int64), vecs, watermark=top)
    return len(rows)


def human_labels(session: Session, ids: Sequence[int]) -> dict[int, str]:
    ids = [int(i) for i in ids if i >= 0]
    if not ids:
        return {}
    return dict(session.execute(select(ItemStatus.item_id, ItemStatus.label).where(
        in_values(session, ItemStatus.item_id, ids), ItemStatus.is_human.is_(True),
        ItemStatus.label.is_not(None))).tuples().all())


# ------------------------------------------------------------------ classifier
def zero_shot(encoder: Any, policy: Policy) -> tuple[Any, str]:
    from ml.classifier import ZeroShotClassifier

    key = f"zero-shot:{encoder.encoder_id}:{policy.name}:{policy.version}"
    with _lock:
        if key not in _classifiers:
            descriptions = {lab.key: f"{lab.title}: {lab.description}"
                            for lab in policy.labels if lab.kind != "error"}
            _classifiers[key] = ZeroShotClassifier.from_label_descriptions(encoder, descriptions)
        return _classifiers[key], key


def active_classifier(*, session: Session, encoder: Any, policy: Policy) -> tuple[Any, str]:
    """The active trained classifier for this encoder, else the zero-shot start."""
    from ml.classifier import load_classifier

    art = session.scalar(select(ModelArtifact).where(
        ModelArtifact.is_active.is_(True), ModelArtifact.encoder_id == encoder.encoder_id)
        .order_by(ModelArtifact.version.desc()).limit(1))
    if art is None or not Path(art.path).exists():
        return zero_shot(encoder, policy)
    key = f"classifier:v{art.version}:{art.path}"
    with _lock:
        if key not in _classifiers:
            _classifiers[key] = load_classifier(art.path, encoder_id=encoder.encoder_id)
        return _classifiers[key], f"classifier-v{art.version}"


def classifier_by_id(*, session: Session, encoder: Any, policy: Policy,
                     model_id: str) -> Any | None:
    """The classifier a threshold set was calibrated for (``classifier-v<N>`` or the
    zero-shot start of this encoder and policy), or None when it cannot be loaded here
    (another encoder, a missing file)."""
    from ml.classifier import load_classifier

    if model_id.startswith("zero-shot:"):
        model, key = zero_shot(encoder, policy)
        return model if key == model_id else None
    match = re.fullmatch(r"classifier-v(\d+)", model_id)
    if match is None:
        return None
    art = session.scalar(select(ModelArtifact).where(
        ModelArtifact.version == int(match.group(1)),
        ModelArtifact.encoder_id == encoder.encoder_id))
    if art is None or not Path(art.path).exists():
        return None
    key = f"classifier:v{art.version}:{art.path}"
    with _lock:
        if key not in _classifiers:
            _classifiers[key] = load_classifier(art.path, encoder_id=encoder.encoder_id)
        return _classifiers[key]


def signal_frame(rows: Sequence[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame([{s: (r.get(s) if r.get(s) is not None else np.nan) for s in SIGNALS}
                         for r in rows], columns=SIGNALS, dtype=float)


def item_texts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The text the encoder embeds for each row (``ml.inputs.item_text``), for text models."""
    from ml.inputs import ItemInput, item_text

    return [item_text(ItemInput(title=r.get("title") or "", description=r.get("description")
                                or "")) for r in rows]


def resolve_families(spec: str | Sequence[str]) -> list[str]:
    """Family names from ``QUORUM_ML_FAMILIES`` / ``--families`` (comma-separated, or
    ``auto``: ``ml.families.default_families``); an unknown name is a sentence."""
    from ml.families import FAMILIES, default_families

    if isinstance(spec, str) and len(spec) > 200:
        raise ValidationFailed("the family list is longer than 200 characters")
    items = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [p for p in items if p]
    if not items or items == ["auto"]:
        return list(default_families())
    unknown = [p for p in items if p not in FAMILIES]
    if unknown:
        raise ValidationFailed(f"unknown classifier famil{'ies' if len(unknown) > 1 else 'y'} "
                               f"{', '.join(unknown)}; use {', '.join(FAMILIES)} or auto")
    return list(dict.fromkeys(items))


def family_config(name: str, ml: MLSettings, *, seed: int = 0) -> dict[str, Any]:
    """Settings that shape a family (only the fine-tuned MiniLM has any)."""
    if name != "minilm_finetune":
        return {}
    layers = ml.finetune_layers.strip()
    if layers != "auto" and not (layers.isdigit() and 0 <= int(layers) <= 6):
        raise ValidationFailed(f"QUORUM_ML_FINETUNE_LAYERS must be auto or 0..6, not "
                               f"{ml.finetune_layers!r}")
    return {"min_labels": ml.finetune_min_labels, "epochs": ml.finetune_epochs,
            "trainable_layers": layers if layers == "auto" else int(layers), "seed": seed}


def train(*, session: Session, settings: Settings | None = None, ml: MLSettings | None = None,
          policy: Policy | None = None, test_size: float = 0.2, seed: int = 0,
          now: datetime | None = None, families: Sequence[str] | None = None,
          refit: bool = False) -> ModelArtifact:
    """Train the classifier on final human verdicts (+ golden items' known labels),
    evaluate it on a held-out share, save a versioned artifact and make it active.

    The classifier family (``ml.families``: ``embedding``, ``text_stack``,
    ``minilm_finetune``; ``families`` or ``QUORUM_ML_FAMILIES``) is picked on
    the training share by out-of-fold calibration: the one whose backed cut-offs (at the
    deciding target, per label and per policy label group) decide more wins; the
    comparison is kept in the artifact's ``metrics["family_selection"]``.

    ``refit``: after the held-out evaluation, fit the deployed model (the chosen family) on
    *all* labels (the metrics stay those of the held-out share, measured before the refit).
    Calibration scores a trained model out of fold with the same configuration, so a refit
    model is calibrated as honestly as one fitted on 80 %, and it has seen every label.

    A new model is a challenger: it decides only once a calibration run has backed a
    threshold set for it and that set is applied (``ml_adapter/hooks.py``)."""
    from backend.calibration.settings import get_calibration_settings
    from ml.families import create_family, select_family

    settings, ml = settings or get_settings(), ml or get_ml_settings()
    policy = policy or get_policy()
    names = resolve_families(families if families is not None else ml.families)
    classes = set(policy.class_keys)
    labelled = dict(session.execute(select(ItemStatus.item_id, ItemStatus.label).where(
        ItemStatus.is_human.is_(True), ItemStatus.label.in_(sorted(classes)))).tuples().all())
    for item_id, label in session.execute(select(Item.id, Item.golden_label).where(
            Item.is_golden.is_(True), Item.golden_label.in_(sorted(classes)))):
        labelled.setdefault(item_id, label)
    if len(labelled) < ml.min_train_verdicts:
        raise ValidationFailed(f"{len(labelled)} items have a final human verdict; training "
                               f"needs at least {ml.min_train_verdicts} "
                               "(QUORUM_ML_MIN_TRAIN_VERDICTS)")
    y_all = np.asarray(list(labelled.values()), dtype=object)
    if len(set(y_all)) < 2:
        raise ValidationFailed("training needs verdicts of at least two labels")
    encoder = get_encoder(ml)
    ids = list(labelled)
    cols = [Item.id, Item.title, Item.description, Item.image, *[getattr(Item, s)
                                                                for s in SIGNALS]]
    rows_by_id = {r.id: r._asdict() for r in session.execute(select(*cols).where(
        Item.id.in_(ids)))}
    rows = [rows_by_id[i] for i in ids]
    X = ensure_embeddings(session=session, rows=rows, encoder=encoder, batch_size=ml.batch_size)
    sig = signal_frame(rows)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    n_test = max(1, int(len(ids) * test_size))
    test, fit_idx = order[:n_test], order[n_test:]
    texts = item_texts(rows)
    fit_texts = [texts[i] for i in fit_idx]
    cal = get_calibration_settings()
    from threadpoolctl import threadpool_limits

    def build(name: str) -> Any:
        return create_family(name, encoder_id=encoder.encoder_id, signal_names=SIGNALS,
                             log_signals=SIGNALS, **family_config(name, ml, seed=seed))

    with threadpool_limits(1):  # BLAS threads fighting over 2 cores made fits ~20x slower
        selection = select_family(
            {name: build(name) for name in names}, X[fit_idx], list(y_all[fit_idx]),
            signals=sig.iloc[fit_idx], texts=fit_texts,
            target_precision=cal.target_precision,
            confidence=cal.confidence, method=cal.bound_method, folds=cal.folds, seed=seed,
            groups=policy.group_members, ok_label=policy.ok_key)
        model = build(selection.chosen)
        model.fit(X[fit_idx], list(y_all[fit_idx]), signals=sig.iloc[fit_idx], texts=fit_texts)
    log.info("classifier family %s chosen: %s", selection.chosen,
             {k: v.get("auto_share") for k, v in selection.families.items()})
    metrics = model.evaluate(X[test], list(y_all[test]), signals=sig.iloc[test],
                             texts=[texts[i] for i in test])
    metrics["family_selection"] = selection.to_dict()
    metrics = json.loads(json.dumps(metrics, default=float))
    train_size = len(fit_idx)
    if refit:
        model = build(selection.chosen)
        with threadpool_limits(1):
            model.fit(X, list(y_all), signals=sig, texts=texts)
        train_size = len(ids)
        metrics["refit_on_all"] = True
    version = (session.scalar(select(func.max(ModelArtifact.version))) or 0) + 1
    path = settings.data_dir / "models" / f"classifier-v{version}"
    model.save(path, metrics=metrics)
    for old in session.scalars(select(ModelArtifact).where(ModelArtifact.is_active.is_(True))):
        old.is_active = False
    art = ModelArtifact(version=version, kind=model.kind, encoder_id=encoder.encoder_id,
                        labels=list(model.labels_), train_size=train_size,
                        metrics={**metrics, "held_out": int(n_test)}, path=str(path),
                        is_active=True, **({"created_at": now} if now else {}))
    session.add(art)
    session.flush()
    return art


def neighbours_for_item(*, session: Session, item_id: int, k: int = 5,
                        settings: Settings | None = None) -> list[dict[str, Any]]:
    """An item's nearest items with human verdicts, with their distances (for people).
    An item without a stored vector is encoded (and stored) first."""
    return _neighbours(session=session, item_id=item_id, k=k, settings=settings,
                       encode=True) or []


def stored_neighbours_for_item(*, session: Session, item_id: int, k: int = 5,
                               settings: Settings | None = None
                               ) -> list[dict[str, Any]] | None:
    """Like `neighbours_for_item` but never runs the encoder (for a web request): None
    when the item has no stored vector for the current encoder (items ingested while ML
    was off, until ``quorum embed``); the index grows only by stored vectors
    (``sync_index(encode=False)``)."""
    return _neighbours(session=session, item_id=item_id, k=k, settings=settings,
                       encode=False)


def _neighbours(*, session: Session, item_id: int, k: int, settings: Settings | None,
                encode: bool) -> list[dict[str, Any]] | None:
    ml = get_ml_settings()
    encoder = get_encoder(ml)
    rows = _rows_for(session, [item_id])
    if not rows:
        return []
    if not encode and missing_embeddings(session=session, item_ids=[item_id],
                                         encoder_id=encoder.encoder_id):
        return None
    vec = ensure_embeddings(session=session, rows=rows, encoder=encoder)
    store = get_store(encoder=encoder, settings=settings, ml=ml, session=session)
    sync_index(session=session, encoder=encoder, store=store, encode=encode)
    ids, dists = store.search(vec, k + 1)
    labels = human_labels(session, ids[0].tolist())
    found = [(int(i), float(d)) for i, d in zip(ids[0], dists[0], strict=True)
             if i >= 0 and int(i) != item_id and int(i) in labels][:k]
    info = {r.id: r for r in session.execute(select(Item.id, Item.title, Item.image).where(
        Item.id.in_([i for i, _ in found])))}
    return [{"item_id": i, "distance": round(d, 4), "label": labels[i],
             "title": info[i].title, "image": info[i].image} for i, d in found]
