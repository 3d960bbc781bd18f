"""The linear projections benchmarks/projection.py measures (not shipped): their algebra."""

from __future__ import annotations

import numpy as np

from benchmarks.projection import nuisance, wccn, within_person


def test_within_person_covariance_ignores_who_differs_from_whom() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 4)) * 10.0
    owner = np.repeat(np.array(["a", "b", "c"]), 50)
    rows = centres[np.repeat(np.arange(3), 50)] + rng.normal(size=(150, 4)) * [1, 1, 1, 0.1]
    within, dof = within_person(rows, owner)
    assert dof == 147
    # The spread between people (scale 10) is not in it; each person's own spread is.
    np.testing.assert_allclose(np.diag(within), [1, 1, 1, 0.01], rtol=0.3)


def test_wccn_whitens_within_person_spread_and_shrink_one_changes_nothing() -> None:
    within = np.diag([4.0, 1.0, 0.25])
    whitened = wccn(within, 0.0)
    spread = whitened.T @ within @ whitened
    # Every direction ends with the same within-person variance (the mean one, 1.75).
    np.testing.assert_allclose(np.diag(spread), [1.75] * 3, rtol=1e-6)
    np.testing.assert_allclose(wccn(within, 1.0), np.eye(3), atol=1e-9)


def test_nuisance_removes_the_direction_one_person_varies_in_most() -> None:
    within = np.diag([0.9, 0.1, 0.1])  # person-to-person noise lives along axis 0
    total = np.eye(3)
    removed = nuisance(within, total, 1, 1.0)
    np.testing.assert_allclose(removed @ [1.0, 0.0, 0.0], [0, 0, 0], atol=1e-3)
    np.testing.assert_allclose(removed @ [0.0, 1.0, 0.0], [0, 1, 0], atol=1e-3)
    halved = nuisance(within, total, 1, 0.5)
    np.testing.assert_allclose(halved @ [1.0, 0.0, 0.0], [0.5, 0, 0], atol=1e-3)
