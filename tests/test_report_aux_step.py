"""The per-aux-step number the report's PFF figure draws: the tracker's `aux_scope_peak`.

It is the peak of the aux activations born in one aux scope and still live, so a PFF run that
streams its patches must show a smaller one than the same run with the patches batched.
"""

from __future__ import annotations

import torch

from hpff_bench.config import RunConfig
from hpff_bench.memory.tracker import LiveTensorTracker
from hpff_bench.profiling import estimate_config
from hpff_bench.scope import scope


def test_aux_scope_peak_counts_live_aux_activations_of_its_scope_only():
    with LiveTensorTracker() as tr:
        outside = torch.ones(1024)  # 4 KiB born in the step scope: not an aux activation
        with scope("aux", None, "aux/a"):
            x = torch.ones(256)  # 1 KiB
            y = torch.ones(512)  # 2 KiB -> 3 KiB live in aux/a
            del x
            z = torch.ones(128)  # 0.5 KiB -> 2.5 KiB live: below the peak
        with scope("aux", None, "aux/b"):
            w = torch.ones(64)  # 256 B
    assert tr.aux_scope_peak == {"aux/a": 3072, "aux/b": 256}
    assert tr.summary()["aux_scope_peak_bytes"] == {"aux/a": 3072, "aux/b": 256}
    del outside, y, z, w


def test_streamed_patches_shrink_the_aux_step_and_batched_do_not():
    """InfoPro's decoder works at image size, so its activations scale with the patch. (DGL's
    aux net pools first: there the patch copies dominate and streaming does not help.)"""

    def aux_step(n, execution):
        cfg = RunConfig(network="resnet20", method="infopro", k=2, batch_size=16, dataset="cifar10",
                        pff_grid=n, pff_exec=execution)
        return max(estimate_config(cfg)["predicted"]["aux_scope_peak_bytes"].values())

    plain, batched, streamed = aux_step(1, "batched"), aux_step(2, "batched"), aux_step(2, "streamed")
    assert streamed < 0.5 * plain, (plain, streamed)  # one patch of four live at a time
    assert batched >= plain, (plain, batched)  # all four patches folded into the batch
