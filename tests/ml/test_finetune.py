"""The fine-tuned MiniLM family: it learns the policy, tunes only its top layers, keeps
an artifact of those layers (no copy of the base model, no pickle), and is offered only
where labels are plenty."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ml.classifier import load_classifier
from ml.errors import EncoderMismatchError
from ml.families import default_families, select_family
from ml.finetune import MiniLMFineTuned, _torch_threads
from ml.text_classifier import TextStackClassifier
from tests.ml.test_text_classifier import corpus

ENCODER_ID = "test:noise"


@pytest.fixture(scope="module")
def fitted() -> tuple[MiniLMFineTuned, tuple]:
    X, y, texts = corpus(240, seed=0)
    model = MiniLMFineTuned(encoder_id=ENCODER_ID, trainable_layers=1, epochs=2,
                            min_labels=10).fit(X, y, texts=texts)
    return model, corpus(120, seed=1)


def test_fine_tuned_minilm_learns_the_policy_from_the_texts(fitted) -> None:  # noqa: ANN001
    model, (X_t, y_t, texts_t) = fitted
    # the embeddings X are noise: what it learned came from the texts
    assert model.evaluate(X_t, y_t, texts=texts_t)["accuracy"] > 0.9
    assert model.labels_ == ["hate", "offensive", "ok"]
    with pytest.raises(ValueError, match="needs the item texts"):
        model.predict_proba(X_t)


def test_only_the_top_layers_move(fitted) -> None:  # noqa: ANN001
    from ml.finetune import _load_base

    model, _ = fitted
    _, base = _load_base("cpu")
    tuned, original = model.model_.state_dict(), base.state_dict()
    moved = {k.split(".")[2] for k in tuned if k.startswith("encoder.layer.")
             and not np.allclose(tuned[k].numpy(), original[k].numpy())}
    assert moved == {"5"}  # trainable_layers=1: the last of six
    assert np.array_equal(tuned["embeddings.word_embeddings.weight"].numpy(),
                          original["embeddings.word_embeddings.weight"].numpy())


def test_artifact_holds_the_tuned_layers_only_and_round_trips(fitted, tmp_path) -> None:  # noqa: ANN001
    model, (X_t, _, texts_t) = fitted
    path = model.save(tmp_path / "m", metrics={"accuracy": 1.0})
    meta = json.loads((path / "meta.json").read_text())
    assert (meta["kind"], meta["tuned_layers"]) == ("minilm_finetune", 1)
    # one BERT layer is ~1.8M floats (7 MB); the base model would be ~90 MB
    assert os.path.getsize(path / "weights.npz") < 12_000_000
    loaded = load_classifier(path, encoder_id=ENCODER_ID)
    assert isinstance(loaded, MiniLMFineTuned)
    np.testing.assert_allclose(loaded.predict_proba(X_t, texts=texts_t),
                               model.predict_proba(X_t, texts=texts_t), atol=1e-5)
    with pytest.raises(EncoderMismatchError):
        load_classifier(path, encoder_id="minilm:other")


def test_the_family_is_offered_only_where_labels_are_plenty() -> None:
    X, y, texts = corpus(60, seed=3)
    chosen = select_family({"text_stack": TextStackClassifier(encoder_id=ENCODER_ID),
                            "minilm_finetune": MiniLMFineTuned(encoder_id=ENCODER_ID)},
                           X, y, texts=texts, target_precision=0.95, folds=2)
    assert chosen.chosen == "text_stack"
    assert chosen.families["minilm_finetune"] == {
        "skipped": "needs at least 1000 labelled items; has 60"}
    assert default_families(cuda=False) == ("embedding", "text_stack")
    assert "minilm_finetune" in default_families(cuda=True)


def test_torch_gets_its_threads_back_inside_a_one_thread_limit() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0))
    if cores < 2 or os.environ.get("OMP_NUM_THREADS"):
        pytest.skip("needs two cores and no OMP_NUM_THREADS")
    with threadpool_limits(1):
        assert torch.get_num_threads() == 1  # what training and calibration run under
        with _torch_threads():
            assert torch.get_num_threads() == cores
