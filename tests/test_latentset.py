"""Latent sets: round trip, memory mapping, checksums, corruption and mismatch detection."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from pathlib import Path

from funcml.errors import ArtifactError, ConfigError, DataError, OutputExistsError
from funcml.io import create_tensor_file, open_tensors_mmap, save_tensors
from funcml.latents import LatentSet, latent_checksum, write_latent_set


def _model(tmp_path, p=6, name="model"):
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=8, depth=3, latent_dim=p))
    m = FieldModel(net, (1, 4, 4), EncodeConfig())
    m.save(tmp_path / name)
    return m, tmp_path / name


def _write(tmp_path, n=10, p=6, **kw):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, p)).astype(np.float32)
    labels = rng.integers(0, 3, size=(n, 1))
    splits = np.array([0] * (n - 4) + [1, 1, 2, 2], np.uint8)
    model, model_dir = _model(tmp_path, p)
    ls = write_latent_set(tmp_path / "set", z, splits=splits, labels=labels, task="multi-class",
                          label_names={"0": "a", "1": "b", "2": "c"}, signal_shape=(1, 4, 4),
                          source={"name": "t", "spec": "t", "fingerprint": "f"}, model_id=model.id,
                          model_dir=model_dir, **kw)
    return ls, z, labels, splits, model


def test_round_trip_is_exact_and_memory_mapped(tmp_path):
    ls, z, labels, splits, model = _write(tmp_path)
    ls = LatentSet.open(tmp_path / "set")
    assert isinstance(ls.latents, np.memmap) and not ls.latents.flags.writeable
    assert np.array_equal(ls.latents, z) and np.array_equal(ls.labels, labels) and np.array_equal(ls.splits, splits)
    assert ls.manifest["splits"] == {"train": 6, "val": 2, "test": 2}
    assert ls.checksum() == ls.manifest["latent_checksum"] == latent_checksum(z)
    x, y = ls.split("val")
    assert np.array_equal(x, z[6:8]) and np.array_equal(y, labels[6:8])
    assert ls.load_model().id == model.id


def test_data_file_is_a_valid_safetensors_file(tmp_path):
    _, z, _, _, _ = _write(tmp_path)
    with safe_open(str(tmp_path / "set" / "latents.safetensors"), framework="numpy") as f:
        assert np.array_equal(f.get_tensor("latents"), z)
        assert np.array_equal(f.get_slice("latents")[2:4], z[2:4])


def test_dataframe_and_torch_dataset(tmp_path):
    ls, z, labels, _, _ = _write(tmp_path)
    df = ls.to_dataframe()
    assert list(df.columns[:2]) == ["phi_0", "phi_1"] and len(df) == 10
    assert np.allclose(df[[f"phi_{i}" for i in range(6)]].to_numpy(), z)
    assert (df["label"].to_numpy() == labels[:, 0]).all() and list(df["split"].cat.categories) == ["train", "val", "test"]
    ds = ls.torch_dataset("test")
    assert len(ds) == 2
    zt, yt = ds[1]
    assert torch.equal(zt, torch.from_numpy(z[9])) and int(yt[0]) == labels[9, 0]


def test_corrupt_or_truncated_data_is_detected(tmp_path):
    _write(tmp_path)
    data = tmp_path / "set" / "latents.safetensors"
    raw = bytearray(data.read_bytes())
    raw[-5] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum"):
        LatentSet.open(tmp_path / "set")
    data.write_bytes(bytes(raw[:-16]))
    with pytest.raises(ArtifactError, match="truncated|bytes"):
        LatentSet.open(tmp_path / "set")


@pytest.mark.parametrize("edit", [
    lambda m: m.update(format="something-else"),
    lambda m: m.update(version=99),
    lambda m: m.update(version=1),  # a version-1 manifest has no aux_features
    lambda m: m.pop("aux_features"),
    lambda m: m.update(aux_features=["rr.pre"]),  # names features the file does not hold
    lambda m: m.update(aux_features=[3]),
    lambda m: m.pop("latent_dim"),
    lambda m: m.update(count="10"),
    lambda m: m.update(surprise=1),
    lambda m: m["splits"].update(train=100),
])
def test_manifest_is_validated(tmp_path, edit):
    _write(tmp_path)
    path = tmp_path / "set" / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
    with pytest.raises(ArtifactError):
        LatentSet.open(tmp_path / "set")


def test_a_latent_set_refuses_a_model_that_is_not_its_own(tmp_path):
    ls, *_ = _write(tmp_path)
    other, other_dir = _model(tmp_path, p=6, name="other")
    with pytest.raises(ArtifactError, match="encoded with model"):
        ls.load_model(other_dir)
    wrong_dim, wrong_dir = _model(tmp_path, p=5, name="wrong")
    with pytest.raises(ArtifactError, match="latent dimension"):
        ls.load_model(wrong_dir)


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    _write(tmp_path)
    with pytest.raises(OutputExistsError):
        _write(tmp_path)
    ls, *_ = _write(tmp_path, overwrite=True)
    assert len(ls) == 10


def test_model_weights_are_verified(tmp_path):
    _, model_dir = _model(tmp_path)
    weights = model_dir / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum"):
        FieldModel.load(model_dir)


def test_mmap_reader_and_streaming_writer_agree_with_the_safetensors_library(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"a": rng.normal(size=(7, 3)).astype(np.float32), "b": rng.integers(0, 9, size=(5,)).astype(np.int64),
              "c": rng.integers(0, 2, size=(4, 2)).astype(np.uint8), "s": np.array(3.5, np.float32)}
    save_tensors(tmp_path / "x.safetensors", arrays)
    mm = open_tensors_mmap(tmp_path / "x.safetensors")
    for k, v in arrays.items():
        assert np.array_equal(np.asarray(mm[k]), v) and mm[k].dtype == v.dtype
    views = create_tensor_file(tmp_path / "y.safetensors", {k: (v.dtype, v.shape) for k, v in arrays.items()})
    for k, v in arrays.items():
        views[k][...] = v
        views[k].flush()
    with safe_open(str(tmp_path / "y.safetensors"), framework="numpy") as f:
        for k, v in arrays.items():
            assert np.array_equal(f.get_tensor(k), v)


# -- version 2: auxiliary features; version 1 still opens ------------------------------------------

V1_SET = Path(__file__).parent / "data" / "latentset-v1"  # written by funcml 0.1.0 (no aux block)


def test_auxiliary_features_round_trip_and_feature_groups(tmp_path):
    aux = np.arange(30, dtype=np.float32).reshape(10, 3)
    names = ("rr.pre", "rr.post", "qt.interval")
    ls, z, labels, _, _ = _write(tmp_path, aux=aux, aux_names=names)
    ls = LatentSet.open(tmp_path / "set")
    assert ls.manifest["version"] == 2 and ls.manifest["aux_features"] == list(names)
    assert ls.aux_names == list(names) and np.array_equal(ls.aux, aux)
    np.testing.assert_array_equal(ls.features(features="rr"), aux[:, :2])
    both = ls.features(np.array([3, 7]), "latent,rr")
    np.testing.assert_array_equal(both, np.c_[z[[3, 7]], aux[[3, 7], :2]])
    np.testing.assert_array_equal(ls.features(None, "qt,latent"), np.c_[aux[:, 2:], z])
    x, y = ls.split("test", features="rr")
    np.testing.assert_array_equal(x, aux[8:, :2])
    df = ls.to_dataframe("val")
    np.testing.assert_array_equal(df["rr.post"].to_numpy(), aux[6:8, 1])
    with pytest.raises(ConfigError, match="no 'hrv' features; it has: latent, rr, qt"):
        ls.features(features="hrv")
    with pytest.raises(ConfigError, match="groups"):
        ls.features(features="rr,rr")


def test_undefined_auxiliary_features_are_refused_when_used(tmp_path):
    aux = np.ones((10, 2), np.float32)
    aux[4, 0] = np.nan  # a record with a single beat has no RR interval
    _write(tmp_path, aux=aux, aux_names=("rr.pre", "rr.edge"))
    ls = LatentSet.open(tmp_path / "set")
    assert ls.features(np.array([0, 5]), "rr").shape == (2, 2)
    with pytest.raises(DataError, match="1 row.*row 4"):
        ls.features(features="latent,rr")


def test_a_version_1_set_still_opens(tmp_path):
    ls = LatentSet.open(V1_SET)
    assert ls.manifest["version"] == 1 and ls.aux is None and ls.aux_names == []
    assert ls.latents.shape == (12, 4) and ls.checksum() == ls.manifest["latent_checksum"]
    np.testing.assert_array_equal(ls.features(np.arange(3)), ls.rows(np.arange(3)))
    assert list(ls.to_dataframe().columns[:5]) == ["phi_0", "phi_1", "phi_2", "phi_3", "split"]
    with pytest.raises(ConfigError, match="no 'rr' features; it has: latent.*RR features"):
        ls.features(features="latent,rr")


def test_aux_features_must_match_the_rows_and_be_named(tmp_path):
    with pytest.raises(DataError, match="do not match"):
        _write(tmp_path, aux=np.zeros((9, 2), np.float32), aux_names=("rr.a", "rr.b"))
    with pytest.raises(DataError, match="GROUP.NAME"):
        _write(tmp_path, aux=np.zeros((10, 1), np.float32), aux_names=("pre",))
