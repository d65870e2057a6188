"""`hpff-bench train`: train one configuration for accuracy with the papers' recipe."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

from hpff_bench.cli_options import add_config_arguments, config_from_args
from hpff_bench.errors import ConfigError

HELP = """\
Train a configuration and report top-1 test accuracy after every epoch (a tqdm bar per epoch).
The papers' recipe (docs/recipes.md) is the default: SGD, Nesterov momentum 0.9, weight decay 1e-4,
lr 0.8 at batch 1024 (CIFAR-10/100, SVHN) or 0.1 at batch 128 (STL-10); with another
--batch-size and no --lr the lr is scaled linearly (0.1 per 128 images); a cosine schedule with
the official code's linear warm-up from 0.01 over the first 10 epochs; 160 epochs (InfoPro),
400 for HiLo/HPFF runs (HPFF's train.py).
A checkpoint (method, optimizer, scheduler, epoch, RNG) is written after every epoch and
--resume continues from it. A non-finite loss stops the run as `diverged`. The result is
appended to RESULTS/<run-name>.jsonl (the sweep's record format).

Data: --dataset cifar10|cifar100|svhn|stl10 come from torchvision under --data-root (downloaded
when missing and possible; a copy in ImageFolder layout DIR/train/<class>/, DIR/test/<class>/
works too), --dataset folder is any ImageFolder directory, --dataset fake is torchvision's
FakeData (random images: for smoke tests, accuracy stays at chance).

Short CPU runs: --epochs 2 --train-subset 2000 --test-subset 1000 --batch-size 64."""


def add_parser(subparsers) -> None:
    from hpff_bench.runner.train import RECIPE_EPOCHS

    p = subparsers.add_parser(
        "train", help="train a configuration for accuracy (papers' recipe)", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter, conflict_handler="resolve",
        allow_abbrev=False,  # else --warmup would silently mean --warmup-epochs
    )
    add_config_arguments(p, step_counts=False)
    r = p.add_argument_group("recipe (defaults: the papers')")
    r.add_argument("--batch-size", type=int, default=None,
                   help="default: the recipe's (1024 CIFAR/SVHN, 128 STL-10)")
    r.add_argument("--lr", type=float, default=None,
                   help="default: the recipe's, scaled to --batch-size (0.8 at 1024, 0.1 at 128)")
    r.add_argument("--epochs", type=int, default=None,
                   help=f"(default: the paper's, hpff_bench/recipes.toml: {RECIPE_EPOCHS} (InfoPro), 400 for --hilo/--hpff runs (HPFF))")
    r.add_argument("--warmup-epochs", type=int, default=None,
                   help="linear warm-up from 0.01 (default 10, or epochs // 16 when shorter)")
    d = p.add_argument_group("data")
    d.add_argument("--data-root", default="data", help="where datasets are / are downloaded to (default %(default)s)")
    d.add_argument("--no-download", action="store_true", help="never try to download")
    d.add_argument("--train-subset", type=int, default=None, metavar="N", help="train on a fixed random N images")
    d.add_argument("--test-subset", type=int, default=None, metavar="N", help="test on a fixed random N images")
    d.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    d.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers (default 0 on CPU, min(8, cores) on CUDA)")
    o = p.add_argument_group("checkpoints and output")
    o.add_argument("--results", default="results/train", metavar="DIR",
                   help="append the result record to DIR/<run-name>.jsonl (default %(default)s)")
    o.add_argument("--no-record", action="store_true", help="do not write a result record")
    o.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="default: RESULTS/checkpoints/<run-name>-<hash of config and options>")
    o.add_argument("--resume", action="store_true", help="continue from the checkpoint's last epoch")
    o.add_argument("--keep-checkpoints", action="store_true", help="keep every epoch's checkpoint, not only last.pt")
    o.add_argument("--json", action="store_true", help="print the result record as JSON on stdout")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpff_bench import validation as V
    from hpff_bench.data.datasets import DataUnavailable, availability
    from hpff_bench.runner import store
    from hpff_bench.runner.env import capture_env
    from hpff_bench.runner.preflight import check_measured_run
    from hpff_bench.runner.suite import config_run_name
    from hpff_bench.runner.train import TrainOptions, recipe_batch_size, recipe_lr, train

    if args.batch_size is None:
        args.batch_size = recipe_batch_size(args.dataset)
    lr_given = args.lr is not None
    if not lr_given:
        args.lr = recipe_lr(args.dataset, args.batch_size)
    cfg = config_from_args(args)
    if args.epochs is None:
        from hpff_bench.recipes import recipe_epochs

        args.epochs = recipe_epochs(cfg)
    opts = TrainOptions(
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        data_root=args.data_root,
        download=not args.no_download,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        augment=not args.no_augment,
        num_workers=args.num_workers,
        resume=args.resume,
        keep_checkpoints=args.keep_checkpoints,
        progress=not args.no_progress,
    ).validate()
    name = config_run_name(cfg)
    V.string("--results", args.results)  # '' is no directory (Path('') would be the current one)
    V.string("--checkpoint-dir", args.checkpoint_dir, allow_none=True)
    results = Path(args.results)
    if not (args.no_record and args.checkpoint_dir):  # the record and the default checkpoints go there
        V.output_dir("--results", results)
    if args.checkpoint_dir:
        V.output_dir("--checkpoint-dir", args.checkpoint_dir)
    check_measured_run(cfg, "training", batch_size=max(cfg.batch_size, opts.resolved_eval_batch_size(cfg.batch_size)))
    # the data last (it may download): missing data is bad input, refused before anything is written
    missing = availability(cfg.dataset, opts.data_root, download=opts.download)
    if missing:
        raise ConfigError(missing)
    key = hashlib.sha256(json.dumps([cfg.config_id(), opts.result_options()], sort_keys=True).encode()).hexdigest()[:10]
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else results / "checkpoints" / f"{name}-{key}"
    opts = dataclasses.replace(opts, checkpoint_dir=str(ckpt))
    if not args.no_record:
        V.create_dir("--results", results)
    V.create_dir("--checkpoint-dir" if args.checkpoint_dir else "--results", ckpt)
    say = (lambda s: print(s, file=sys.stderr)) if args.json else print
    say(
        f"train {cfg.label} ({cfg.network}, K={cfg.k}) on {cfg.dataset}: batch {cfg.batch_size}, "
        f"lr {cfg.lr:g}{'' if lr_given else ' (recipe)'}, {opts.epochs} epochs, "
        f"warm-up {opts.resolved_warmup_epochs}, device {cfg.device}"
        + (f", {opts.train_subset} training images" if opts.train_subset else "")
    )
    try:
        result = train(cfg, opts, log=say if args.no_progress else None)
    except DataUnavailable as e:  # the data went away since it was checked
        raise ConfigError(str(e)) from e
    import torch

    from hpff_bench import distributed

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 records and reports
        distributed.shutdown()
        return 0 if result.status == "ok" else 1
    distributed.shutdown()
    rec = store.make_record(
        "train", result.status, suite="train", run_name=name, message=result.message,
        env=capture_env(init_cuda=torch.cuda.is_available() and torch.cuda.is_initialized()),
        **result.record_parts(),
    )
    path = None
    if not args.no_record:
        path = store.append_record(store.run_file(results, name), rec)
    if args.json:
        print(store.dumps(rec))
    acc = rec["accuracy"]
    top1 = acc["top1"]
    step = rec["timing"]["step_seconds"]
    say(
        f"{cfg.label}: {result.status}: "
        + (f"top-1 {100 * top1:.2f}% (test error {acc['test_error_pct']:.2f}%) after {acc['epochs']} epoch(s)" if top1 is not None else "no finished epoch")
        + (f"; median step {step:.3f} s ({rec['timing']['images_per_second']:.0f} images/s)" if step else "")
        + f"; {result.modules} module(s), {result.params:,} parameters"
    )
    if result.message:
        say(f"  {result.message}")
    if path:
        say(f"  record: {path}")
    say(f"  checkpoint: {ckpt / 'last.pt'}" + ("" if args.resume else " (continue with --resume)"))
    return 0 if result.status == "ok" else 1
