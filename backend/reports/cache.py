"""A cache for built report pages (the threshold report takes seconds to build).

Pages are files under ``DATA_DIR/reports/cache/`` so every API worker shares them. A page
is served while its key still matches (the latest classifier and similarity calibration
runs, the active threshold set, the policy version) and it is younger than
``report_cache_seconds``; a new calibration run or an applied set changes the key, so the
page is rebuilt at once. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import hashlib
import html as html_lib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.calibration.models import CalibrationRun, ThresholdSet
from backend.policy import Policy
from backend.settings import Settings


@dataclass
class Cached:
    html: str
    built_at: datetime
    cached: bool


def report_key(*, session: Session, policy: Policy) -> str:
    runs = session.execute(select(CalibrationRun.kind, func.max(CalibrationRun.id))
                           .group_by(CalibrationRun.kind).order_by(CalibrationRun.kind)).all()
    sets = session.execute(select(func.max(ThresholdSet.id), func.count(ThresholdSet.id))).one()
    active = session.scalar(select(ThresholdSet.id).where(ThresholdSet.state == "active")
                            .order_by(ThresholdSet.id.desc()).limit(1))
    raw = f"{runs}|{tuple(sets)}|{active}|{policy.name}:{policy.version}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _path(settings: Settings, name: str, key: str):  # noqa: ANN202
    return settings.data_dir / "reports" / "cache" / f"{name}-{key}.html"


def read(*, settings: Settings, name: str, key: str) -> Cached | None:
    path = _path(settings, name, key)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    built = datetime.fromtimestamp(st.st_mtime, UTC)
    if (datetime.now(UTC) - built).total_seconds() > settings.report_cache_seconds:
        return None
    return Cached(html=path.read_text(encoding="utf-8"), built_at=built, cached=True)


def write(*, settings: Settings, name: str, key: str, html: str) -> Cached:
    path = _path(settings, name, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f"{name}-*.html"):  # one page per report
        if old != path:
            old.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.replace(tmp, path)
    return Cached(html=html, built_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
                  cached=False)


def with_note(page: Cached, *, panel: str = "", header: str = "") -> str:
    """The page with ``header`` (the app header rendered for this request: who is logged
    in, the nav links), a line saying when it was built and how to rebuild it, then
    ``panel`` (HTML rendered for this request: the report's Apply / Restore buttons). The
    cached body itself is never re-rendered."""
    when = page.built_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    note = header + (f'<p class="cache-note">'
            f'Built {html_lib.escape(when)}{" (from the cache)" if page.cached else ""} · '
            f'<a href="/reports">all reports</a> · <a href="/queues">queues</a> · '
            f'<a href="?fresh=1">rebuild now</a></p>') + panel
    body = page.html.find("<body")
    if body < 0:
        return note + page.html
    end = page.html.find(">", body) + 1
    return page.html[:end] + note + page.html[end:]
