"""benchmarks/gpu_check.py in its reduced CPU mode: every section runs and reports sane numbers (on a
GPU the same script is the five-minute check of docs/gpu.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_in_reduced_mode_and_prints_one_json_object():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["reduced"] and r["skipped"] == [] and r["device"] == "cpu"
    assert r["equivalence"]["float64"]["ok"] and r["equivalence"]["float32"]["ok"]
    assert r["equivalence"]["float64"]["meta_gradient_rel_err"] < 1e-12
    rows = {(s["config"], s["precision"]): s for s in r["steps"]}
    assert set(rows) == {(c, p) for c in ("image-64", "ecg", "volume-32") for p in ("fp32", "tf32", "bf16")}
    for s in rows.values():
        assert s["finite"] and s["median_step_seconds"] > 0 and s["steps"] == 4
        assert abs(s["loss_vs_fp32"]) < 0.05     # tf32/bf16 move the loss a little, not a lot
    assert any(rows[(c, "bf16")]["loss_vs_fp32"] != 0 for c in ("image-64", "ecg", "volume-32"))
    assert [e["precision"] for e in r["encode"]] == ["auto", "fp32"]
    assert all(e["signals_per_second"] > 0 and e["psnr_mean"] > 5 for e in r["encode"])
    # per encoding chunk only its signals come from the host (the steps make no tensor and read nothing)
    assert all(e["syncs"] == {"tensor from host data": 4} for e in r["encode"])
    assert r["syncs"]["syncs_per_step"] >= 0 and "compile" in r
    prof = r["profile"]
    assert prof["steps"] == 4 and prof["busy_ms_per_step"] > 0 and 0 < prof["matmul_share"] < 1
    assert prof["top_ops"] and all(0 < share <= 1 for share in prof["top_ops"].values())
