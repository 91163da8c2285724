"""The training command under torchrun: two CPU processes (gloo) on a tiny synthetic dataset."""

import os
import subprocess
import sys

import torch

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
    assert meta["history"][1]["val_images"] == sum(meta["data"]["counts"]["val"].values())
    model_from_checkpoint(load_checkpoint(out / "model.safetensors"))


def test_each_process_trains_on_its_own_disjoint_share_of_every_epoch(tmp_path):
    from core.config import TrainConfig
    from core.distributed import Dist
    from core.split import prepare_data
    from core.trainer import Run, epoch_loader

    cfg = TrainConfig(data=str(write_class_tree(tmp_path / "tree", per_class=12)), batch_size=4, num_workers=0,
                      test_fraction=0.0)
    data = prepare_data(cfg, progress=False)
    for epoch in (0, 1):
        shares = [set(epoch_loader(Run(cfg, 0.0, torch.device("cpu"), "fp32", Dist(rank, 2), tmp_path, data, "", None),
                                   epoch, None).dataset.indices) for rank in (0, 1)]
        assert not shares[0] & shares[1]  # disjoint
        assert len(shares[0]) == len(shares[1]) == len(data.train_idx) // 2 // 4 * 4  # whole batches, same count
        assert shares[0] | shares[1] <= set(data.train_idx.tolist())
