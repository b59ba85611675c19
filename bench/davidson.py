"""Trusted automation on the Davidson tweets, through the product path, against a baseline.

Run from the repository root::

    .venv/bin/python bench/davidson.py                 # binary and three-label policies
    .venv/bin/python bench/davidson.py --policy binary # one of them
    .venv/bin/python bench/davidson.py --embed-only    # just fill the embedding cache

What it does (fixed seed 0):

1. reads ``../shared/data/davidson_hate_offensive/labeled_data.csv`` in place
   (read-only; ``class``: 0 hate, 1 offensive, 2 neither);
2. splits it 70 / 30, stratified: the *history* a team brings, and *new* tweets;
3. embeds every tweet once with MiniLM (``ml.encoders.create_encoder("minilm")``, the
   product's text encoder), cached as ``var/bench/davidson_minilm.npy``; the bench
   stores these vectors as the items' embeddings (``item_embeddings``) so the loaded
   machine is spared re-encoding the same texts for each policy;
4. per policy — ``binary``: ``ok`` / ``action`` (hate or offensive); ``three``: ``ok`` /
   ``offensive`` / ``hate`` with the group ``action: [offensive, hate]`` — in a fresh
   SQLite database: ``import_verdicts`` (the history as human decisions of source
   ``import``), ``train`` (the family picked by out-of-fold backed automation),
   then per target (95 %, 99 %) ``run_calibration`` + ``thresholds.apply`` and ingest
   of the new tweets (``items.service.ingest`` + ``route_items``) under a source of
   their own; ``train`` refits the chosen family on the whole history
   (``quorum train --refit``); the reuse distance is calibrated (``kind="similarity"``)
   on pairs of labelled neighbours in the imported history (no pair task) at the same
   target and used only where backed;
5. measures on the new tweets: the share decided automatically, and the precision of
   each side ("needs action": decided label in the group; "OK") against the true label;
6. runs the baseline in the same script: TF-IDF 1-2-gram + logistic regression, the
   same lower-bound threshold rule on out-of-fold scores of the history, fitted on the
   whole history, applied to the new tweets.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA_REL = Path("shared") / "data" / "davidson_hate_offensive" / "labeled_data.csv"
CACHE = ROOT / "var" / "bench" / "davidson_minilm.npy"
SEED = 0
TARGETS = (0.95, 0.99)
CLASS_NAMES = {0: "hate", 1: "offensive", 2: "ok"}
POLICIES = {
    "binary": {"name": "davidson-binary", "version": 1,
               "labels": [{"key": "ok", "kind": "ok", "description": "an ordinary tweet"},
                          {"key": "action", "kind": "bad",
                           "description": "an offensive or hateful tweet"}]},
    "three": {"name": "davidson-three", "version": 1,
              "labels": [{"key": "ok", "kind": "ok", "description": "an ordinary tweet"},
                         {"key": "offensive", "kind": "bad",
                          "description": "an offensive tweet"},
                         {"key": "hate", "kind": "bad", "description": "a hateful tweet"}],
              "groups": {"action": ["offensive", "hate"]}},
}


def data_path() -> Path:
    """``../shared/data/...`` beside the checkout (a worktree may sit one level deeper)."""
    for base in ROOT.parents:
        if (base / DATA_REL).exists():
            return base / DATA_REL
    raise SystemExit(f"../{DATA_REL} not found beside the repository")


def load_tweets() -> pd.DataFrame:
    """Columns ``row`` (the file's first column), ``tweet`` and ``cls`` (0/1/2)."""
    frame = pd.read_csv(data_path(), index_col=0)
    return pd.DataFrame({"row": frame.index.astype(str), "tweet": frame["tweet"].astype(str),
                         "cls": frame["class"].to_numpy()})


def embeddings(texts: list[str], encoder_name: str = "minilm") -> np.ndarray:
    """MiniLM vectors of ``texts`` (cached under ``var/bench/``); ``hashing`` for a smoke
    run (weightless, not cached)."""
    if encoder_name == "hashing":
        from ml.encoders import create_encoder

        return create_encoder("hashing").encode_texts(texts)
    if CACHE.exists():
        cached = np.load(CACHE)
        if cached.shape[0] == len(texts):
            return cached
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.encoders import create_encoder
    from ml.inputs import ItemInput

    started = time.perf_counter()
    encoder = create_encoder("minilm")
    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    sorted_vecs = encoder.encode([ItemInput(title=texts[i]) for i in order], batch_size=128)
    vectors[order] = sorted_vecs
    print(f"embedded {len(texts)} tweets in {time.perf_counter() - started:.1f} s")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.save(CACHE, vectors)
    return vectors


def split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    history, new = train_test_split(index, test_size=0.3, random_state=SEED, stratify=y)
    return np.sort(history), np.sort(new)


def label_of(cls: int, policy: str) -> str:
    if policy == "binary":
        return "ok" if cls == 2 else "action"
    return CLASS_NAMES[int(cls)]


def sides(decided: pd.DataFrame) -> dict[str, float]:
    """Automatic share and per-side precision of decisions (``label``, ``true``; labels
    in the binary 'action'/'ok' sense or policy labels)."""
    bad = decided["label"] != "ok"
    true_bad = decided["true"] != "ok"
    out = {"n_action": int(bad.sum()), "n_ok": int((~bad).sum())}
    out["precision_action"] = float(true_bad[bad].mean()) if bad.any() else float("nan")
    out["precision_ok"] = float((~true_bad[~bad]).mean()) if (~bad).any() else float("nan")
    return out


# ------------------------------------------------------------------ product path
def backed_only(result: dict, bands: dict) -> dict:
    """The proposed bands with every deciding cut-off the run did not back set to 1.0
    (never reached): an unbacked default must not decide (issue 12, item 1; the shadow
    helper's work makes this the product's own rule)."""
    for label, info in result.get("labels", {}).items():
        upper = info["cuts"][0]
        if info[upper]["threshold"] is None:
            bands[label] = {**bands[label], upper: 1.0}
    return bands


def oof_depth(scores: pd.DataFrame) -> str:
    """What the calibration run's out-of-fold scores of the history say about each side:
    precision of the k tweets the model is surest are OK (by ``P(ok)``) and of the k
    surest to need action (by ``1 - P(ok)``), the figures that cap a backed share."""
    p_ok = scores["p_ok"].to_numpy()
    is_ok = (scores["true_label"] == "ok").to_numpy()
    order = np.argsort(-p_ok, kind="stable")
    ok_part = ", ".join(f"top {k}: {is_ok[order[:k]].mean():.1%}"
                        for k in (50, 100, 200, 400, 800, 1600) if k <= len(order))
    n_action = int((~is_ok).sum())
    rev = order[::-1]
    depth = [(f, int(f * n_action)) for f in (0.85, 0.90, 0.93, 0.95, 0.97)]
    act_part = ", ".join(f"{f:.0%} of action tweets ({k}): {(~is_ok[rev[:k]]).mean():.2%}"
                         for f, k in depth)
    return (f"out of fold on the history ({len(scores)} tweets, {n_action} need action): "
            f"surest OK — {ok_part}; surest action — {act_part}")


def _store_vectors(session, item_ids: list[int], vectors: np.ndarray, encoder_id: str) -> None:
    from sqlalchemy import insert

    from backend.items.models import ItemEmbedding

    session.execute(insert(ItemEmbedding), [
        {"item_id": int(i), "encoder_id": encoder_id, "dim": int(v.shape[0]),
         "vector": np.ascontiguousarray(v, dtype=np.float32).tobytes()}
        for i, v in zip(item_ids, vectors, strict=True)])


def product_run(policy_name: str, tweets: pd.DataFrame, vectors: np.ndarray,
                history: np.ndarray, new: np.ndarray, encoder_name: str = "minilm",
                targets: tuple[float, ...] = TARGETS, families: list[str] | None = None
                ) -> list[dict[str, object]]:
    import yaml
    from sqlalchemy import select

    from backend.calibration import thresholds
    from backend.calibration.service import run_calibration
    from backend.calibration.settings import get_calibration_settings
    from backend.db import dispose_engines, session_scope, utcnow
    from backend.decisions.models import ItemStatus
    from backend.imports.service import import_verdicts
    from backend.items.models import Item
    from backend.items.service import ingest
    from backend.migrate import upgrade
    from backend.ml_adapter import service as ml_service
    from backend.ml_adapter.settings import get_ml_settings
    from backend.policy import get_policy, load_policy
    from backend.routing.pipeline import route_items
    from backend.settings import get_settings

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="quorum-davidson-") as tmp:
        policy_file = Path(tmp) / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(POLICIES[policy_name]))
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        os.environ.update({
            "QUORUM_DATABASE_URL": url, "QUORUM_DATA_DIR": str(Path(tmp) / "var"),
            "QUORUM_POLICY_PATH": str(policy_file), "QUORUM_ML_ENABLED": "true",
            "QUORUM_ML_ENCODER": encoder_name, "QUORUM_ML_INDEX_KIND": "exact",
            "QUORUM_CALIBRATION_TARGET_PRECISION": str(max(TARGETS)),
            "HF_HUB_OFFLINE": "1"})
        for cache in (get_settings, get_ml_settings, get_calibration_settings, load_policy):
            cache.cache_clear()
        ml_service._classifiers.clear()
        ml_service._stores.clear()
        upgrade(url)
        policy = get_policy()
        encoder_id = ml_service.get_encoder().encoder_id
        print(f"\n== policy {policy_name}: labels {policy.keys}, groups {policy.group_members}")

        started = time.perf_counter()
        hist_rows = [{"source": "history", "external_id": tweets["row"].iat[i],
                      "title": tweets["tweet"].iat[i],
                      "label": label_of(tweets["cls"].iat[i], policy_name),
                      "decided_by": "crowdflower"} for i in history]
        with session_scope() as session:
            for start in range(0, len(hist_rows), 5000):
                res = import_verdicts(session=session, rows=hist_rows[start:start + 5000],
                                      policy=policy)
                assert res.stored and not res.errors, res.errors[:3]
            ids = dict(session.execute(select(Item.external_id, Item.id).where(
                Item.source == "history")).tuples().all())
            _store_vectors(session, [ids[tweets["row"].iat[i]] for i in history],
                           vectors[history], encoder_id)
        with session_scope() as session:  # re-import: nothing changes
            again = import_verdicts(session=session, rows=hist_rows[:5000], policy=policy)
        print(f"imported {len(hist_rows)} verdicts in {time.perf_counter() - started:.1f} s "
              f"(re-import of 5,000: {again.decisions} decisions, {again.unchanged} unchanged)")

        started = time.perf_counter()
        with session_scope() as session:
            art = ml_service.train(session=session, refit=True, families=families)
            selection = art.metrics["family_selection"]
        shares = {k: v.get("auto_share") for k, v in selection["families"].items()}
        print(f"trained classifier-v{art.version} ({art.kind}) in "
              f"{time.perf_counter() - started:.1f} s; out-of-fold backed automation at "
              f"{selection['target_precision']:.0%}: "
              + ", ".join(f"{k} {v:.1%}" for k, v in shares.items() if v is not None))

        for target in targets:
            started = time.perf_counter()
            with session_scope() as session:
                run = run_calibration(session=session, overrides={"target_precision": target})
                version = run.result["proposed_version"]
                if target == targets[0]:  # the same out-of-fold scores at every target
                    from backend.calibration.service import read_frame

                    frame = read_frame(run, "scores")
                    if frame is not None and "p_ok" in frame.columns:
                        print(oof_depth(frame))
                if version is None:
                    print(f"target {target:.0%}: nothing backed ({run.message})")
                    continue
                # the reuse distance from pairs of labelled neighbours in the history
                sim = run_calibration(session=session, kind="similarity",
                                      overrides={"reuse_target_precision": target})
                reuse = sim.result.get("backing", {}).get("threshold") \
                    if sim.result["proposed_version"] is not None else None
                print(f"target {target:.0%}: reuse distance "
                      + (f"{reuse:g} backed on {sim.result['pairs']['history']} history pairs "
                         f"(lower bound {sim.result['backing']['lower']:.4f})" if reuse
                         else f"not backed ({sim.message})"))
                ts = thresholds.get_version(session=session, version=version)
                bands = backed_only(run.result, dict(ts.bands))
                backing = dict(ts.backing or {})
                if reuse is not None:
                    backing[thresholds.REUSE_KEY] = sim.result["backing"]
                ts = thresholds.propose(session=session, policy=policy, bands=bands,
                                        reuse_distance=reuse, auto_decide=list(ts.auto_decide),
                                        calibration_run_id=run.id, note="bench",
                                        model_id=ts.model_id, encoder_id=ts.encoder_id,
                                        backing=backing)
                thresholds.apply(session=session, version=ts.version)
            cal_s = time.perf_counter() - started
            source = f"new{int(target * 100)}"
            new_rows = [{"source": source, "external_id": tweets["row"].iat[i],
                         "title": tweets["tweet"].iat[i]} for i in new]
            started = time.perf_counter()
            with session_scope() as session:
                now = utcnow()
                result, created = ingest(session=session, rows=new_rows, policy=policy, now=now)
                ids = dict(session.execute(select(Item.external_id, Item.id).where(
                    Item.source == source)).tuples().all())
                _store_vectors(session, [ids[tweets["row"].iat[i]] for i in new],
                               vectors[new], encoder_id)
                summary = route_items(session=session, item_ids=created, now=now,
                                      settings=get_settings())
                status = session.execute(select(Item.external_id, ItemStatus.label,
                                                ItemStatus.source).join(
                    ItemStatus, ItemStatus.item_id == Item.id).where(
                    Item.source == source)).all()
            ingest_s = time.perf_counter() - started
            truth = {tweets["row"].iat[i]: label_of(tweets["cls"].iat[i], policy_name)
                     for i in new}
            frame = pd.DataFrame([{"label": lab, "true": truth[ext], "source": src}
                                  for ext, lab, src in status])
            auto = frame[frame["source"].isin(["rule", "similarity", "classifier"])]
            row: dict[str, object] = {"model": f"quorum {art.kind}", "policy": policy_name,
                                      "target": target, "auto_share": len(auto) / len(frame),
                                      **sides(auto.assign(
                                          label=np.where(auto["label"] == "ok", "ok", "action"),
                                          true=np.where(auto["true"] == "ok", "ok", "action")))}
            if policy_name == "three":
                acted = auto[auto["label"] != "ok"]
                row["reason_right"] = float((acted["label"] == acted["true"]).mean()) \
                    if len(acted) else float("nan")
            rows.append(row)
            print(f"target {target:.0%}: calibrated + applied in {cal_s:.1f} s; ingested and "
                  f"routed {len(new_rows)} new tweets in {ingest_s:.1f} s; decided "
                  f"{dict(summary.decided)}, queued {dict(summary.queued)}")
        dispose_engines()
    return rows


# ------------------------------------------------------------------ baseline
def baseline_run(policy_name: str, tweets: pd.DataFrame, history: np.ndarray,
                 new: np.ndarray, targets: tuple[float, ...] = TARGETS
                 ) -> list[dict[str, object]]:
    """TF-IDF 1-2-gram + LR; thresholds by the same rule on out-of-fold history scores."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from ml.calibration import choose_threshold, label_curve
    from ml.families import group_curve, group_scores

    texts = tweets["tweet"].to_numpy()
    y = np.array([label_of(c, policy_name) for c in tweets["cls"]], dtype=object)
    classes = sorted(set(y))

    def fit_predict(fit: np.ndarray, test: np.ndarray) -> np.ndarray:
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        model = LogisticRegression(C=10.0, max_iter=2000)
        model.fit(vec.fit_transform(texts[fit]), y[fit])
        return model.predict_proba(vec.transform(texts[test]))

    oof = np.zeros((len(history), len(classes)))
    for fit, test in StratifiedKFold(5, shuffle=True, random_state=SEED).split(
            history, y[history]):
        oof[test] = fit_predict(history[fit], history[test])
    p_new = fit_predict(history, new)
    rows = []
    group = POLICIES[policy_name].get("groups", {}).get("action")
    for target in targets:
        decided = np.full(len(new), None, dtype=object)
        if group:  # the group decides "action"; OK by its own band
            curve = group_curve(oof, list(y[history]), classes, group)
            ch = choose_threshold(curve, target_precision=target)
            if ch.threshold is not None:
                s = group_scores(p_new, classes, group)
                top = np.asarray(classes, dtype=object)[p_new.argmax(1)]
                decided = np.where(s >= ch.threshold, np.where(np.isin(top, group), top,
                                                               group[0]), decided)
        for j, lab in enumerate(classes):
            if group and lab in group:
                continue
            ch = choose_threshold(label_curve(proba=oof, y_true=list(y[history]),
                                              classes=classes, label=lab),
                                  target_precision=target)
            if ch.threshold is None:
                continue
            hit = (p_new.argmax(1) == j) & (p_new[:, j] >= ch.threshold) & (decided == None)  # noqa: E711
            decided = np.where(hit, lab, decided)
        mask = decided != None  # noqa: E711
        auto = pd.DataFrame({"label": np.where(decided[mask] == "ok", "ok", "action"),
                             "true": np.where(y[new][mask] == "ok", "ok", "action")})
        row: dict[str, object] = {"model": "tfidf+LR baseline", "policy": policy_name,
                                  "target": target, "auto_share": mask.mean(), **sides(auto)}
        if group:
            acted = decided[mask] != "ok"
            row["reason_right"] = float((decided[mask][acted] == y[new][mask][acted]).mean())
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-only", action="store_true")
    parser.add_argument("--policy", choices=[*POLICIES, "all"], default="all")
    parser.add_argument("--limit", type=int, default=None,
                        help="a stratified sample of this many tweets (smoke runs)")
    parser.add_argument("--encoder", choices=["minilm", "hashing"], default="minilm",
                        help="hashing: a weightless smoke run (figures mean nothing)")
    parser.add_argument("--targets", default=",".join(str(t) for t in TARGETS),
                        help="comma-separated precision targets (default 0.95,0.99)")
    parser.add_argument("--families", default=None,
                        help="comma-separated candidate families for train (default all)")
    args = parser.parse_args()
    targets = tuple(float(t) for t in args.targets.split(","))
    families = args.families.split(",") if args.families else None
    from threadpoolctl import threadpool_limits

    tweets = load_tweets()
    started = time.perf_counter()
    vectors = embeddings(tweets["tweet"].tolist(), args.encoder)
    if args.limit:
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(np.arange(len(tweets)), train_size=args.limit,
                                   random_state=SEED, stratify=tweets["cls"])
        keep = np.sort(keep)
        tweets, vectors = tweets.iloc[keep].reset_index(drop=True), vectors[keep]
    print(f"embeddings {vectors.shape} ready in {time.perf_counter() - started:.1f} s")
    if args.embed_only:
        return
    history, new = split(tweets["cls"].to_numpy())
    print(f"history {len(history)} tweets, new {len(new)} (seed {SEED}); class mix "
          f"{np.round(np.bincount(tweets['cls']) / len(tweets), 3).tolist()} (hate, "
          "offensive, neither)")
    rows: list[dict[str, object]] = []
    for name in POLICIES if args.policy == "all" else [args.policy]:
        with threadpool_limits(1):
            started = time.perf_counter()
            rows += baseline_run(name, tweets, history, new, targets)
            print(f"baseline for {name} in {time.perf_counter() - started:.1f} s")
        rows += product_run(name, tweets, vectors, history, new, args.encoder, targets,
                            families)
    table = pd.DataFrame(rows).sort_values(["policy", "target", "model"])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for (policy, target), part in table.groupby(["policy", "target"]):
        base = part[part["model"].str.startswith("tfidf")]["auto_share"]
        ours = part[part["model"].str.startswith("quorum")]
        if len(base) and len(ours):
            print(f"{policy} at {target:.0%}: automatic share {ours['auto_share'].iat[0]:.1%} "
                  f"vs baseline {base.iat[0]:.1%} "
                  f"({(ours['auto_share'].iat[0] - base.iat[0]) * 100:+.1f} points); "
                  f"precision action {ours['precision_action'].iat[0]:.2%}, "
                  f"ok {ours['precision_ok'].iat[0]:.2%}")


if __name__ == "__main__":
    main()
