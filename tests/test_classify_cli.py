"""`funcml classify` and `funcml baseline` end to end, the classifier directory, the demo stage."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from funcml.latents import LatentSet, write_latent_set
from funcml.tasks.classify import load_classifier
from test_cli import last_json, run, write_medmnist_npz


def _latents(path, task="binary-class", n=200, seed=0, model_id="a" * 64, p=8, drop_class=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)).astype(np.float32)
    if task == "binary-class":
        y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)[:, None]
        names = {"0": "benign", "1": "malignant"}
    elif task == "multi-label, binary-class":
        y = (x[:, :3] > 0).astype(int)
        names = {"0": "a", "1": "b", "2": "c"}
    else:
        y = np.digitize(x[:, 0], [-0.8, 0.0, 0.8])[:, None]
        names = {str(i): c for i, c in enumerate("NSVF")}
    splits = np.r_[np.zeros(n // 2), np.ones(n // 4), np.full(n - n // 2 - n // 4, 2)].astype(np.uint8)
    if drop_class is not None:  # a class seen only outside the training split
        splits[(y[:, 0] == drop_class)] = 2
    return write_latent_set(path, x, splits=splits, labels=y, task=task, label_names=names, model_id=model_id,
                            signal_shape=(1, 8, 8))


def test_classify_writes_a_loadable_classifier_directory(tmp_path, capsys):
    _latents(tmp_path / "lat")
    code, out, err = run(["classify", "--latents", str(tmp_path / "lat"), "--model", "logreg", "--out",
                          str(tmp_path / "clf"), "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert "sensitivity (Se)" in err and "malignant" in err
    assert rep["counts"] == {"train": 100, "val": 50, "eval": 50} and len(rep["search"]) == 4
    assert rep["test"]["accuracy"] > 0.8 and rep["fit_seconds"] > 0
    d = tmp_path / "clf"
    for name in ("classifier.json", "classifier.safetensors", "predictions.csv", "metrics.json",
                 "confusion_matrix.png", "roc.png"):
        assert (d / name).is_file(), name
    meta = json.loads((d / "classifier.json").read_text())
    assert meta["format"] == "funcml.classifier" and meta["version"] == 1 and meta["kind"] == "logreg"
    assert meta["model_id"] == "a" * 64 and meta["class_names"] == ["benign", "malignant"]
    assert meta["metrics"]["test"]["accuracy"] == pytest.approx(rep["test"]["accuracy"])
    # the predictions file, the reloaded classifier and the reported metrics agree
    pred = pd.read_csv(d / "predictions.csv")
    ls = LatentSet.open(tmp_path / "lat")
    x_test, y_test = ls.split("test")
    assert list(pred["row"]) == list(ls.split_indices("test"))
    clf = load_classifier(d)
    np.testing.assert_allclose(clf.predict_proba(x_test)[:, 1], pred["p_malignant"], rtol=1e-5, atol=1e-6)
    assert accuracy_score(y_test[:, 0], pred["pred"]) == pytest.approx(rep["test"]["accuracy"])
    assert roc_auc_score(y_test[:, 0], pred["p_malignant"]) == pytest.approx(rep["test"]["auc"], abs=1e-5)
    assert clf.as_torch_module()(torch.from_numpy(x_test)).shape == (len(x_test), 2)


@pytest.mark.parametrize("task", ["multi-class", "multi-label, binary-class"])
def test_classify_other_task_types(task, tmp_path, capsys):
    _latents(tmp_path / "lat", task=task)
    code, out, err = run(["classify", "--latents", str(tmp_path / "lat"), "--model", "knn", "--param", "n_neighbors=3",
                          "--out", str(tmp_path / "clf"), "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["params"]["n_neighbors"] == 3 and rep["task"] == task
    k = 4 if task == "multi-class" else 3
    assert len(rep["test"]["per_class"]) == k
    pred = pd.read_csv(tmp_path / "clf" / "predictions.csv")
    assert (pred.filter(like="p_").shape[1]) == k


def test_class_absent_from_training_gets_a_zero_column(tmp_path):
    from funcml.tasks.classify import classify_latent_set

    ls = _latents(tmp_path / "lat", task="multi-class", drop_class=3)
    result = classify_latent_set(ls, "logreg", search=False)
    assert list(result.classifier.classes_) == [0, 1, 2]
    assert result.proba.shape[1] == 4 and np.all(result.proba[:, 3] == 0)
    assert result.report["test"]["per_class"]["F"]["sensitivity"] == 0.0


def test_test_latents_of_other_records(tmp_path, capsys):
    _latents(tmp_path / "lat", task="multi-class")
    _latents(tmp_path / "other", task="multi-class", n=80, seed=3)
    code, out, err = run(["classify", "--latents", str(tmp_path / "lat"), "--model", "gnn", "--param",
                          "max_epochs=20", "--no-search", "--test-latents", str(tmp_path / "other"), "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["counts"]["eval"] == 80 and rep["test"]["count"] == 80
    _latents(tmp_path / "foreign", task="multi-class", model_id="b" * 64)
    code, out, err = run(["classify", "--latents", str(tmp_path / "lat"), "--test-latents", str(tmp_path / "foreign")],
                         capsys)
    assert code == 2 and "error:" in err and "different models" in err and "Traceback" not in err


def test_classify_user_errors(tmp_path, capsys):
    write_latent_set(tmp_path / "unlabelled", np.zeros((10, 3)), splits=np.zeros(10))
    code, _, err = run(["classify", "--latents", str(tmp_path / "unlabelled")], capsys)
    assert code == 2 and "no labels" in err
    _latents(tmp_path / "lat")
    code, _, err = run(["classify", "--latents", str(tmp_path / "lat"), "--model", "logreg", "--param", "Cx=1"], capsys)
    assert code == 2 and "Cx" in err
    code, _, err = run(["classify", "--latents", str(tmp_path / "lat"), "--model", "knn", "--class-weight", "balanced"],
                       capsys)
    assert code == 2 and "class-weight" in err
    (tmp_path / "exists").mkdir()
    code, _, err = run(["classify", "--latents", str(tmp_path / "lat"), "--out", str(tmp_path / "exists")], capsys)
    assert code == 2 and "--overwrite" in err


def test_paper_mlp_preset(tmp_path):
    from funcml.tasks.classify import classify_latent_set

    ls = _latents(tmp_path / "lat")
    result = classify_latent_set(ls, "mlp", preset="paper", params={"max_epochs": 2})
    assert tuple(result.classifier.hidden_layer_sizes) == (2048, 1024, 512) and result.classifier.dropout == 0.3
    layers = [m for m in result.classifier.net_ if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in layers] == [2048, 1024, 512, 1]


def test_demo_stage_writes_an_explainable_classifier(tmp_path):
    from funcml.demo import DemoContext
    from funcml.demo.stages.classification import classification_stage

    ls = _latents(tmp_path / "lat", n=120)
    ctx = DemoContext(out=tmp_path / "report", signals=None, model=None, latent_set=ls, device=torch.device("cpu"),
                      quick=True, log=lambda s: None)
    (tmp_path / "report").mkdir()
    rep = classification_stage(ctx)
    assert set(rep) >= {"mlp", "logreg", "knn"} and 0 <= rep["mlp"]["accuracy"] <= 1
    clf = load_classifier(tmp_path / "report" / "classifier")
    assert clf.kind == "mlp" and clf.as_torch_module() is not None


# -- the pixel baseline -----------------------------------------------------------------------------

@pytest.mark.parametrize("dim,shape", [(1, (2, 16)), (2, (1, 12, 12)), (3, (1, 8, 8, 8)), (2, (3, 80, 96))])
def test_resnet18_shapes(dim, shape):
    from funcml.tasks.baseline import ResNet18

    net = ResNet18(dim, shape[0], 5, width=4, small_input=max(shape[1:]) <= 32)
    assert net(torch.zeros(2, *shape)).shape == (2, 5)
    full = ResNet18(2, 1, 2)  # width 64: ResNet-18's 11.2 M parameters (+ the small stem and 2 outputs)
    assert 11.1e6 < sum(p.numel() for p in full.parameters()) < 11.3e6


def test_baseline_cli_and_resume(tmp_path, capsys):
    from funcml.data import load_signals
    from funcml.tasks.baseline import train_pixel_baseline

    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz", n=(24, 8, 8)))
    code, out, err = run(["baseline", data, "--epochs", "2", "--width", "4", "--batch-size", "8", "--json",
                          "--device", "cpu"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["epochs_done"] == 2 and rep["train_seconds"] > 0 and rep["test"]["count"] == 8
    assert 0 <= rep["test"]["accuracy"] <= 1 and rep["model"] == "resnet18-2d"

    signals = load_signals(data)
    kw = dict(width=4, epochs=3, batch_size=8, progress=False)
    full = train_pixel_baseline(signals, out=tmp_path / "full", **kw)
    part = train_pixel_baseline(signals, out=tmp_path / "part", max_minutes=1e-9, **kw)  # stops after one epoch
    assert part["epochs_done"] == 1 and part["stopped_by"] == "max_minutes"
    resumed = train_pixel_baseline(signals, out=tmp_path / "part", **kw)
    assert resumed["epochs_done"] == 3
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx([h["train_loss"] for h in full["history"]])
    assert resumed["test"]["auc"] == pytest.approx(full["test"]["auc"])
    for name in ("model.safetensors", "metrics.json", "predictions.csv", "confusion_matrix.png", "roc.png"):
        assert (tmp_path / "full" / name).is_file()
    with pytest.raises(Exception, match="overwrite"):
        train_pixel_baseline(signals, out=tmp_path / "full", **kw)
