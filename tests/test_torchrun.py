"""`hpff-bench train` under torchrun: two gloo processes on FakeData, one record from rank 0
with both ranks' peaks, and test accuracy summed over the processes' shards."""

import json
import os
import subprocess
import sys


def test_train_under_torchrun_two_processes(tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "hpff_bench", "train", "--network", "resnet20", "--method", "dgl", "--k", "2", "--hilo",
        "--dataset", "fake", "--image-size", "16", "--batch-size", "8", "--epochs", "1",
        "--train-subset", "64", "--test-subset", "30", "--device", "cpu", "--num-workers", "0",
        "--no-progress", "--results", str(tmp_path), "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 1  # rank 0 alone prints and records
    rec = records[0]
    assert rec["status"] == "ok" and rec["timing"]["world_size"] == 2
    assert len(rec["memory"]["per_rank_peak_bytes"]) == 2
    assert rec["memory"]["peak_memory_bytes"] == max(rec["memory"]["per_rank_peak_bytes"])
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 1
    # 30 test images split 15/15 between the ranks: the summed accuracy is a multiple of 1/30
    top1 = rec["accuracy"]["top1"]
    assert abs(top1 * 30 - round(top1 * 30)) < 1e-9
