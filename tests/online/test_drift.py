"""Drift detectors on seeded streams: where they fire, and that they stay quiet."""

from __future__ import annotations

import numpy as np
import pytest

from online.drift import EmbeddingShift, LabelMix, MeanShift, mmd_permutation_test


def first_detection(detector: MeanShift | LabelMix | EmbeddingShift, stream: list) -> int | None:
    for i, value in enumerate(stream):
        detector.update(value)
        if detector.drift_detected:
            return i
    return None


def test_mean_shift_fires_soon_after_a_confidence_drop_and_not_before() -> None:
    rng = np.random.default_rng(1)
    stream = [*rng.beta(8, 2, 3000), *rng.beta(5, 3, 1000)]  # mean 0.8 -> 0.625
    at = first_detection(MeanShift("confidence"), stream)
    assert at is not None and 3000 <= at < 3300


def test_mean_shift_stays_quiet_on_10k_stationary_items() -> None:
    rng = np.random.default_rng(2)
    assert first_detection(MeanShift("errors"), list(rng.random(10_000) < 0.3)) is None


def test_label_mix_names_the_label_whose_share_moved() -> None:
    rng = np.random.default_rng(3)
    labels = ["negative", "neutral", "positive"]
    stream = list(rng.choice(labels, 3000, p=[0.4, 0.35, 0.25]))
    stream += list(rng.choice(labels, 1000, p=[0.05, 0.55, 0.4]))
    mix = LabelMix("mix", labels)
    at = first_detection(mix, stream)
    assert at is not None and 3000 <= at < 3300
    assert mix.moved == "negative"
    state = mix.state()
    assert state["statistic"] < state["previous"]


def test_embedding_shift_detects_a_moved_cloud_within_two_checks() -> None:
    rng = np.random.default_rng(4)
    before = rng.normal(0, 1, (800, 16)).astype(np.float32)
    after = rng.normal(0, 1, (400, 16)).astype(np.float32)
    after[:, :4] += 0.8
    detector = EmbeddingShift(reference_size=300, window_size=100, check_every=25)
    at = first_detection(detector, [*before, *after])
    assert at is not None and 800 <= at < 800 + 100 + 2 * 25
    assert detector.state()["z"] >= detector.z_threshold


def test_embedding_shift_stays_quiet_on_a_stationary_cloud() -> None:
    rng = np.random.default_rng(5)
    stream = list(rng.normal(0, 1, (4000, 16)).astype(np.float32))
    detector = EmbeddingShift(reference_size=300, window_size=100, check_every=25)
    assert first_detection(detector, stream) is None
    assert detector.state()["p_value"] > 0


def test_mmd_test_separates_same_from_shifted_samples() -> None:
    rng = np.random.default_rng(6)
    ref = rng.normal(0, 1, (200, 8)).astype(np.float32)
    same = rng.normal(0, 1, (100, 8)).astype(np.float32)
    moved = same + np.float32(1.0)
    quiet = mmd_permutation_test(ref, same, 1 / 16, 200, rng)
    loud = mmd_permutation_test(ref, moved, 1 / 16, 200, rng)
    assert quiet.z < 4 < loud.z
    assert loud.p_value == pytest.approx(1 / 201)


def test_embedding_shift_rejects_a_window_larger_than_its_reference() -> None:
    with pytest.raises(ValueError, match="recent window"):
        EmbeddingShift(reference_size=50, window_size=100)
