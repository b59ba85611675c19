from __future__ import annotations

import json

import numpy as np
import pytest

from ml.bands import BandResult, assign_band, assign_bands, default_bands, validate_bands

POLICY_KINDS = {
    "ok": "ok",
    "restricted": "hide",
    "adult": "hide",
    "prohibited": "bad",
    "fraud": "bad",
}
LABELS = list(POLICY_KINDS)
AUTO = ["auto_ok", "ML_BAD_HIGH"]
BANDS = default_bands(POLICY_KINDS)


def probs_for(label: str, p: float) -> dict[str, float]:
    """``label`` at ``p``, the rest spread evenly (each below ``p`` for p > 0.2)."""
    rest = (1.0 - p) / (len(LABELS) - 1)
    return {name: (p if name == label else rest) for name in LABELS}


def band(label: str, p: float, *, auto_decide: list[str] = AUTO) -> BandResult:
    return assign_band(
        probs_for(label, p), bands=BANDS, policy_kinds=POLICY_KINDS, auto_decide=auto_decide
    )


def test_default_bands_are_the_documented_contract() -> None:
    assert BANDS == {
        "ok": {"auto": 0.995, "good": 0.90},
        "restricted": {"high": 0.90, "middle": 0.60},
        "adult": {"high": 0.90, "middle": 0.60},
        "prohibited": {"high": 0.90, "middle": 0.60},
        "fraud": {"high": 0.90, "middle": 0.60},
    }
    assert json.loads(json.dumps(BANDS)) == BANDS
    validate_bands(bands=BANDS, policy_kinds=POLICY_KINDS)


@pytest.mark.parametrize(
    ("p", "expected", "decides"),
    [
        (1.0, "auto_ok", True),
        (0.995, "auto_ok", True),
        (0.9949, "ML_GOOD", False),
        (0.90, "ML_GOOD", False),
        (0.8999, None, False),
        (0.5, None, False),
    ],
)
def test_ok_bands_at_and_around_boundaries(p: float, expected: str | None, decides: bool) -> None:
    result = band("ok", p)
    assert (result.band, result.decides, result.label) == (expected, decides, "ok")
    assert result.probability == pytest.approx(p)


def test_auto_ok_not_allowed_to_decide_routes_to_ml_good() -> None:
    result = band("ok", 0.999, auto_decide=["ML_BAD_HIGH"])
    assert (result.band, result.decides) == ("ML_GOOD", False)


@pytest.mark.parametrize("label", ["prohibited", "fraud"])
@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.95, "ML_BAD_HIGH"),
        (0.90, "ML_BAD_HIGH"),
        (0.8999, "ML_BAD_MIDDLE"),
        (0.60, "ML_BAD_MIDDLE"),
        (0.5999, None),
    ],
)
def test_bad_bands(label: str, p: float, expected: str | None) -> None:
    result = band(label, p)
    assert (result.band, result.label) == (expected, label)
    assert result.decides == (expected == "ML_BAD_HIGH")


@pytest.mark.parametrize("label", ["restricted", "adult"])
@pytest.mark.parametrize(
    ("p", "expected"),
    [(0.90, "ML_BAD_HIGH"), (0.8999, "ML_HIDE_MIDDLE"), (0.60, "ML_HIDE_MIDDLE"), (0.5999, None)],
)
def test_hide_bands(label: str, p: float, expected: str | None) -> None:
    assert band(label, p).band == expected


def test_high_band_only_routes_when_not_in_auto_decide() -> None:
    result = band("fraud", 0.97, auto_decide=["auto_ok"])
    assert (result.band, result.decides) == ("ML_BAD_HIGH", False)


def test_top_label_is_argmax_and_ties_go_to_first_listed() -> None:
    probs = {"ok": 0.3, "restricted": 0.05, "adult": 0.05, "prohibited": 0.3, "fraud": 0.3}
    result = assign_band(probs, bands=BANDS, policy_kinds=POLICY_KINDS, auto_decide=AUTO)
    assert (result.label, result.band) == ("ok", None)


def test_float32_probability_exactly_at_cut_is_inclusive() -> None:
    probs = {name: np.float32(v) for name, v in probs_for("adult", 0.9).items()}
    result = assign_band(probs, bands=BANDS, policy_kinds=POLICY_KINDS, auto_decide=AUTO)
    assert result.band == "ML_BAD_HIGH"


def test_vectorised_matches_scalar_on_boundaries_and_random_rows() -> None:
    rows = [
        probs_for(label, p)
        for label in LABELS
        for p in (0.995, 0.9949, 0.9, 0.8999, 0.6, 0.5999, 0.3)
    ]
    rng = np.random.default_rng(0)
    rows += [dict(zip(LABELS, r, strict=True)) for r in rng.dirichlet(np.ones(5) * 0.2, 200)]
    for dtype in (np.float64, np.float32):
        proba = np.array([[row[name] for name in LABELS] for row in rows], dtype=dtype)
        batch = assign_bands(
            proba, LABELS, bands=BANDS, policy_kinds=POLICY_KINDS, auto_decide=AUTO
        )
        single = [
            assign_band(
                dict(zip(LABELS, r, strict=True)),
                bands=BANDS,
                policy_kinds=POLICY_KINDS,
                auto_decide=AUTO,
            )
            for r in proba
        ]
        assert [(b.band, b.label, b.decides) for b in batch] == [
            (s.band, s.label, s.decides) for s in single
        ]
    assert {b.band for b in batch} >= {
        "auto_ok",
        "ML_GOOD",
        "ML_BAD_HIGH",
        "ML_BAD_MIDDLE",
        "ML_HIDE_MIDDLE",
        None,
    }


def test_invalid_threshold_sets_are_rejected() -> None:
    with pytest.raises(ValueError, match="needs cut-offs"):
        validate_bands(bands={"ok": {"auto": 0.9}}, policy_kinds={"ok": "ok"})
    with pytest.raises(ValueError, match="<="):
        validate_bands(bands={"x": {"high": 0.5, "middle": 0.7}}, policy_kinds={"x": "bad"})
    with pytest.raises(ValueError, match="unknown kind"):
        validate_bands(bands={}, policy_kinds={"x": "weird"})
