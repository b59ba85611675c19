"""The audit trail page: filters, keyset paging that neither skips nor repeats, rule edits
shown as diffs, bounded parameters."""

from __future__ import annotations

import re

from sqlalchemy import select

from backend.db import session_scope
from backend.users.models import AuditEntry, User
from tests.web.test_web import PASSWORD, login


def _fill(settings, n: int) -> None:  # noqa: ANN001
    with session_scope(settings.resolved_database_url) as s:
        ana = s.query(User).filter_by(username="ana").one()
        for i in range(n):
            s.add(AuditEntry(user_id=ana.id if i % 2 else None,
                             action="rule.mode" if i % 3 else "user.grants",
                             target_type="rule" if i % 3 else "user", target_id=str(i)))
        s.add(AuditEntry(user_id=ana.id, action="rule.edit", target_type="rule",
                         target_id="7", details={
                             "from": {"expression": "item.price < 1.0", "version": 1},
                             "to": {"expression": "item.price < 0.5", "version": 2}}))


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr data-id="(\d+)">', html)]


def test_audit_trail_pages_without_gaps_or_repeats(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    _fill(settings, 250)
    login(client, "ana")
    with session_scope(settings.resolved_database_url) as s:
        expected = list(s.scalars(select(AuditEntry.id).order_by(AuditEntry.id.desc())))
    assert len(expected) >= 251
    seen: list[int] = []
    url: str | None = "/admin/audit?limit=40"
    while url:
        page = client.get(url)
        assert page.status_code == 200
        seen += _ids(page.text)
        m = re.search(r'href="([^"]+)" rel="next"', page.text)
        url = m.group(1).replace("&amp;", "&") if m else None
        assert len(seen) <= len(expected)
    assert seen == expected  # newest first, every entry once


def test_audit_trail_filters_by_action_person_and_target(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    _fill(settings, 30)
    login(client, "ana")
    grants = client.get("/admin/audit?action=user.&limit=500").text
    assert "user.grants" in grants and "rule.mode" not in grants.split("<tbody>")[1]
    mine = client.get("/admin/audit?who=ana&action=rule.mode&limit=500").text
    rows = mine.split("<tbody>")[1].count("<tr data-id")
    assert rows == len([i for i in range(30) if i % 2 and i % 3])
    one = client.get("/admin/audit?target_type=rule&target_id=7").text
    assert one.split("<tbody>")[1].count("<tr data-id") == 2  # rule.mode #7 and the edit of rule 7
    # the edit is shown as a diff of its condition
    assert '<span class="del">-item.price &lt; 1.0</span>' in one
    assert '<span class="add">+item.price &lt; 0.5</span>' in one
    # a LIKE wildcard in the filter is a plain character
    assert "No entry matches" in client.get("/admin/audit?action=%25").text


def test_audit_parameters_are_bounded(client, make_user, settings):
    make_user("ana", "analyst", password=PASSWORD)
    make_user("mia", "moderator", ["MANUAL"], password=PASSWORD)
    login(client, "ana")
    assert client.get("/admin/audit?limit=100000").status_code == 422
    assert client.get(f"/admin/audit?before={2**70}").status_code == 422
    assert client.get("/admin/audit?action=" + "x" * 101).status_code == 422
    assert client.get("/admin/audit?since=not-a-date").status_code == 422
    client.cookies.clear()
    login(client, "mia")
    assert client.get("/admin/audit").status_code == 403


def test_command_line_actions_show_and_filter_by_their_actor(client, make_user, settings):
    from backend.users.service import audit

    make_user("ana", "analyst", password=PASSWORD)
    with session_scope(settings.resolved_database_url) as s:
        audit(session=s, user=None, action="thresholds.apply", target_type="threshold_set",
              target_id=3, details={"previous": 2, "via": "cli", "actor": "cli:ops"})
        audit(session=s, user=None, action="users.create", target_type="user",
              target_id="zed", details={"via": "cli"})  # the actor is filled in
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "users.create"))
        assert entry.details["actor"].startswith("cli:")
        other = entry.details["actor"]
    login(client, "ana")
    page = client.get("/admin/audit?who=cli:ops").text
    assert "<td>thresholds.apply</td>" in page and "<td>users.create</td>" not in page
    assert "<td>cli:ops</td>" in page
    assert "<td>users.create</td>" in client.get(f"/admin/audit?who={other}").text
