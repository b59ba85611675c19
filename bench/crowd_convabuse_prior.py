"""ConvAbuse through the product's replay with the classifier's score as each item's prior.

    .venv/bin/python bench/crowd_convabuse_prior.py [--configs post-0.95-gold-rate,...]

`docs/crowd.md` shows that with the crowd's base rate as the prior no stopping rule
reaches MV-all's accuracy at ≤ 50% of its answers on ConvAbuse: half the utterances must
be decided on one answer, and a lone answer agrees with the majority 96.4% of the time.
This measures the other way out it names: a classifier that tells the contested
utterances from the clear ones. TF-IDF (word 1–2-grams and character 2–5-grams) +
logistic regression on the utterance and the agent's turn before it, **out of fold** (5
folds over utterances; each fold's scores come from a model fitted on the other folds'
MV-all labels, as a team's history would train it), its probabilities handed to
`crowd.replay.replay(scores=...)` (``CrowdConfig.classifier="prior"``). One row per
configuration, without and with the prior, same seed; MV-all and DS-all beside.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import crowd_convabuse  # noqa: E402
import crowd_replay  # noqa: E402
from crowd_replay import CONFIGS, _row  # noqa: E402

from crowd.replay import replay  # noqa: E402


def utterance_texts() -> pd.Series:
    """The text of each utterance (the agent's turn, then the user's), by item key."""
    d = pd.read_csv(crowd_convabuse.DATA / "ConvAbuseEMNLPfull.csv")
    keys = crowd_convabuse.load(crowd_convabuse.DATA)["task_key"]
    text = d["agent"].astype(str) + " || " + d["user"].astype(str)
    texts = pd.Series(text.to_numpy(), index=keys.to_numpy())
    return texts[~texts.index.duplicated()]


def out_of_fold_scores(texts: pd.Series, reference: pd.Series, *, seed: int = 0
                       ) -> pd.DataFrame:
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    items = texts.index.to_numpy()
    out = np.zeros((len(items), 2))
    folds = KFold(n_splits=5, shuffle=True, random_state=seed)
    for train, test in folds.split(items):
        labelled = [i for i in train if items[i] in reference.index]
        words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2,
                                sublinear_tf=True)
        fit_text = texts.iloc[labelled]
        x = hstack([words.fit_transform(fit_text), chars.fit_transform(fit_text)]).tocsr()
        y = (reference.reindex(items[labelled]) == "abusive").to_numpy().astype(int)
        model = LogisticRegression(C=4.0, max_iter=2000).fit(x, y)
        xt = hstack([words.transform(texts.iloc[test]), chars.transform(texts.iloc[test])])
        p = model.predict_proba(xt.tocsr())[:, 1]
        out[test, 0], out[test, 1] = 1 - p, p
    return pd.DataFrame(out, index=pd.Index(items, name="item"), columns=["ok", "abusive"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="post-0.95-gold-rate,post-0.99-gold-rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reliability", action="store_true")
    args = parser.parse_args()
    crowd_replay.RELIABILITY = args.reliability
    rec = crowd_replay.recording("convabuse")
    reference = rec.dropna(subset=["gold"]).drop_duplicates("item").set_index("item")["gold"]
    texts = utterance_texts().reindex(sorted(rec["item"].unique())).fillna("")
    started = time.perf_counter()
    scores = out_of_fold_scores(texts, reference, seed=args.seed)
    top = scores.max(axis=1)
    predicted = scores.idxmax(axis=1).reindex(reference.index)
    print(f"classifier out of fold: {time.perf_counter() - started:.1f} s; accuracy on the "
          f"reference {float((predicted == reference).mean()):.3f}; top score >= 0.9 on "
          f"{float((top >= 0.9).mean()):.1%} of the utterances")
    print("config | accuracy | to people | answers/item | +control/item | cost $ | rounds | "
          "MV-all acc. | DS-all acc. | MV-all answers/item | share of MV-all | seconds")
    for name in args.configs.split(","):
        _row(f"{name} (base rate)", replay(rec, config=CONFIGS[name], seed=args.seed).report)
        _row(f"{name} + classifier prior",
             replay(rec, config=CONFIGS[name], seed=args.seed, scores=scores).report)


if __name__ == "__main__":
    main()
