"""Sample-quality metrics and latent interpolation: known answers."""

import numpy as np
import pytest
import scipy.linalg

from funcml.errors import ConfigError, DataError
from funcml.tasks.generate import (classification_accuracy_score, frechet_distance, interpolate, lerp, memorisation,
                                   precision_recall, slerp)


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, (500, 1)), rng.normal(-0.5, 0.5, (400, 1))
    # 1-D: (m_a - m_b)^2 + (s_a - s_b)^2 with the sample moments
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # F-D: the textbook formula with scipy's matrix square root
    x = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6))
    y = rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6)) + 0.3
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sx + sy - 2 * scipy.linalg.sqrtm(sx @ sy).real)
    assert frechet_distance(x, y) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)
    with pytest.raises(DataError, match="Fréchet"):
        frechet_distance(x, y[:, :3])


def test_precision_recall_on_known_manifolds():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0]])
    real = np.concatenate([c + rng.standard_normal((300, 2)) for c in centres])
    same = np.concatenate([c + rng.standard_normal((300, 2)) for c in centres])
    half = centres[0] + rng.standard_normal((600, 2))          # covers one of the two modes
    far = rng.standard_normal((600, 2)) + [0.0, 50.0]
    p, r = precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    p, r = precision_recall(real, half)
    assert p > 0.9 and r == pytest.approx(0.5, abs=0.05)
    assert precision_recall(real, far) == (0.0, 0.0)
    assert precision_recall(real, real) == (1.0, 1.0)


def test_memorisation_flags_copies_and_not_fresh_samples():
    rng = np.random.default_rng(0)
    train, held = rng.standard_normal((500, 8)), rng.standard_normal((200, 8))
    copies = memorisation(train[:200] + 1e-6, held, train)
    fresh = memorisation(rng.standard_normal((200, 8)), held, train)
    assert copies["ratio"] < 0.01 and copies["fraction_closer"] == 1.0
    assert fresh["ratio"] == pytest.approx(1.0, abs=0.15) and fresh["fraction_closer"] < 0.15


def test_classification_accuracy_score():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.standard_normal((400, 5)) + 4 * y[:, None]
    good = classification_accuracy_score(x[:200], y[:200], x[200:], y[200:])
    assert good["accuracy"] > 0.95 and good["balanced_accuracy"] > 0.95
    shuffled = classification_accuracy_score(x[:200], rng.permutation(y[:200]), x[200:], y[200:])
    assert shuffled["balanced_accuracy"] < 0.7
    with pytest.raises(DataError, match="two classes"):
        classification_accuracy_score(x[:10], np.zeros(10), x, y)


def test_linear_and_spherical_interpolation():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(16)
    b = rng.standard_normal(16)
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    t = np.linspace(0, 1, 9)
    for path in (lerp(a, b, t), slerp(a, b, t)):
        np.testing.assert_allclose(path[0], a, atol=1e-6)
        np.testing.assert_allclose(path[-1], b, atol=1e-6)
    np.testing.assert_allclose(lerp(a, b, t)[4], (a + b) / 2, atol=1e-6)
    norms = np.linalg.norm(slerp(a, b, t), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(a), rtol=1e-5)          # stays on the sphere
    assert np.linalg.norm(lerp(a, b, t)[4]) < np.linalg.norm(a)             # the chord cuts inside
    angles = np.arccos(np.clip(slerp(a, b, t) @ a / norms ** 2, -1, 1))
    np.testing.assert_allclose(np.diff(angles), angles[-1] / 8, atol=1e-3)  # constant angular speed
    np.testing.assert_allclose(slerp(a, 2 * a, t), lerp(a, 2 * a, t), atol=1e-6)  # parallel: linear


def test_interpolation_in_standardised_space():
    mean, scale = np.array([10.0, -5.0]), np.array([2.0, 0.5])
    a, b = mean + scale * np.array([1.0, 0.0]), mean + scale * np.array([0.0, 1.0])
    path = interpolate(a, b, 3, "spherical", mean, scale)
    z = (path - mean) / scale
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(z[1], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-5)
    with pytest.raises(ConfigError, match="frames"):
        interpolate(a, b, 1)
    with pytest.raises(ConfigError, match="unknown interpolation"):
        interpolate(a, b, 3, "cubic")
