"""Idempotent push: project → (training) → pool → tasks → open, resumable after a crash.

The store records intent before and results after every remote call under
``"project:<project_key>"`` and ``"pool:<plan.key>"``. On a re-run, push first
trusts the store, then reconciles with Toloka: it finds a project / training /
pool carrying ``metadata.quorum_key == key`` and lists the pool's tasks by their
``input_values.item_id`` before creating anything, so a crash between "pool
created" and "tasks uploaded" (or in the middle of an upload) resumes without
duplicates. Task uploads themselves use toloka-kit's idempotent ``operation_id``,
so an HTTP retry of the same request is answered from the first operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import toloka.client as tc

from crowd.config import CrowdConfig
from crowd.store import Store
from crowd.toloka import MARKER, TaskKind, build_pool, build_project, build_tasks, build_training

UPLOAD_CHUNK = 5000


@dataclass(frozen=True)
class PushPlan:
    """What to put in front of the crowd.

    ``items``: ``item_id`` (unique) plus card columns ``title, description, image, price,
    link`` (labels) or ``item_a, item_b`` (pairs, card dicts). ``golden``: same columns
    plus ``label`` (the known answer); they become control tasks. ``training``: same
    shape as ``golden``, uploaded to a training pool when ``config.training``.
    """

    key: str
    policy: Sequence[Mapping[str, str]]
    items: pd.DataFrame
    golden: pd.DataFrame | None = None
    training: pd.DataFrame | None = None
    config: CrowdConfig = field(default_factory=CrowdConfig)
    kind: TaskKind = "label"
    project_key: str | None = None

    @property
    def project_store_key(self) -> str:
        return f"project:{self.project_key or 'quorum-' + self.kind}"


@dataclass(frozen=True)
class PushResult:
    project_id: str
    pool_id: str
    training_id: str | None
    task_ids: dict[str, str]  # item_id -> Toloka task id (real and control tasks)
    created: int  # tasks created by this call
    reused: int  # tasks found already in the pool


def _marked(objs: Iterable[object], key: str) -> str | None:
    for obj in objs:
        if key in ((getattr(obj, "metadata", None) or {}).get(MARKER) or []):
            return str(obj.id)  # type: ignore[attr-defined]
    return None


def _holds(get: Callable[[str], object], object_id: str, key: str) -> bool:
    """Whether this Toloka still has the recorded object, carrying our key (a restarted
    emulator, or another Toloka behind the same URL, may not)."""
    try:
        return _marked([get(object_id)], key) is not None
    except tc.exceptions.DoesNotExistApiError:
        return False


def _ensure(
    store: Store,
    skey: str,
    field_name: str,
    *,
    find: Callable[[], str | None],
    create: Callable[[], str],
    get: Callable[[str], object],
    key: str,
) -> str:
    record = store.get(skey) or {}
    if record.get(field_name) and _holds(get, str(record[field_name]), key):
        return str(record[field_name])
    found = find()
    if found is None:
        store.put(skey, {**record, f"{field_name}_phase": "creating"})
        found = create()
    store.put(
        skey, {**(store.get(skey) or {}), field_name: found, f"{field_name}_phase": "created"}
    )
    return found


def _upload(
    client: tc.TolokaClient,
    *,
    store: Store,
    skey: str,
    pool_id: str,
    items: pd.DataFrame,
    kind: TaskKind,
    overlap: int | None,
) -> tuple[dict[str, str], int, int]:
    """Create the tasks of ``items`` missing from ``pool_id``; returns ids, created, reused."""
    existing = {
        str(t.input_values["item_id"]): str(t.id)
        for t in client.get_tasks(pool_id=pool_id, batch_size=10_000)
    }
    wanted = items.drop_duplicates("item_id")
    missing = wanted[~wanted["item_id"].astype(str).isin(existing)]
    ids = {k: v for k, v in existing.items() if k in set(wanted["item_id"].astype(str))}
    created = 0
    for start in range(0, len(missing), UPLOAD_CHUNK):
        chunk = missing.iloc[start : start + UPLOAD_CHUNK]
        tasks = build_tasks(pool_id=pool_id, items=chunk, kind=kind, overlap=overlap)
        params = tc.task.CreateTasksParameters(
            allow_defaults=True, open_pool=False, skip_invalid_items=False, async_mode=True
        )
        store.put(
            skey,
            {
                **(store.get(skey) or {}),
                "upload": {"operation_id": str(params.operation_id), "n": len(tasks)},
            },
        )
        result = client.create_tasks(tasks, parameters=params)
        for task in result.items.values():
            ids[str(task.input_values["item_id"])] = str(task.id)
        created += len(result.items)
        store.put(skey, {**(store.get(skey) or {}), "n_tasks": len(ids), "upload": None})
    return ids, created, len(wanted) - len(missing)


def _images(frame: pd.DataFrame | None) -> Iterable[object]:
    if frame is None or not len(frame):
        return []
    if "image" in frame:
        return list(frame["image"])
    return [card.get("image") for col in ("item_a", "item_b") if col in frame
            for card in frame[col] if isinstance(card, Mapping)]


def check_image_urls(plan: PushPlan) -> None:
    """Refuse a plan whose task inputs carry an image that Toloka cannot open: anything but
    an http(s) URL (a local path, a ``file:`` URL). Raises ``ValueError``."""
    for frame in (plan.items, plan.golden, plan.training):
        for image in _images(frame):
            if image is None or (isinstance(image, float) and pd.isna(image)) or image == "":
                continue
            if not str(image).lower().startswith(("http://", "https://")):
                raise ValueError(f"task inputs carry image URLs Toloka can open, not "
                                 f"{str(image)[:80]!r}")


def push(client: tc.TolokaClient, *, plan: PushPlan, store: Store) -> PushResult:
    """Create (or find) the project, training, pool and tasks of ``plan``, then open the pool."""
    check_image_urls(plan)
    cfg, skey = plan.config, f"pool:{plan.key}"
    pkey = plan.project_store_key.split(":", 1)[1]
    project_id = _ensure(
        store,
        plan.project_store_key,
        "project_id",
        find=lambda: _marked(client.get_projects(status="ACTIVE"), pkey),
        get=client.get_project,
        key=pkey,
        create=lambda: str(
            client.create_project(build_project(key=pkey, policy=plan.policy, kind=plan.kind)).id
        ),
    )
    training_id = None
    if cfg.training and plan.training is not None and len(plan.training):
        training_id = _ensure(
            store,
            skey,
            "training_id",
            find=lambda: _marked(client.get_trainings(project_id=project_id), plan.key),
            get=client.get_training,
            key=plan.key,
            create=lambda: str(
                client.create_training(
                    build_training(project_id=project_id, key=plan.key, config=cfg)
                ).id
            ),
        )
        _upload(
            client,
            store=store,
            skey=f"training:{plan.key}",
            pool_id=training_id,
            items=plan.training,
            kind=plan.kind,
            overlap=None,
        )
        client.open_training(training_id)
    pool_id = _ensure(
        store,
        skey,
        "pool_id",
        find=lambda: _marked(client.get_pools(project_id=project_id), plan.key),
        get=client.get_pool,
        key=plan.key,
        create=lambda: str(
            client.create_pool(
                build_pool(project_id=project_id, key=plan.key, config=cfg, training_id=training_id)
            ).id
        ),
    )
    items = plan.items.assign(label=None) if "label" in plan.items else plan.items
    frames = [items] + ([plan.golden] if plan.golden is not None and len(plan.golden) else [])
    everything = pd.concat(frames, ignore_index=True)
    task_ids, created, reused = _upload(
        client,
        store=store,
        skey=skey,
        pool_id=pool_id,
        items=everything,
        kind=plan.kind,
        overlap=cfg.overlap,
    )
    client.open_pool(pool_id)
    store.put(skey, {**(store.get(skey) or {}), "project_id": project_id, "phase": "open"})
    return PushResult(
        project_id=project_id,
        pool_id=pool_id,
        training_id=training_id,
        task_ids=task_ids,
        created=created,
        reused=reused,
    )
