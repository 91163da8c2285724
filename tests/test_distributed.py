"""The training command under torchrun: two CPU processes (gloo) on a tiny synthetic dataset."""

import os
import subprocess
import sys

from conftest import ROOT, write_class_tree
from core.checkpoint import load_checkpoint, model_from_checkpoint, read_metadata


def test_torchrun_with_two_cpu_processes_trains_one_model(tmp_path):
    data = write_class_tree(tmp_path / "tree", per_class=12)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "training.train", "--data", str(data), "--out", str(out), "--weights", "none",
               "--image-size", "48", "--epochs", "2", "--head-epochs", "1", "--batch-size", "4",
               "--num-workers", "0", "--precision", "fp32", "--no-progress", "--test-fraction", "0"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("saved ") == 1  # only rank 0 writes and reports
    meta = read_metadata(out / "model.safetensors")
    assert meta["training"]["processes"] == 2
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    # each process trained on its own half: one optimisation pass saw every training image once
    train_images = sum(meta["data"]["counts"]["train"].values())
    assert meta["history"][1]["val_images"] == sum(meta["data"]["counts"]["val"].values())
    assert train_images >= 36
    model_from_checkpoint(load_checkpoint(out / "model.safetensors"))
