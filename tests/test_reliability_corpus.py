"""A corpus of corrupted files, for every format funcml reads: each is refused with a funcml error
(one clear message) or, where the damage leaves a valid file, read correctly. Never another exception.

Data formats: MedMNIST npz, voxelmorph npz, NIfTI (.nii, .nii.gz), UCR text, WFDB (.hea, .dat, .atr),
images (png, jpg) and segmentation masks. Artifacts: latent sets, model directories, training
checkpoints, unfinished encodes, MedNF .pt files; and their JSON files field by field (wrong types,
missing fields, out-of-range values), which are validated against their schemas.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from corpus import byte_mutations, json_mutations, rewrite_json, shared_world
from funcml.data import load_signals
from funcml.encoders.checkpoint import load_checkpoint, read_checkpoint_meta
from funcml.latents.encode import encode_signal_set
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import FuncmlError
from funcml.latents import LatentSet
from funcml.latents.mednf import import_mednf
from test_cli import write_medmnist_npz

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def world():
    return shared_world()


def _outcome(fn) -> str:
    """``"ok"`` or ``"refused"`` (a funcml error); any other exception fails the test."""
    try:
        fn()
        return "ok"
    except FuncmlError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), f"not one clear line: {exc!r}"
        return "refused"


# -- data formats ---------------------------------------------------------------------------------

def _grey(path, seed, size=(20, 30)):
    Image.fromarray((np.random.default_rng(seed).random(size) * 255).astype(np.uint8)).save(path)


def _make_medmnist(root):
    write_medmnist_npz(root / "tinymnist.npz", n=(6, 2, 2))
    return root / "tinymnist.npz", "tinymnist.npz"


def _make_voxelmorph(root):
    vol = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    np.savez_compressed(root / "scan.npz", vol=vol, seg=(vol > 0.5).astype(np.float32))
    return root / "scan.npz", "scan.npz"


def _make_nifti(name):
    def make(root):
        vol = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / name))
        return root / name, name
    return make


def _make_ucr(root):
    rows = [f"{i % 3 + 1} " + " ".join(f"{v:.4f}" for v in np.sin(np.arange(24) * 0.3 + i)) for i in range(10)]
    (root / "ECG_TRAIN.txt").write_text("\n".join(rows) + "\n")
    return root / "ECG_TRAIN.txt", "ECG_TRAIN.txt"


def _make_wfdb(member):
    def make(root):
        from test_data_ecg import write_record

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_record(root, seconds=12, positions=[720, 1008, 1296, 2000, 3000])
        return root, member
    return make


def _make_images(member):
    def make(root):
        for k in ("a", "b"):
            (root / k).mkdir()
            for i in range(2):
                _grey(root / k / f"{i}.png", i)
        Image.fromarray((np.random.default_rng(3).random((20, 30, 3)) * 255).astype(np.uint8)).save(root / "b" / "2.jpg")
        return root, member
    return make


def _make_pairs(root):
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(3):
        _grey(root / "images" / f"{i}.png", i)
        Image.fromarray(((np.random.default_rng(i).random((20, 30)) > 0.5) * 255).astype(np.uint8)).save(
            root / "masks" / f"{i}.png")
    return root, "masks/1.png"


DATA_FORMATS = {
    "medmnist-npz": _make_medmnist, "voxelmorph-npz": _make_voxelmorph, "nifti": _make_nifti("v.nii"),
    "nifti-gz": _make_nifti("v.nii.gz"), "ucr-text": _make_ucr, "wfdb-header": _make_wfdb("100.hea"),
    "wfdb-signal": _make_wfdb("100.dat"), "wfdb-annotations": _make_wfdb("100.atr"),
    "png": _make_images("a/1.png"), "jpeg": _make_images("b/2.jpg"), "mask-png": _make_pairs,
}


@pytest.mark.parametrize("fmt", sorted(DATA_FORMATS))
def test_corrupted_data_files_are_refused_or_read_correctly(tmp_path, fmt):
    (tmp_path / "valid").mkdir()
    spec, member = DATA_FORMATS[fmt](tmp_path / "valid")
    spec = spec.relative_to(tmp_path / "valid")

    def load(root):
        ds = load_signals(root / spec)
        x = ds.get(np.arange(len(ds)))
        assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
        if ds.has_masks:
            ds.get_masks(np.arange(len(ds)))

    assert _outcome(lambda: load(tmp_path / "valid")) == "ok"
    raw = (tmp_path / "valid" / member).read_bytes()
    results = {}
    for name, broken in byte_mutations(raw).items():
        root = tmp_path / name
        shutil.copytree(tmp_path / "valid", root)
        (root / member).write_bytes(broken)
        results[name] = _outcome(lambda: load(root))
    must_refuse = {"empty", "garbage"} | (set() if fmt == "ucr-text" else {"half"})
    assert {k for k in must_refuse if results[k] != "refused"} == set(), results


# -- artifacts: bytes -----------------------------------------------------------------------------

def _open_latents(root):
    LatentSet.open(root / "latents").load_model()


def _load_model(root):
    FieldModel.load(root / "model")


def _load_checkpoint(root):
    meta = read_checkpoint_meta(root / "model")
    net = ModulatedSiren(FieldModel.load(root / "model").config)
    load_checkpoint(root / "model", net, torch.optim.AdamW(net.parameters()))
    assert meta is not None


ARTIFACTS = {  # member -> (opener, must every byte-level damage be refused?)
    "latents/manifest.json": (_open_latents, False),
    "latents/latents.safetensors": (_open_latents, True),
    "latents/model/config.json": (_open_latents, False),
    "latents/model/model.safetensors": (_open_latents, True),
    "model/config.json": (_load_model, False),
    "model/model.safetensors": (_load_model, True),
    "model/checkpoints/last.json": (_load_checkpoint, False),
    "model/checkpoints/ckpt-000000003.safetensors": (_load_checkpoint, True),
    "mednf/train/datapoint_1.pt": (lambda root: import_mednf(root / "mednf", root / "imported"), False),
}


@pytest.mark.parametrize("member", sorted(ARTIFACTS))
def test_corrupted_artifacts_are_refused(tmp_path, world, member):
    opener, checksummed = ARTIFACTS[member]
    base = world["data"].parent
    valid = tmp_path / "valid"
    for name in ("latents", "model", "mednf"):
        shutil.copytree(base / name, valid / name)
    assert _outcome(lambda: opener(valid)) == "ok"
    raw = (valid / member).read_bytes()
    results = {}
    for name, broken in byte_mutations(raw).items():
        (valid / member).write_bytes(broken)
        shutil.rmtree(valid / "imported", ignore_errors=True)
        results[name] = _outcome(lambda: opener(valid))
    refused = {k for k, v in results.items() if v == "refused"}
    if checksummed:
        assert refused == set(results), results
    else:
        assert {"empty", "garbage", "half", "first-64"} <= refused, results


def test_a_damaged_unfinished_encode_is_refused_or_resumed_never_misread(tmp_path, world):
    from funcml.data import load_signals as load

    signals = load(world["data"])
    model = FieldModel.load(world["model"])
    cfg = dataclasses.replace(model.encode_defaults, batch_size=4)
    ref, _ = encode_signal_set(model, signals, tmp_path / "ref", cfg, model_dir=world["model"], progress=False)
    encode_signal_set(model, signals, tmp_path / "part", cfg, model_dir=world["model"], progress=False, max_chunks=2)
    partial = tmp_path / "part.partial"
    for member in ("job.json", "progress.json", "latents.safetensors"):
        raw = (partial / member).read_bytes()
        for name, broken in byte_mutations(raw).items():
            work = tmp_path / f"w-{member}-{name}"
            shutil.copytree(partial, work.with_name(work.name + ".partial"))
            (work.with_name(work.name + ".partial") / member).write_bytes(broken)

            def finish():
                ls, _ = encode_signal_set(model, signals, work, cfg, model_dir=world["model"], progress=False)
                assert ls.checksum() == ref.checksum(), (member, name)  # resumed or restarted: same latents
            _outcome(finish)


# -- artifacts: JSON schemas ----------------------------------------------------------------------

def _mutate_each_field(path, opener, skip=()):
    doc = json.loads(path.read_text())
    outcomes = {}
    try:
        for what, broken in json_mutations(doc, skip=skip):
            rewrite_json(path, broken)
            outcomes[what] = _outcome(opener)
    finally:
        rewrite_json(path, doc)
    return outcomes


def test_latent_set_manifest_fields_are_validated(tmp_path, world):
    shutil.copytree(world["latents"], tmp_path / "latents")
    out = _mutate_each_field(tmp_path / "latents" / "manifest.json", lambda: _open_latents(tmp_path),
                             skip=("encoding", "metrics", "extra"))
    accepted = {k for k, v in out.items() if v == "ok"}
    # Only free text and optional provenance may change; no typed field accepts a wrong value.
    free = ("created = ", "funcml_version = ", "label_names.", "source.name = ", "source.spec = ",
            "source.fingerprint = ")
    assert {k for k in accepted if not k.startswith(free)} <= {"label_names = {}", "source = {}"}, accepted
    for must in ("count = 'x'", "latent_dim = -1", "splits.train = None", "signal_shape.0 = 'x'",
                 "model.id = 'x'", "files.latents.safetensors.bytes = -1", "latent_checksum = {}", "task = 'x'"):
        assert out[must] == "refused", must


def test_model_config_fields_are_validated(tmp_path, world):
    shutil.copytree(world["model"], tmp_path / "model")
    out = _mutate_each_field(tmp_path / "model" / "config.json", lambda: _load_model(tmp_path), skip=("training",))
    accepted = {k for k, v in out.items() if v == "ok"}
    # Right type, and within the (open-ended) range: a huge but valid number of steps is a choice. Models
    # written before the execution fields existed lack them: they load with the defaults (auto, auto, off);
    # so do those written before the test-time optimiser, auto stop and momentum (sgd, fixed H, 0).
    assert {k for k in accepted if not k.startswith("funcml_version")} <= {
        "encode.steps = 1000000000000000", "encode.batch_size = 1000000000000000", "encode.seed = -1",
        "encode.inner_lr = 1000000000000000", "encode.seed = 1000000000000000", "encode.backend = <deleted>",
        "encode.precision = <deleted>", "encode.compile = <deleted>", "encode.adam_lr = 1000000000000000",
        "encode.stop_tol = 1000000000000000", "encode.stop_patience = 1000000000000000",
        *(f"encode.{k} = <deleted>" for k in ("optimizer", "adam_lr", "auto_stop", "stop_tol", "stop_patience",
                                                "momentum"))}, \
        accepted
    for must in ("encode.optimizer = 'x'", "encode.adam_lr = -1", "encode.stop_patience = -1",
                 "encode.momentum = -1", "encode.momentum = 1000000000000000"):
        assert out[must] == "refused", must
    for must in ("encode.backend = 'x'", "encode.precision = 'x'", "encode.compile = 'x'", "encode.backend = None"):
        assert out[must] == "refused", must


def test_checkpoint_metadata_fields_are_validated(tmp_path, world):
    shutil.copytree(world["model"], tmp_path / "model")
    out = _mutate_each_field(tmp_path / "model" / "checkpoints" / "last.json", lambda: _load_checkpoint(tmp_path),
                             skip=("history", "field", "train", "window"))
    for must in ("file = 'x'", "sha256 = None", "step = -1", "param_groups.0.lr = 'x'", "config = None",
                 "config.data_fingerprint = <deleted>"):
        assert out[must] == "refused", must
    meta_path = tmp_path / "model" / "checkpoints" / "last.json"
    meta = json.loads(meta_path.read_text())
    meta["file"] = "../../../../etc/passwd"  # a checkpoint must not point outside its folder
    rewrite_json(meta_path, meta)
    assert _outcome(lambda: _load_checkpoint(tmp_path)) == "refused"


def test_unfinished_encode_files_are_validated(tmp_path, world):
    from funcml.data import load_signals as load

    signals = load(world["data"])
    model = FieldModel.load(world["model"])
    cfg = dataclasses.replace(model.encode_defaults, batch_size=4)
    encode_signal_set(model, signals, tmp_path / "part", cfg, model_dir=world["model"], progress=False, max_chunks=2)
    partial = tmp_path / "part.partial"

    def reopen():
        encode_signal_set(model, signals, tmp_path / "part", cfg, model_dir=world["model"], progress=False,
                          max_chunks=0)
    for member in ("job.json", "progress.json"):
        out = _mutate_each_field(partial / member, reopen)
        assert all(v == "refused" for k, v in out.items() if k.startswith(("hash", "rows_done"))), out
    for rows in (3, 10**6):  # not a chunk boundary; more rows than the job has
        rewrite_json(partial / "progress.json", {"rows_done": rows})
        assert _outcome(reopen) == "refused"
    rewrite_json(partial / "progress.json", {"rows_done": 12})  # claims rows that were never written
    assert _outcome(reopen) == "refused"
    (partial / "progress.json").write_text('{"rows_done": NaN}')
    assert _outcome(reopen) == "refused"
