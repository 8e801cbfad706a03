"""The command line end to end on small real files, and its error handling."""

import json
import subprocess
import sys

import numpy as np
import pytest

from funcml.cli import main

TINY = ["--width", "16", "--depth", "3", "--latent-dim", "8", "--batch-size", "4", "--inner-steps", "2",
        "--inner-lr", "0.5", "--outer-lr", "3e-3", "--test-steps", "3", "--val-every", "3", "--val-signals", "4",
        "--seed", "1", "--device", "cpu"]


def write_medmnist_npz(path, n=(12, 4, 4), size=8, seed=0):
    """A MedMNIST-layout file of smooth uint8 images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        imgs = np.stack([128 + 100 * np.sin(rng.uniform(1, 4) * xx + rng.uniform(0, 3) * yy) for _ in range(count)])
        arrays[f"{split}_images"] = imgs.astype(np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, size=(count, 1)).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def run(argv, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_train_encode_evaluate_info(tmp_path, capsys):
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz"))
    code, out, err = run(["train", data, "--out", str(tmp_path / "m"), "--steps", "6", "--json", *TINY], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["val_psnr"] > 5 and rep["median_step_seconds"] > 0 and rep["peak_memory_bytes"] > 0
    assert rep["steps_done"] == 6 and rep["finished"]

    code, out, err = run(["encode", data, "--model", str(tmp_path / "m"), "--out", str(tmp_path / "lat"),
                          "--batch-size", "5", "--json"], capsys)
    assert code == 0, err
    enc = last_json(out)
    assert enc["count"] == 20 and enc["latent_dim"] == 8 and set(enc["psnr_by_split"]) == {"train", "val", "test"}

    code, out, err = run(["evaluate", str(tmp_path / "lat"), "--data", data, "--out", str(tmp_path / "ev"), "--json"],
                         capsys)
    assert code == 0, err
    ev = last_json(out)
    assert ev["all"]["count"] == 20 and 0 < ev["test"]["ssim"] <= 1
    assert ev["all"]["psnr"] == pytest.approx(enc["psnr_mean"], abs=1e-3)
    assert (tmp_path / "ev" / "reconstructions.png").stat().st_size > 1000
    assert ev["figure"] == str(tmp_path / "ev" / "reconstructions.png")

    # Evaluating reads the latent set only, and can be repeated; --out must be new unless --overwrite.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "lat").rglob("*")}
    for _ in range(2):
        code, out, err = run(["evaluate", str(tmp_path / "lat"), "--data", data, "--json"], capsys)
        assert code == 0, err
        assert last_json(out)["all"] == ev["all"] and "figure" not in last_json(out)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "lat").rglob("*")} == before
    code, _, err = run(["evaluate", str(tmp_path / "lat"), "--data", data, "--out", str(tmp_path / "ev")], capsys)
    assert code != 0 and "exists" in err
    code, _, err = run(["evaluate", str(tmp_path / "lat"), "--data", data, "--out", str(tmp_path / "ev"),
                        "--overwrite"], capsys)
    assert code == 0, err

    code, out, err = run(["info", str(tmp_path / "lat"), "--json"], capsys)
    info = last_json(out)
    assert info["kind"] == "latent-set" and info["checksum_verified"] and info["latent_checksum"] == enc["latent_checksum"]
    code, out, err = run(["info", str(tmp_path / "m"), "--json"], capsys)
    assert last_json(out)["kind"] == "model" and last_json(out)["field"]["latent_dim"] == 8


def test_a_run_killed_after_its_last_step_finishes_on_rerun(tmp_path, capsys):
    """Killed between the final checkpoint and the "finished" mark: the rerun runs no step, and still reports."""
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz"))
    argv = ["train", data, "--out", str(tmp_path / "m"), "--steps", "3", "--checkpoint-every", "3", *TINY]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    last = tmp_path / "m" / "checkpoints" / "last.json"
    meta = json.loads(last.read_text())
    assert meta["step"] == 3 and meta["finished"]
    last.write_text(json.dumps({**meta, "finished": False}))
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["steps_done"] == 3 and rep["finished"] and rep["median_step_seconds"] is None
    assert "median step n/a" in err and json.loads(last.read_text())["finished"]


@pytest.mark.parametrize("argv, message", [
    (["train", "missing.npz", "--out", "{tmp}/m"], "data not found"),
    (["train", "demo", "--out", "{tmp}/m", "--resolution", "6x"], "--resolution"),
    (["train", "demo", "--out", "{tmp}/m", "--preset", "nope"], "unknown preset"),
    (["train", "demo", "--out", "{tmp}/m", "--context-ratio", "1.5"], "--context-ratio"),
    (["train", "demo", "--out", "{tmp}/m", "--preset", "cpu-ecg"], "1-D"),
    (["encode", "demo", "--model", "{tmp}/nomodel", "--out", "{tmp}/x"], "model directory not found"),
    (["evaluate", "{tmp}/nolatents", "--data", "demo"], "latent set not found"),
    (["info", "{tmp}/corrupt.npz"], "corrupt"),
    (["import-mednf", "{tmp}/nothing", "--out", "{tmp}/x"], "not found"),
])
def test_user_errors_end_with_one_message_and_a_nonzero_exit(tmp_path, argv, message):
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "funcml", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(("error:", "Error:"))


def test_existing_outputs_and_mismatched_models_are_refused(tmp_path, capsys):
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz"))
    assert run(["train", data, "--out", str(tmp_path / "m"), "--steps", "3", *TINY], capsys)[0] == 0
    assert run(["train", data, "--out", str(tmp_path / "m2"), "--steps", "3", *TINY[:4], "--latent-dim", "9",
                *TINY[6:]], capsys)[0] == 0
    assert run(["encode", data, "--model", str(tmp_path / "m"), "--out", str(tmp_path / "lat")], capsys)[0] == 0
    code, _, err = run(["encode", data, "--model", str(tmp_path / "m"), "--out", str(tmp_path / "lat")], capsys)
    assert code != 0 and "--overwrite" in err
    code, _, err = run(["evaluate", str(tmp_path / "lat"), "--data", data, "--model", str(tmp_path / "m2")], capsys)
    assert code != 0 and "latent dimension" in err
    other = str(write_medmnist_npz(tmp_path / "othermnist.npz", seed=5))
    code, _, err = run(["evaluate", str(tmp_path / "lat"), "--data", other], capsys)
    assert code != 0 and "fingerprints differ" in err
    code, _, err = run(["train", data, "--out", str(tmp_path / "m"), "--steps", "3", *TINY], capsys)
    assert code != 0 and "finished run" in err


def test_max_minutes_without_steps_is_a_time_budget_and_presets_show_their_budgets(tmp_path, capsys):
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz"))
    code, out, err = run(["train", data, "--out", str(tmp_path / "m"), "--max-minutes", "0.01", "--json", *TINY],
                         capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["schedule"] == "time" and rep["budget_minutes"] == 0.01 and rep["train"]["budget_minutes"] == 0.01
    assert rep["stopped_by"] == "budget" and rep["finished"] and rep["steps_done"] >= 1 and rep["rollbacks"] == []
    assert "0.01-minute budget" in err
    code, out, err = run(["train", data, "--out", str(tmp_path / "s"), "--steps", "2", "--max-minutes", "5", "--json",
                          *TINY], capsys)
    rep = last_json(out)
    assert code == 0 and rep["schedule"] == "steps" and rep["steps_done"] == 2 and rep["stopped_by"] == "steps"
    code, out, _ = run(["presets", "--json"], capsys)
    presets = last_json(out)
    assert presets["cpu-image"]["minutes"] > 0 and all(p["minutes"] > 0 for p in presets.values())
    code, out, _ = run(["presets"], capsys)
    assert f"{presets['cpu-image']['minutes']:g} min" in out


def test_the_64_preset_trains_on_its_64x64_grid_unless_resolution_says_otherwise(tmp_path, capsys):
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz"))
    shapes = {}
    for name, extra in (("preset", []), ("own", ["--resolution", "8x8"])):
        code, _, err = run(["train", data, "--preset", "cpu-image-64", "--out", str(tmp_path / name), "--steps", "1",
                            *TINY, *extra], capsys)
        assert code == 0, err
        shapes[name] = json.loads((tmp_path / name / "config.json").read_text())["signal_shape"]
    assert shapes == {"preset": [1, 64, 64], "own": [1, 8, 8]}
    code, out, _ = run(["presets", "--json"], capsys)
    assert code == 0 and last_json(out)["cpu-image-64"]["minutes"] == 30.0
