"""Untrusted files: nothing a user may receive can run code on the machine that opens it.

Artifacts are safetensors + JSON; a pickle placed where one is expected (with its checksums updated,
so that the parser is really reached) is refused without being executed. Folders may not pull in
files from elsewhere (symbolic links, paths escaping their root). A source scan keeps it that way for
code added later: no pickle-based loading anywhere in the package.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from corpus import shared_world
from funcml.data import load_signals
from funcml.encoders.checkpoint import load_checkpoint
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ArtifactError, DataError
from funcml.io import atomic_write_json, read_json, sha256_file
from funcml.latents import LatentSet
from funcml.latents.mednf import import_mednf

PACKAGE = Path(__file__).resolve().parents[1] / "funcml"


@pytest.fixture(scope="module")
def world():
    return shared_world()


class Exploit:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"weights": Exploit(marker)})


def _torch_pickle(path: Path, marker: Path) -> None:
    torch.save({"model.first.weight": Exploit(marker)}, path)


# -- nothing is unpickled -----------------------------------------------------------------------------

def test_a_pickle_disguised_as_model_weights_is_refused_unexecuted(tmp_path, world):
    marker = tmp_path / "pwned"
    model = tmp_path / "model"
    shutil.copytree(world["model"], model)
    for payload in (_pickle_bytes(marker), None):
        if payload is None:
            _torch_pickle(model / "model.safetensors", marker)
        else:
            (model / "model.safetensors").write_bytes(payload)
        cfg = read_json(model / "config.json")  # a consistent forgery: checksum and id match the payload
        from funcml.encoders.model import model_id
        from funcml.encoders.config import FieldConfig

        cfg["files"]["model.safetensors"] = sha256_file(model / "model.safetensors")
        cfg["id"] = model_id(FieldConfig(**cfg["field"]), cfg["files"]["model.safetensors"])
        atomic_write_json(model / "config.json", cfg)
        with pytest.raises(ArtifactError, match="not a valid safetensors file"):
            FieldModel.load(model)
    assert not marker.exists()


def test_a_pickle_disguised_as_latents_is_refused_unexecuted(tmp_path, world):
    marker = tmp_path / "pwned"
    lat = tmp_path / "latents"
    shutil.copytree(world["latents"], lat)
    _torch_pickle(lat / "latents.safetensors", marker)
    manifest = read_json(lat / "manifest.json")
    manifest["files"]["latents.safetensors"] = {"sha256": sha256_file(lat / "latents.safetensors"),
                                                "bytes": (lat / "latents.safetensors").stat().st_size}
    atomic_write_json(lat / "manifest.json", manifest)
    with pytest.raises(ArtifactError, match="truncated or corrupt|corrupt safetensors header"):
        LatentSet.open(lat)
    assert not marker.exists()


def test_a_pickle_disguised_as_a_checkpoint_is_refused_unexecuted(tmp_path, world):
    marker = tmp_path / "pwned"
    model = tmp_path / "model"
    shutil.copytree(world["model"], model)
    meta = read_json(model / "checkpoints" / "last.json")
    ckpt = model / "checkpoints" / meta["file"]
    _torch_pickle(ckpt, marker)
    meta["sha256"] = sha256_file(ckpt)
    atomic_write_json(model / "checkpoints" / "last.json", meta)
    net = ModulatedSiren(FieldModel.load(model).config)
    with pytest.raises(ArtifactError, match="not a valid safetensors file"):
        load_checkpoint(model, net, torch.optim.AdamW(net.parameters()))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["breastmnist.npz", "scan.npz"])
def test_an_npz_with_pickled_arrays_is_refused_unexecuted(tmp_path, name):
    marker = tmp_path / "pwned"
    rng = np.random.default_rng(0)
    arrays = {f"{s}_{k}": (rng.integers(0, 255, (2, 8, 8)).astype(np.uint8) if k == "images" else np.zeros((2, 1), np.uint8))
              for s in ("train", "val", "test") for k in ("images", "labels")}
    evil = np.empty(1, dtype=object)
    evil[0] = Exploit(marker)
    if name == "scan.npz":
        arrays = {"vol": evil}
    else:
        arrays["train_images"] = evil
    np.savez(tmp_path / name, **arrays)
    with pytest.raises(DataError, match="corrupt npz|pickle"):
        load_signals(tmp_path / name)
    assert not marker.exists()


def test_mednf_files_with_code_in_any_field_are_refused_unexecuted(tmp_path, world):
    marker = tmp_path / "pwned"
    root = tmp_path / "mednf"
    shutil.copytree(world["mednf"], root)
    torch.save({"modulations": torch.zeros(8), "label": Exploit(marker)}, root / "val" / "datapoint_0.pt")
    with pytest.raises(ArtifactError, match="refused to unpickle"):
        import_mednf(root, tmp_path / "out")
    torch.save({"modulations": torch.zeros(8), "label": torch.tensor([0])}, root / "val" / "datapoint_0.pt")
    torch.save({"layers.0.linear.weight": Exploit(marker)}, root / "model.pt")
    with pytest.raises(ArtifactError, match="refused to unpickle"):
        import_mednf(root, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


# -- paths may not escape their folder ---------------------------------------------------------------

def test_a_latent_set_may_not_link_to_files_elsewhere(tmp_path, world):
    lat = tmp_path / "latents"
    shutil.copytree(world["latents"], lat)
    outside = tmp_path / "outside.safetensors"
    (lat / "latents.safetensors").rename(outside)
    (lat / "latents.safetensors").symlink_to(outside)
    with pytest.raises(ArtifactError, match="symbolic link"):
        LatentSet.open(lat)
    (lat / "latents.safetensors").unlink()
    outside.rename(lat / "latents.safetensors")
    ls = LatentSet.open(lat)
    shutil.move(str(lat / "model"), tmp_path / "elsewhere")
    (lat / "model").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ArtifactError, match="symbolic link"):
        ls.load_model()


def test_mednf_split_folders_linking_outside_are_refused(tmp_path, world):
    root = tmp_path / "mednf"
    shutil.copytree(world["mednf"], root)
    shutil.move(str(root / "test"), tmp_path / "elsewhere")
    (root / "test").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ArtifactError, match="outside"):
        import_mednf(root, tmp_path / "out")


def test_a_checkpoint_cannot_point_outside_its_folder(tmp_path, world):
    model = tmp_path / "model"
    shutil.copytree(world["model"], model)
    meta = read_json(model / "checkpoints" / "last.json")
    shutil.copy(model / "checkpoints" / meta["file"], tmp_path / "x.safetensors")
    meta["file"] = "../../x.safetensors"
    (model / "checkpoints" / "last.json").write_text(json.dumps(meta))
    net = ModulatedSiren(FieldModel.load(model).config)
    with pytest.raises(ArtifactError, match="file has an invalid value"):
        load_checkpoint(model, net, torch.optim.AdamW(net.parameters()))


@pytest.mark.parametrize("text, why", [("[" * 100000 + "]" * 100000, "nested too deeply"),
                                       ('{"count": NaN}', "NaN is not valid JSON"),
                                       ('{"count": Infinity}', "Infinity is not valid JSON"),
                                       ("\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), "not valid JSON")])
def test_json_files_are_strict(tmp_path, text, why):
    (tmp_path / "m.json").write_text(text, encoding="latin-1")
    with pytest.raises(ArtifactError, match=why):
        read_json(tmp_path / "m.json")


# -- the package never loads pickles ------------------------------------------------------------------

_FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}


def _violations(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in _FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _FORBIDDEN_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = ast.unparse(func)
            kwargs = {k.arg: k.value for k in node.keywords}
            if name in ("eval", "exec"):
                found.append(f"{name}(...)")
            elif name.endswith("read_pickle") or name in ("torch.save", "torch.jit.load", "yaml.load",
                                                          "yaml.unsafe_load"):
                found.append(f"{name}(...)")
            elif name == "torch.load":
                w = kwargs.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    found.append("torch.load(...) without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                a = kwargs.get("allow_pickle")
                if not (isinstance(a, ast.Constant) and a.value is False):
                    found.append(f"{name}(...) without allow_pickle=False")
    return found


def test_the_package_has_no_pickle_based_loading():
    problems = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = _violations(ast.parse(path.read_text(), filename=str(path)))
        if found:
            problems[str(path.relative_to(PACKAGE.parent))] = found
    assert problems == {}, problems


def test_the_scan_finds_what_it_looks_for():
    bad = ("import pickle\nfrom joblib import load\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "np.load(p)\nnp.load(p, allow_pickle=True)\neval('1')\npd.read_pickle(p)\ntorch.save(x, p)\n")
    assert len(_violations(ast.parse(bad))) == 9
    good = "torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p, allow_pickle=False)\n"
    assert _violations(ast.parse(good)) == []
