"""MedNF import: official latents and model converted exactly; pickles never executed."""

import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from funcml.encoders.coords import make_grid
from funcml.errors import ArtifactError, DataError
from funcml.latents import LatentSet
from funcml.latents.mednf import import_mednf


class OfficialStyleLayer(nn.Module):
    """One layer of the official architecture: its own linear map and its own shift map."""

    def __init__(self, n_in, n_out, p, w0, first=False, last=False):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.modulate_shift_layer = nn.Linear(p, n_out)
        self.w0, self.last = w0, last
        bound = 1 / n_in if first else math.sqrt(6 / n_in) / w0
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def forward(self, x, z):
        x = self.linear(x)
        return x if self.last else torch.sin(self.w0 * (x + self.modulate_shift_layer(z).unsqueeze(1)))


class OfficialStyleSiren(nn.Module):
    """num_layers counts the output layer; w0 grows by w0_increment per layer; skips; +0.5."""

    def __init__(self, n_in, n_out, width, num_layers, p, w0, inc):
        super().__init__()
        self.layers = nn.ModuleList(
            OfficialStyleLayer(n_in if i == 0 else width, width, p, w0 + i * inc, first=i == 0)
            for i in range(num_layers - 1))
        self.last_layer = OfficialStyleLayer(width, n_out, p, w0 + (num_layers - 1) * inc, last=True)

    def forward(self, coords, z):
        x = self.layers[0](coords.expand(z.shape[0], *coords.shape), z)
        for layer in self.layers[1:]:
            x = x + layer(x, z)
        return self.last_layer(x, z) + 0.5


def _release(tmp_path, labels=True, p=6):
    torch.manual_seed(0)
    ref = OfficialStyleSiren(2, 1, 8, 4, p, 10.0, 5.0)
    root = tmp_path / "mednf"
    counts = {"train": 5, "val": 2, "test": 3}
    latents = {}
    for split, n in counts.items():
        (root / split).mkdir(parents=True)
        for i in range(n):
            z = torch.randn(p)
            latents[(split, i)] = z
            point = {"modulations": z}
            if labels:
                point["label"] = torch.tensor([i % 2])
            torch.save(point, root / split / f"datapoint_{i}.pt")
    torch.save({"model." + k: v for k, v in ref.state_dict().items()}, root / "model.pt")
    return root, ref, latents


def test_import_converts_latents_labels_and_model_exactly(tmp_path):
    root, ref, latents = _release(tmp_path)
    ls = import_mednf(root, tmp_path / "set", signal_shape=(5, 5))
    assert len(ls) == 10 and ls.latent_dim == 6 and ls.manifest["splits"] == {"train": 5, "val": 2, "test": 3}
    assert ls.task == "binary-class"
    test_rows = ls.split_indices("test")
    assert np.array_equal(np.asarray(ls.index[test_rows]), [0, 1, 2])
    assert np.allclose(ls.latents[test_rows[1]], latents[("test", 1)].numpy())
    assert np.asarray(ls.labels[test_rows])[:, 0].tolist() == [0, 1, 0]
    model = ls.load_model()
    assert model.config.depth == 4 and model.net.omegas == [10.0, 15.0, 20.0, 25.0]
    z = torch.from_numpy(ls.rows(slice(0, 4)))
    coords = make_grid((5, 5))
    with torch.no_grad():
        assert torch.allclose(model.net(coords, z), ref(coords, z), atol=1e-6)


def test_import_without_labels_or_model(tmp_path):
    root, _, _ = _release(tmp_path, labels=False)
    (root / "model.pt").unlink()
    ls = import_mednf(root, tmp_path / "set")
    assert ls.task == "none" and ls.labels is None and ls.model_id is None
    with pytest.raises(ArtifactError, match="no embedded model"):
        ls.load_model()


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/funcml_pwned_marker",))


def test_a_malicious_pickle_is_refused_and_not_executed(tmp_path):
    import os

    marker = "/tmp/funcml_pwned_marker"
    if os.path.exists(marker):
        os.unlink(marker)
    root, _, _ = _release(tmp_path)
    with open(root / "train" / "datapoint_0.pt", "wb") as f:
        pickle.dump({"modulations": _Exploit(), "label": 1}, f)
    with pytest.raises(ArtifactError, match="refused to unpickle"):
        import_mednf(root, tmp_path / "set")
    torch.save({"modulations": torch.zeros(6), "label": torch.tensor([0])}, root / "train" / "datapoint_0.pt")
    torch.save(_Exploit(), root / "model.pt")
    with pytest.raises(ArtifactError, match="refused to unpickle"):
        import_mednf(root, tmp_path / "set2")
    assert not os.path.exists(marker)


def test_files_escaping_the_folder_are_refused(tmp_path):
    root, _, _ = _release(tmp_path)
    outside = tmp_path / "outside.pt"
    torch.save({"modulations": torch.zeros(6), "label": torch.tensor([0])}, outside)
    (root / "train" / "datapoint_9.pt").symlink_to(outside)
    with pytest.raises(ArtifactError, match="outside"):
        import_mednf(root, tmp_path / "set")


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        import_mednf(tmp_path / "nope", tmp_path / "set")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no datapoint"):
        import_mednf(tmp_path / "empty", tmp_path / "set")
