"""The latent generator: it learns known distributions, guidance works, sampling is reproducible."""

import numpy as np
import pytest
import torch

from funcml.errors import ArtifactError, ConfigError, DataError
from funcml.tasks.generate import ClassGaussian, LatentGenerator
from funcml.tasks.generate.denoiser import ResidualMLPDenoiser, default_hidden
from funcml.tasks.generate.processes import Diffusion, FlowMatching

MEANS = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
SPREAD = 0.6
SMALL = dict(hidden=64, blocks=2, batch_size=256, lr=3e-3, warmup_steps=20, ema_decay=0.99)


def gaussian_mixture(n, seed=0):
    rng = np.random.default_rng(seed)
    comp = rng.choice(3, size=n, p=WEIGHTS)
    return (MEANS[comp] + SPREAD * rng.standard_normal((n, 2))).astype(np.float32), comp


@pytest.mark.parametrize("method", ["flow", "diffusion"])
def test_learns_a_2d_gaussian_mixture(method):
    x, _ = gaussian_mixture(3000)
    gen = LatentGenerator(method=method, steps=700, sample_steps=30, seed=0, **SMALL).fit(x)
    z, labels = gen.sample(3000, seed=1)
    assert labels is None and z.shape == (3000, 2) and z.dtype == np.float32
    mode = ((z[:, None] - MEANS[None]) ** 2).sum(-1).argmin(1)
    weights = np.bincount(mode, minlength=3) / len(z)
    # mixture moments: mean and covariance of the data-generating distribution
    true_mean = WEIGHTS @ MEANS
    true_cov = sum(w * (np.outer(m - true_mean, m - true_mean) + SPREAD ** 2 * np.eye(2))
                   for w, m in zip(WEIGHTS, MEANS))
    np.testing.assert_allclose(z.mean(0), true_mean, atol=0.25)
    np.testing.assert_allclose(np.cov(z.T), true_cov, atol=0.1 * np.abs(true_cov).max())
    np.testing.assert_allclose(weights, WEIGHTS, atol=0.04)
    for k in range(3):  # each mode keeps its spread (no collapse onto the centres, no blur)
        np.testing.assert_allclose(z[mode == k].std(0), SPREAD, rtol=0.25)


def test_guidance_changes_class_balance_as_expected():
    # two overlapping classes: x | y ~ N((2y - 1, 0), I); the Bayes classifier is sign(x_0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    x = (np.stack([2.0 * y - 1, np.zeros_like(y, dtype=float)], 1) + rng.standard_normal((4000, 2))).astype(np.float32)
    gen = LatentGenerator(method="flow", steps=700, sample_steps=20, p_uncond=0.2, seed=0, **SMALL).fit(x, y)
    share = {w: float((gen.sample(3000, labels=1, guidance=w, seed=2)[0][:, 0] > 0).mean()) for w in (0.0, 1.0, 3.0)}
    assert share[0.0] == pytest.approx(0.5, abs=0.07)          # unconditional: the class balance of the data
    assert share[1.0] == pytest.approx(0.8413, abs=0.06)       # conditional: P(x_0 > 0 | y = 1) = Phi(1)
    assert share[3.0] > share[1.0] + 0.05                      # guidance pushes further towards the class
    z0, l0 = gen.sample(2000, labels=0, guidance=3.0, seed=2)
    assert (l0 == 0).all() and (z0[:, 0] < 0).mean() > share[1.0] + 0.05


@pytest.fixture(scope="module")
def small_generator():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 5)).astype(np.float32) + 3 * y[:, None]
    return LatentGenerator(steps=30, hidden=32, blocks=1, sample_steps=5).fit(x, y), x, y


def test_sampling_is_reproducible_with_a_seed(small_generator, tmp_path):
    gen = small_generator[0]
    a, la = gen.sample(1100, seed=7)
    b, lb = gen.sample(1100, seed=7)
    c, _ = gen.sample(1100, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.allclose(a, c)
    # the first samples do not depend on how many are drawn (noise comes in fixed seeded chunks)
    np.testing.assert_array_equal(gen.sample(10, labels=la[:10], seed=7)[0], a[:10])
    gen.save(tmp_path / "g")
    loaded = LatentGenerator.load(tmp_path / "g")
    np.testing.assert_array_equal(loaded.sample(1100, seed=7)[0], a)
    assert loaded.id_ == gen.id_ and list(loaded.classes_) == [0, 1, 2]
    np.testing.assert_allclose(loaded.class_prior_, gen.class_prior_)


def test_labels_and_guidance_are_respected(small_generator):
    gen, _, y = small_generator
    _, labels = gen.sample(40, labels=2, seed=0)
    assert (labels == 2).all()
    _, drawn = gen.sample(3000, seed=0)
    np.testing.assert_allclose(np.bincount(drawn, minlength=3) / 3000, np.bincount(y) / len(y), atol=0.03)
    with pytest.raises(ConfigError, match="label 5 is not a class"):
        gen.sample(3, labels=5)
    with pytest.raises(ConfigError, match="guidance"):
        gen.sample(3, guidance=-1)
    with pytest.raises(ConfigError, match="--n"):
        gen.sample(0)


def test_training_resumes_exactly_from_a_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    kw = dict(steps=12, hidden=16, blocks=1, batch_size=16, sample_steps=3, seed=5)
    full = LatentGenerator(**kw).fit(x, y)
    stopped = LatentGenerator(**kw).fit(x, y, checkpoint_dir=tmp_path, checkpoint_every=100, max_minutes=0.0)
    assert not stopped.finished_ and stopped.training_["steps_done"] == 1
    resumed = LatentGenerator(**kw).fit(x, y, checkpoint_dir=tmp_path, checkpoint_every=100)
    assert resumed.finished_ and resumed.training_["resumed_from"] == 1
    for p, q in zip(full.net_.state_dict().values(), resumed.net_.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    # a checkpoint of other settings is not resumed
    other = LatentGenerator(**{**kw, "lr": 2e-3}).fit(x, y, checkpoint_dir=tmp_path)
    assert other.training_["resumed_from"] == 0


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="--method"):
        LatentGenerator(method="gan").fit(np.zeros((4, 2)))
    with pytest.raises(DataError, match="NaN"):
        LatentGenerator(steps=1).fit(np.full((4, 2), np.nan))
    with pytest.raises(DataError, match="one class per latent"):
        LatentGenerator(steps=1).fit(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="not fitted"):
        LatentGenerator().sample(2)
    with pytest.raises(ArtifactError, match="not found"):
        LatentGenerator.load(tmp_path / "missing")
    gen = LatentGenerator(steps=2, hidden=16, blocks=1).fit(np.random.default_rng(0).standard_normal((8, 3)))
    gen.save(tmp_path / "g")
    (tmp_path / "g" / "generator.safetensors").write_bytes(b"corrupt")
    with pytest.raises(ArtifactError, match="checksum"):
        LatentGenerator.load(tmp_path / "g")


def test_denoiser_shapes_and_zero_initial_output():
    net = ResidualMLPDenoiser(10, hidden=32, blocks=2, n_classes=3)
    x, t = torch.randn(5, 10), torch.rand(5)
    assert net(x, t, torch.tensor([0, 1, 2, 3, 0])).shape == (5, 10)
    assert torch.count_nonzero(net(x, t)) == 0  # output layer starts at zero
    assert default_hidden(64) == 128 and default_hidden(250) == 256 and default_hidden(8192) == 1024


@pytest.mark.parametrize("process, steps", [(Diffusion(), 20), (FlowMatching(), 20), (Diffusion(eta=1.0), 400)])
def test_samplers_recover_a_gaussian_with_the_exact_predictor(process, steps):
    # for data ~ N(m, s^2 I) the optimal prediction is known in closed form; the sampler must
    # then turn noise into that Gaussian.
    m, s = 1.5, 0.5

    def exact(x, t):
        if isinstance(process, FlowMatching):   # x_t = (1-t) x0 + t eps
            var = (1 - t) ** 2 * s ** 2 + t ** 2
            x0 = m + (1 - t)[:, None] * s ** 2 * (x - (1 - t)[:, None] * m) / var[:, None]
            return (x - x0) / t.clamp_min(1e-6)[:, None]
        a, sg = process.alpha_sigma(t)
        var = a ** 2 * s ** 2 + sg ** 2
        x0 = m + a[:, None] * s ** 2 * (x - a[:, None] * m) / var[:, None]
        eps = (x - a[:, None] * x0) / sg.clamp_min(1e-6)[:, None]
        return a[:, None] * eps - sg[:, None] * x0

    g = torch.Generator().manual_seed(0)
    x = process.sample(exact, torch.randn(20000, 2, generator=g, dtype=torch.float64), steps, g)
    assert float(x.mean()) == pytest.approx(m, abs=0.02)
    assert float(x.std()) == pytest.approx(s, abs=0.02)


def test_class_gaussian_floor_matches_class_moments():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 2000)
    x = rng.standard_normal((4000, 3)) * [1, 2, 0.5] + np.where(y[:, None] == 1, 5.0, -1.0)
    g = ClassGaussian(seed=1).fit(x, y)
    z, lab = g.sample(4000, labels=y, seed=0)
    for c in (0, 1):
        np.testing.assert_allclose(z[lab == c].mean(0), x[y == c].mean(0), atol=0.1)
        np.testing.assert_allclose(z[lab == c].std(0), x[y == c].std(0), rtol=0.08)
    np.testing.assert_array_equal(g.sample(5, seed=3)[0], g.sample(5, seed=3)[0])
