"""Replay: re-run the pipeline on stored items with another threshold set; nothing is
written, what would change is reported and scored against human verdicts."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from backend.calibration import service as calibration
from backend.calibration import thresholds
from backend.db import utcnow
from backend.decisions.models import DecisionEvent
from backend.items.models import ItemScore
from backend.queues.models import Task
from backend.routing.models import ShadowOutcome
from backend.routing.replay import replay
from tests.backend.conftest import human_verdict, route_rows
from tests.backend.test_limits import small_body_client  # noqa: F401
from tests.conftest import item_row


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def test_replay_with_a_backed_set_shows_the_flips_and_writes_nothing(session, settings,
                                                                     policy, ml_on):
    from backend.ml_adapter.service import train

    start = utcnow() - timedelta(minutes=1)
    rows = [item_row(100 + i, title=("Cotton t-shirt size " if i % 2 else "Cannabis seeds "
                                     "strain ") + str(i)) for i in range(70)]
    ids, _ = route_rows(session, settings, policy, rows)
    for i, item_id in enumerate(ids[:60]):  # the last 10 stay with people
        human_verdict(session, item_id, "ok" if i % 2 else "prohibited")
    train(session=session)
    run = calibration.run_calibration(session=session, kind="classifier",
                                      overrides={"target_precision": 0.9})
    version = run.result["proposed_version"]
    before = {m: _count(session, m) for m in (DecisionEvent, Task, ItemScore, ShadowOutcome)}
    result = replay(session=session, since=start, settings=settings, now=utcnow(),
                    thresholds_version=version)
    assert {m: _count(session, m) for m in before} == before  # nothing was written
    assert thresholds.active_threshold_set(session=session, policy=policy).version != version
    rows = result.rows.set_index("item_id")
    assert len(rows) == 70 and result.thresholds_version == version
    # stored: everything went to people (fresh install); replayed: the backed bands decide
    assert rows["before"].str.startswith("queue:").all()
    flipped = rows[rows["changed"]]
    assert len(flipped) > 0 and flipped["after"].str.startswith("classifier:").all()
    right, judged = result.precision("after")
    assert judged > 0 and right / judged >= 0.9
    # an item is never offered its own verdict by the neighbour index
    assert not rows["after"].str.startswith("similarity:").any()
    # with the active set (defaults, nothing backed) replay decides nothing either
    same = replay(session=session, since=start, settings=settings, now=utcnow())
    assert same.rows["after"].str.startswith("queue:").all()
    assert same.precision("after") == (0, 0)


def test_replay_cli_prints_and_writes_csv(settings, tmp_path):
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the services it calls run on both backends")
    import json

    import pandas as pd

    from tests.backend.test_cli import quorum

    jl = tmp_path / "items.jsonl"
    jl.write_text("\n".join(json.dumps(item_row(i)) for i in range(3)))
    assert quorum(settings, "ingest", str(jl)).returncode == 0
    out = tmp_path / "replay.csv"
    r = quorum(settings, "replay", "--since", "2000-01-01", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "replayed 3 item(s)" in r.stdout and "would change" in r.stdout
    assert len(pd.read_csv(out)) == 3
    r = quorum(settings, "replay", "--since", "yesterday")
    assert r.returncode == 2 and "--since" in r.stderr and "Traceback" not in r.stderr
    r = quorum(settings, "replay", "--since", "2000-01-01", "--thresholds", "42")
    assert r.returncode == 3


def _rule_then_off(session, policy):  # noqa: ANN001, ANN202
    """A decide rule (rule-set v1), then switched off (v2): today's rules decide nothing."""
    from backend.rules.schemas import RuleCreate
    from backend.rules.service import create_rule, update_rule

    rule = create_rule(session=session, policy=policy, allow_live=True, data=RuleCreate(
        name="seeds", expression='item.title.contains("seeds")', action="decide",
        label="prohibited", mode="active"))
    update_rule(session=session, rule=rule, data={"mode": "off"}, policy=policy)
    session.flush()


def test_replay_with_an_earlier_rule_set_by_source_and_label(session, settings, policy):
    from backend.errors import NotFound
    from backend.routing.replay import report, rule_set_version

    start = utcnow() - timedelta(minutes=1)
    _rule_then_off(session, policy)
    assert rule_set_version(session=session) == 2
    rows = [item_row(i, title=("Cannabis seeds " if i < 12 else "Desk lamp ") + str(i))
            for i in range(20)]
    ids, summary = route_rows(session, settings, policy, rows)
    assert summary.decided == {}  # the rule is off today
    for i, item_id in enumerate(ids[:10]):  # people: 9 prohibited, 1 ok among the seeds
        human_verdict(session, item_id, "ok" if i == 0 else "prohibited")
    events = _count(session, DecisionEvent)
    result = replay(session=session, since=start, settings=settings, now=utcnow(),
                    rules_version=1)
    assert _count(session, DecisionEvent) == events  # nothing written
    assert session.scalar(select(func.count()).select_from(DecisionEvent).where(
        DecisionEvent.source == "rule")) == 0
    table = result.by_source_label().set_index(["source", "label"])
    row = table.loc[("rule", "prohibited")]
    assert (row["before"], row["after"], row["gained"], row["lost"]) == (0, 12, 12, 0)
    assert (row["judged"], row["right"]) == (10, 9) and row["precision"] == 0.9
    assert 0.5 < row["precision_low"] < 0.9 < row["precision_high"] <= 1.0
    p, lo, hi = result.interval("after")
    assert p == 0.9 and lo == row["precision_low"]
    rep = report(result)
    assert rep["changed"] == 12 and rep["rules_version"] == 1
    assert rep["changes"][0] == {"before": "queue:NEW_PRODUCTS", "after": "rule:prohibited",
                                 "items": 12}
    # today's rule set (v2) changes nothing, and an unknown version is a sentence
    same = replay(session=session, since=start, settings=settings, now=utcnow(),
                  rules_version=2)
    assert not same.rows["changed"].any()
    with pytest.raises(NotFound, match="rule-set version 3"):
        replay(session=session, since=start, settings=settings, now=utcnow(), rules_version=3)


RULES_FILE = """
rules:
  - name: seeds
    expression: item.title.contains("seeds")
    action: decide
    label: prohibited
"""


def test_replay_with_a_candidate_rules_file_writes_nothing(session, settings, policy,
                                                          tmp_path):
    from backend.errors import ValidationFailed
    from backend.routing.replay import report, rule_set_version
    from backend.rules.models import Rule

    start = utcnow() - timedelta(minutes=1)
    rows = [item_row(i, title=("Cannabis seeds " if i < 12 else "Desk lamp ") + str(i))
            for i in range(20)]
    ids, summary = route_rows(session, settings, policy, rows)
    assert summary.decided == {}  # no rule yet
    for i, item_id in enumerate(ids[:10]):  # people: 9 prohibited, 1 ok among the seeds
        human_verdict(session, item_id, "ok" if i == 0 else "prohibited")
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(RULES_FILE)
    events = _count(session, DecisionEvent)
    result = replay(session=session, since=start, settings=settings, now=utcnow(),
                    rules_file=candidate)
    # rolled back: the rule was never loaded, no event, no rule version
    assert _count(session, DecisionEvent) == events
    assert _count(session, Rule) == 0 and rule_set_version(session=session) == 0
    row = result.by_source_label().set_index(["source", "label"]).loc[("rule", "prohibited")]
    assert (row["before"], row["after"], row["gained"]) == (0, 12, 12)
    assert (row["judged"], row["right"]) == (10, 9)
    rep = report(result)
    assert rep["rules_file"] == "candidate.yaml"
    assert rep["rules_loaded"]["created"] == ["seeds"] and rep["changed"] == 12
    # a bad rule refuses the replay with the file's problems, and nothing is loaded
    candidate.write_text(RULES_FILE.replace("label: prohibited", "label: nonsense"))
    with pytest.raises(ValidationFailed, match="refused, nothing loaded"):
        replay(session=session, since=start, settings=settings, now=utcnow(),
               rules_file=candidate)
    assert _count(session, Rule) == 0


def test_replay_cli_with_a_rules_file(settings, tmp_path):
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("the CLI is exercised once; the services it calls run on both backends")
    import json

    from tests.backend.test_cli import quorum

    jl = tmp_path / "items.jsonl"
    jl.write_text("\n".join(json.dumps(item_row(i, title=f"Cannabis seeds {i}"))
                            for i in range(3)))
    assert quorum(settings, "ingest", str(jl)).returncode == 0
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(RULES_FILE)
    r = quorum(settings, "replay", "--since", "2000-01-01", "--rules-file", str(candidate))
    assert r.returncode == 0, r.stderr
    assert "candidate rules candidate.yaml (1 created" in r.stdout
    assert "3 would change" in r.stdout and "rule:prohibited" in r.stdout
    r = quorum(settings, "rules", "list")
    assert "seeds" not in r.stdout  # the candidate was not loaded
    candidate.write_text(RULES_FILE.replace("label: prohibited", "label: nonsense"))
    r = quorum(settings, "replay", "--since", "2000-01-01", "--rules-file", str(candidate))
    assert r.returncode == 2 and "nonsense" in r.stderr and "Traceback" not in r.stderr
    r = quorum(settings, "replay", "--since", "2000-01-01", "--rules-file",
               str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "not a file" in r.stderr


def test_replay_with_another_model_shadow_until_backed(session, settings, policy, ml_on):
    """A model the threshold set was not backed for decides nothing in replay; the
    ``shadow`` column says what it would have decided."""
    from backend.errors import NotFound, ValidationFailed
    from backend.ml_adapter.service import train

    start = utcnow() - timedelta(minutes=1)
    rows = [item_row(300 + i, title=("Cotton t-shirt size " if i % 2 else "Cannabis seeds "
                                     "strain ") + str(i)) for i in range(60)]
    ids, _ = route_rows(session, settings, policy, rows)
    for i, item_id in enumerate(ids[:50]):
        human_verdict(session, item_id, "ok" if i % 2 else "prohibited")
    train(session=session)  # classifier-v1
    run = calibration.run_calibration(session=session, kind="classifier",
                                      overrides={"target_precision": 0.9})
    version = run.result["proposed_version"]
    train(session=session)  # classifier-v2: the set was not calibrated for it
    backed = replay(session=session, since=start, settings=settings, now=utcnow(),
                    thresholds_version=version, model_id="classifier-v1")
    assert backed.model_id == "classifier-v1"
    assert backed.rows["after"].str.startswith("classifier:").any()
    other = replay(session=session, since=start, settings=settings, now=utcnow(),
                   thresholds_version=version, model_id="v2")
    assert other.model_id == "classifier-v2"
    assert not other.rows["after"].str.startswith("classifier:").any()  # shadow: people
    shadow = other.rows["shadow"].dropna()
    assert len(shadow) > 0 and shadow.str.contains("classifier:").any()
    table = other.by_source_label()
    assert table[table["source"] == "classifier"]["shadow"].sum() == \
        shadow.str.contains("classifier:").sum()
    with pytest.raises(NotFound, match="classifier-v9"):
        replay(session=session, since=start, settings=settings, now=utcnow(), model_id="v9")
    with pytest.raises(ValidationFailed, match="classifier-vN"):
        replay(session=session, since=start, settings=settings, now=utcnow(), model_id="gpt")


def test_replay_api_and_page(client, make_user, settings):
    import re

    from backend.db import session_scope
    from backend.policy import get_policy
    from tests.conftest import auth
    from tests.web.test_web import PASSWORD, login

    _, token = make_user("ana", "analyst", password=PASSWORD)
    _, mod = make_user("mo", "moderator", ["MANUAL"])
    with session_scope(settings.resolved_database_url) as s:
        _rule_then_off(s, get_policy())
        ids, _ = route_rows(s, settings, get_policy(),
                            [item_row(i, title=f"Cannabis seeds {i}") for i in range(3)])
        human_verdict(s, ids[0], "prohibited")
    r = client.get("/api/v1/replay", params={"since": "2000-01-01", "rules": "v1"},
                   headers=auth(token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["replayed"] == 3 and body["changed"] == 3 and body["rules_version"] == 1
    want = {"source": "rule", "label": "prohibited", "after": 3, "judged": 1, "right": 1}
    assert {k: body["by_source_label"][0][k] for k in want} == want
    assert body["after"]["precision"] == 1.0 and body["after"]["precision_low"] < 1.0
    bad = client.get("/api/v1/replay", params={"since": "yesterday"}, headers=auth(token))
    assert bad.status_code == 422 and "since" in bad.json()["message"]
    gone = client.get("/api/v1/replay", params={"since": "2000-01-01", "thresholds": "v42"},
                      headers=auth(token))
    assert gone.status_code == 404
    assert client.get("/api/v1/replay", params={"since": "2000-01-01"},
                      headers=auth(mod)).status_code == 403
    # the page: POST (CSRF) → 303 → GET with the table
    login(client, "ana")
    page = client.get("/replay")
    assert page.status_code == 200 and "Replay" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    no_csrf = client.post("/replay", data={"since": "2000-01-01"}, follow_redirects=False)
    assert no_csrf.status_code == 403
    r = client.post("/replay", data={"since": "2000-01-01", "rules": "v1", "csrf": csrf},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/replay?since=")
    shown = client.get(r.headers["location"])
    assert shown.status_code == 200
    assert "3 item(s) replayed" in shown.text and "3 would change" in shown.text
    assert "rule:prohibited" in shown.text and "100.0 %" in shown.text
    bad = client.post("/replay", data={"since": "soon", "csrf": csrf}, follow_redirects=False)
    assert bad.status_code == 422 and "since" in bad.text


def test_replay_draft_rules_api_and_page_match_the_cli_rules_file(client, make_user,
                                                                   settings, tmp_path):
    """POST /api/v1/replay and the page's draft textarea replay the same rules as
    ``quorum replay --rules-file`` and show the same flips by source and label."""
    import re

    import pandas as pd
    import yaml

    from backend.db import session_scope
    from backend.policy import get_policy
    from backend.rules.models import Rule
    from tests.conftest import auth
    from tests.web.test_web import PASSWORD, login

    _, token = make_user("ana", "analyst", password=PASSWORD)
    _, mod = make_user("mo", "moderator", ["MANUAL"])
    with session_scope(settings.resolved_database_url) as s:
        ids, _ = route_rows(s, settings, get_policy(), [
            item_row(i, title=("Cannabis seeds " if i < 4 else "Desk lamp ") + str(i))
            for i in range(6)])
        human_verdict(s, ids[0], "prohibited")
        human_verdict(s, ids[1], "ok")
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(RULES_FILE)
    draft = yaml.safe_load(RULES_FILE)["rules"]
    keys = ["source", "label", "before", "after", "gained", "lost", "judged", "right"]

    r = client.post("/api/v1/replay", json={"since": "2000-01-01", "rules": draft},
                    headers=auth(token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["replayed"] == 6 and body["changed"] == 4
    assert body["rules_file"] == "draft rules" and body["rules_loaded"]["created"] == ["seeds"]
    api = [{k: row[k] for k in keys} for row in body["by_source_label"]]
    assert api == [{"source": "rule", "label": "prohibited", "before": 0, "after": 4,
                    "gained": 4, "lost": 0, "judged": 2, "right": 1}]
    assert [c["after"] for c in body["changes"]] == ["rule:prohibited"]
    assert sum(c["items"] for c in body["changes"]) == 4
    # the same as the service behind `--rules-file`, on both backends
    with session_scope(settings.resolved_database_url) as s:
        res = replay(session=s, since=utcnow() - timedelta(days=1), settings=settings,
                     now=utcnow(), rules_file=candidate)
        assert res.by_source_label()[keys].to_dict(orient="records") == api
        assert s.scalar(select(func.count()).select_from(Rule)) == 0  # nothing written
    if settings.resolved_database_url.startswith("sqlite"):  # and as the CLI prints it
        from tests.backend.test_cli import quorum

        out = tmp_path / "cli.csv"
        cli = quorum(settings, "replay", "--since", "2000-01-01", "--rules-file",
                     str(candidate), "--out", str(out))
        assert cli.returncode == 0, cli.stderr
        assert "4 would change" in cli.stdout and "1 created" in cli.stdout
        printed = pd.read_csv(out.with_suffix(".summary.csv"))[keys]
        assert printed.to_dict(orient="records") == api

    # a bad rule: 422 with a sentence naming the rule and the problem, never 500
    bad = client.post("/api/v1/replay", json={"since": "2000-01-01", "rules": [
        {**draft[0], "label": "nonsense"}]}, headers=auth(token))
    assert bad.status_code == 422, bad.text
    assert "rule seeds" in bad.json()["message"] and "nonsense" in bad.json()["message"]
    broken = client.post("/api/v1/replay", json={"since": "2000-01-01", "rules": [
        {**draft[0], "expression": "item.title.contains("}]}, headers=auth(token))
    assert broken.status_code == 422 and "rule seeds" in broken.json()["message"]
    # bounds: too many rules, too long a condition (422), too large a body (413)
    many = client.post("/api/v1/replay", json={"since": "2000-01-01", "rules": [
        {**draft[0], "name": f"r{i}"} for i in range(501)]}, headers=auth(token))
    assert many.status_code == 422
    long = client.post("/api/v1/replay", json={"since": "2000-01-01", "rules": [
        {**draft[0], "expression": "item.title == '" + "x" * 20_000 + "'"}]},
        headers=auth(token))
    assert long.status_code == 422 and "rule seeds" in long.json()["message"]
    # a moderator may not
    assert client.post("/api/v1/replay", json={"since": "2000-01-01", "rules": draft},
                       headers=auth(mod)).status_code == 403
    with session_scope(settings.resolved_database_url) as s:
        assert s.scalar(select(func.count()).select_from(Rule)) == 0

    # the page: the draft textarea, POST (CSRF) → the result at once, escaped
    login(client, "ana")
    page = client.get("/replay")
    assert 'name="draft"' in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert client.post("/replay", data={"since": "2000-01-01", "draft": RULES_FILE},
                       follow_redirects=False).status_code == 403  # no CSRF
    shown = client.post("/replay", data={"since": "2000-01-01", "draft": RULES_FILE,
                                         "csrf": csrf}, follow_redirects=False)
    assert shown.status_code == 200, shown.text
    assert "6 item(s) replayed" in shown.text and "4 would change" in shown.text
    assert "rule:prohibited" in shown.text and "1 created" in shown.text
    table = re.search(r'<table class="replay-by-source">.*?</table>', shown.text, re.S).group(0)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", table)
    assert cells[:8] == ["rule", "prohibited", "0", "4", "4", "0", "0", "2"]
    evil = RULES_FILE.replace("label: prohibited", "label: <script>x</script>")
    bad_page = client.post("/replay", data={"since": "2000-01-01", "draft": evil,
                                            "csrf": csrf}, follow_redirects=False)
    assert bad_page.status_code == 422 and "rule seeds" in bad_page.text
    assert "<script>x</script>" not in bad_page.text
    echoed = client.post("/replay", data={"since": "2000-01-01", "csrf": csrf,
                                          "draft": RULES_FILE + "# <b>hi</b>\n"})
    assert "<b>hi</b>" not in echoed.text and "&lt;b&gt;hi&lt;/b&gt;" in echoed.text


def test_replay_draft_rules_body_over_the_limit_is_413(small_body_client, make_user):  # noqa: F811
    from tests.conftest import auth

    _, token = make_user("ana", "analyst")
    rules = [{"name": f"r{i}", "expression": "item.title.contains('" + "x" * 900 + "')",
              "action": "decide", "label": "prohibited"} for i in range(30)]  # ~30 KB
    r = small_body_client.post("/api/v1/replay", json={"since": "2000-01-01", "rules": rules},
                               headers=auth(token))
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_draft_rules_replay_on_top_of_an_earlier_rule_set(client, make_user, settings):
    """``base_rules`` names the rule set the draft goes on top of: v1 (seeds rule on)
    plus a draft lamp rule flips both kinds of item; today's rules (seeds off) only the
    lamps. Without the field the old API refused the body (422)."""
    from backend.db import session_scope
    from backend.policy import get_policy
    from tests.conftest import auth

    _, token = make_user("ana", "analyst")
    with session_scope(settings.resolved_database_url) as s:
        _rule_then_off(s, get_policy())
        route_rows(s, settings, get_policy(), [
            item_row(i, title=("Cannabis seeds " if i < 3 else "Desk lamp ") + str(i))
            for i in range(5)])
    draft = [{"name": "lamps", "expression": 'item.title.contains("lamp")',
              "action": "decide", "label": "ok"}]

    def post(**extra):  # noqa: ANN003, ANN202
        return client.post("/api/v1/replay", json={"since": "2000-01-01", "rules": draft,
                                                   **extra}, headers=auth(token))

    today = post()
    assert today.status_code == 200, today.text
    assert {c["after"]: c["items"] for c in today.json()["changes"]} == {"rule:ok": 2}
    on_v1 = post(base_rules="v1")
    assert on_v1.status_code == 200, on_v1.text
    body = on_v1.json()
    assert body["rules_version"] == 1 and body["rules_loaded"]["created"] == ["lamps"]
    assert {c["after"]: c["items"] for c in body["changes"]} == {"rule:ok": 2,
                                                                 "rule:prohibited": 3}
    gone = post(base_rules="v9")
    assert gone.status_code == 404 and "rule-set version 9" in gone.json()["message"]
    bad = post(base_rules="latest")
    assert bad.status_code == 422 and "base_rules must be a version" in bad.json()["message"]
