"""Training for accuracy with the papers' recipe (docs/recipes.md), checkpoints and resume.

Recipe: SGD with Nesterov momentum 0.9 and weight decay 1e-4 (RunConfig's defaults); lr 0.8 at
batch 1024 for CIFAR-10/100 and SVHN, 0.1 at batch 128 for STL-10 (both 0.1 per 128 images:
`recipe_lr` scales the lr linearly when only the batch size is changed); a cosine schedule
over the run, into which the official code blends a linear warm-up from 0.01 over the first 10
epochs; 160 epochs (InfoPro; HPFF trained 400). The schedule is evaluated per step:

    cos(e)  = lr/2 * (1 + cos(pi * e / epochs))            e = fractional epoch
    lr(e)   = w0 + (cos(e) - w0) * e / warmup   for e < warmup (w0 = min(0.01, lr))
            = cos(e)                             otherwise

Every epoch: top-1 test accuracy, a checkpoint (`last.pt`: method and optimizer state dicts,
scheduler, epoch, RNG states, history) written atomically, and `on_epoch(info)` for callers.
A non-finite training loss stops the run with status `diverged`.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from hpff_bench import validation as V
from hpff_bench.config import RunConfig
from hpff_bench.data.datasets import DEFAULT_DATA_ROOT, load_splits
from hpff_bench.errors import ConfigError

# dataset -> (batch size, lr) of the papers' recipe; 0.1 per 128 images in both.
RECIPES: dict[str, tuple[int, float]] = {
    "cifar10": (1024, 0.8),
    "cifar100": (1024, 0.8),
    "svhn": (1024, 0.8),
    "stl10": (128, 0.1),
    "folder": (1024, 0.8),
    "fake": (1024, 0.8),
    "imagenet": (256, 0.1),  # torchvision's reference recipe; not a paper number
}
RECIPE_EPOCHS = 160
RECIPE_WARMUP_EPOCHS = 10
WARMUP_START_LR = 0.01


def recipe_batch_size(dataset: str) -> int:
    return RECIPES.get(dataset, RECIPES["cifar10"])[0]


def recipe_lr(dataset: str, batch_size: int | None = None) -> float:
    """The recipe's lr, scaled linearly when `batch_size` differs from the recipe's batch."""
    batch, lr = RECIPES.get(dataset, RECIPES["cifar10"])
    return lr if batch_size is None else lr * batch_size / batch


def default_warmup_epochs(epochs: int) -> int:
    """10 (the official code) for full runs; epochs // 16 for short ones (160 -> 10, 8 -> 0)."""
    return min(RECIPE_WARMUP_EPOCHS, epochs // 16)


@dataclass(frozen=True)
class TrainOptions:
    """What `train` needs beyond the RunConfig (model, method, batch size, lr, seed, device)."""

    epochs: int = RECIPE_EPOCHS
    warmup_epochs: int | None = None  # None: default_warmup_epochs(epochs)
    warmup_start_lr: float = WARMUP_START_LR
    data_root: str = DEFAULT_DATA_ROOT
    download: bool = True
    train_subset: int | None = None
    test_subset: int | None = None
    augment: bool = True
    num_workers: int | None = None  # None: 0 on CPU (compute uses every core), min(8, cores) on CUDA
    eval_batch_size: int | None = None
    checkpoint_dir: str | None = None
    resume: bool = False
    keep_checkpoints: bool = False  # also keep epoch{N}.pt next to last.pt
    progress: bool = True  # tqdm bar per epoch and a line per epoch on stderr

    # options that change the result: compared on --resume, stored in the record's `options`
    RESULT_FIELDS = ("epochs", "warmup_epochs", "warmup_start_lr", "train_subset", "test_subset", "augment")

    @property
    def resolved_warmup_epochs(self) -> int:
        return default_warmup_epochs(self.epochs) if self.warmup_epochs is None else self.warmup_epochs

    def result_options(self) -> dict:
        d = {k: getattr(self, k) for k in self.RESULT_FIELDS}
        d["warmup_epochs"] = self.resolved_warmup_epochs
        return d

    def resolved_eval_batch_size(self, batch_size: int) -> int:
        """The test loader's batch: eval_batch_size, else the training batch within [256, 1024]."""
        return self.eval_batch_size or min(1024, max(batch_size, 256))

    def validate(self) -> TrainOptions:
        V.integer("--epochs", self.epochs, low=1, high=V.MAX_EPOCHS)
        V.integer("--warmup-epochs", self.warmup_epochs, low=0, high=self.epochs, allow_none=True)
        for name in ("train_subset", "test_subset", "eval_batch_size"):
            V.integer(f"--{name.replace('_', '-')}", getattr(self, name), low=1, high=V.MAX_IMAGES, allow_none=True)
        V.integer("--num-workers", self.num_workers, low=0, high=V.MAX_WORKERS, allow_none=True)
        V.number("warmup_start_lr", self.warmup_start_lr, low=0, low_open=True)
        V.string("--data-root", self.data_root)
        V.string("--checkpoint-dir", self.checkpoint_dir, allow_none=True)
        for name in ("download", "augment", "resume", "keep_checkpoints", "progress"):
            V.boolean(name, getattr(self, name))
        return self

    @classmethod
    def from_dict(cls, d: dict) -> TrainOptions:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown train option(s) {unknown}; allowed: {sorted(known)}")
        return cls(**d)


def lr_at(epoch: float, lr: float, epochs: int, warmup_epochs: int, warmup_start_lr: float = WARMUP_START_LR) -> float:
    """The schedule (module docstring) at fractional epoch `epoch`."""
    cos = 0.5 * lr * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
    if warmup_epochs > 0 and epoch < warmup_epochs:
        start = min(warmup_start_lr, lr)
        return start + (cos - start) * epoch / warmup_epochs
    return cos


@dataclass
class TrainResult:
    status: str  # ok | diverged
    message: str | None
    config: RunConfig
    options: dict
    modules: int
    params: int
    forward_calls: int | None  # backbone-module forward calls per training step
    per_epoch: list[dict] = field(default_factory=list)
    step_seconds: float | None = None
    steps: int = 0
    data_source: str | None = None
    checkpoint: str | None = None
    memory: dict | None = None  # per-process peaks under torchrun
    world_size: int = 1

    @property
    def top1(self) -> float | None:
        return self.per_epoch[-1]["top1"] if self.per_epoch else None

    def record_parts(self) -> dict:
        """The record keys a train run fills (for hpff_bench.runner.store.make_record)."""
        top1 = self.top1
        bs = self.config.batch_size
        return {
            "config": self.config,
            "modules": self.modules,
            "params": self.params,
            "forward_calls": self.forward_calls,
            "options": self.options,
            "memory": self.memory,
            "timing": {
                "step_seconds": self.step_seconds,
                # every process steps its own batch at once: images/s of the whole job
                "images_per_second": (bs * self.world_size / self.step_seconds) if self.step_seconds else None,
                "world_size": self.world_size,
                "steps": self.steps,
            },
            "accuracy": {
                "top1": top1,
                "test_error_pct": None if top1 is None else round(100.0 * (1.0 - top1), 4),
                "epochs": len(self.per_epoch),
                "per_epoch": self.per_epoch,
                "data": self.data_source,
            },
        }


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def _rng_state() -> dict:
    """Every RNG's state as tensors and lists, so the checkpoint loads with weights_only=True."""
    import numpy as np
    import torch

    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


CHECKPOINT_FORMAT = 2  # 2: RNG states as tensors/lists (weights_only) and an identity side file


def identity_path(ckpt_path: Path) -> Path:
    """The plain-JSON side file saying which run a checkpoint belongs to (last.pt -> last.identity;
    not *.json, which `report` and the results store read as results)."""
    return ckpt_path.with_suffix(".identity")


def _save(obj: dict, path: Path) -> None:
    """Checkpoint and identity, each written to a temporary file and renamed (atomic: a kill
    mid-save leaves the previous pair intact; both halves name the same run)."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    ident = identity_path(path)
    ident_tmp = ident.with_name(ident.name + ".tmp")
    identity = {"format": obj["format"], "config": obj["config"], "options": obj["options"], "epoch": obj["epoch"]}
    ident_tmp.write_text(json.dumps(identity, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(ident_tmp, ident)
    os.replace(tmp, path)


def load_checkpoint(ckpt_path: Path, config: dict, options: dict, device) -> dict:
    """The checkpoint at `ckpt_path`, after its identity file says it belongs to this run
    (config and result options); loaded with weights_only=True, so no code in it runs."""
    import pickle

    import torch

    ident_file = identity_path(ckpt_path)
    start_over = "run without --resume to start over"
    try:
        identity = json.loads(ident_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{ckpt_path} has no identity file {ident_file.name} next to it (not written by this "
                          f"hpff-bench version); {start_over}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{ident_file}: not a readable identity file ({e}); {start_over}") from None
    if not isinstance(identity, dict) or identity.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{ident_file}: not a format-{CHECKPOINT_FORMAT} checkpoint identity; {start_over}")
    if identity.get("config") != config or identity.get("options") != options:
        raise ConfigError(
            f"{ckpt_path} was written for another run ("
            + (_diff(identity.get("config") or {}, config) or _diff(identity.get("options") or {}, options))
            + f"); {start_over}, or with the same options"
        )
    try:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{ckpt_path}: refused to load (it holds more than tensors and plain data, or is "
                          f"damaged: {first[:200]}); {start_over}") from None
    if not isinstance(ckpt, dict) or ckpt.get("config") != config or ckpt.get("options") != options:
        raise ConfigError(f"{ckpt_path} does not match its identity file {ident_file.name}; {start_over}")
    return ckpt


def _diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))


@dataclass
class _Loaders:
    train: object
    test: object
    generator: object
    source: str


def build_loaders(cfg: RunConfig, opts: TrainOptions, device, ctx=None) -> _Loaders:
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

    splits = load_splits(
        cfg.dataset,
        opts.data_root,
        cfg.resolved_image_size,
        num_classes=cfg.resolved_num_classes,
        download=opts.download,
        augment=opts.augment,
        seed=cfg.seed,
        train_subset=opts.train_subset,
        test_subset=opts.test_subset,
    )
    if splits.num_classes != cfg.resolved_num_classes:
        raise ConfigError(
            f"the data ({splits.source}) has {splits.num_classes} classes but the run is configured "
            f"for {cfg.resolved_num_classes}: pass --num-classes {splits.num_classes}"
        )
    workers = opts.num_workers
    if workers is None:
        workers = 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)
    g = torch.Generator()
    pin = device.type == "cuda"
    common = {"num_workers": workers, "pin_memory": pin, "persistent_workers": workers > 0}
    n = len(splits.train)
    test_set = splits.test
    if ctx is not None and ctx.enabled:
        # --batch-size is per process; every process sees its own shard of every epoch
        sampler = DistributedSampler(splits.train, ctx.world_size, ctx.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
        n //= ctx.world_size
        # test: disjoint strided shards (no padding), so summed counts are exact
        test_set = Subset(splits.test, range(ctx.rank, len(splits.test), ctx.world_size))
    else:
        sampler = RandomSampler(splits.train, generator=g)
    train = DataLoader(
        splits.train,
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=n > cfg.batch_size,  # a last batch of 1 breaks BatchNorm in the aux nets
        generator=g,
        **common,
    )
    eval_bs = opts.resolved_eval_batch_size(cfg.batch_size)
    test = DataLoader(test_set, batch_size=eval_bs, shuffle=False, **common)
    return _Loaders(train, test, g, splits.source)


def evaluate(method, loader, device, ctx=None) -> float:
    """Top-1 accuracy (0-1) of `method.predict` over `loader` (summed over processes)."""
    import torch

    from hpff_bench import distributed

    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            correct += (method.predict(x).argmax(1) == y).sum().item()
            total += y.numel()
    if ctx is not None:
        correct, total = distributed.sum_across([correct, total], ctx)
    return correct / max(total, 1)


def _process_peak_bytes(device) -> tuple[str, int]:
    """This process's peak: the CUDA allocator's on a GPU, else the max resident set size."""
    import resource

    import torch

    if device.type == "cuda":
        return "cuda-allocator", int(torch.cuda.max_memory_allocated(device))
    return "process-max-rss", int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def train(cfg: RunConfig, opts: TrainOptions | None = None, on_epoch=None, log=None) -> TrainResult:
    """Train `cfg` with `opts`; raises DataUnavailable (data missing), ConfigError (bad options,
    incompatible checkpoint). `on_epoch(dict)` is called after every epoch; `log(str)` gets
    one line per epoch (default: tqdm.write when opts.progress)."""
    import torch
    from tqdm.auto import tqdm

    from hpff_bench import distributed
    from hpff_bench.methods import build_method

    opts = (opts or TrainOptions()).validate()
    cfg = cfg.validate()
    ctx = distributed.setup(cfg.device)  # a no-op unless launched by torchrun
    device = distributed.device_for(ctx, cfg.device) if ctx.enabled else resolve_device(cfg.device)
    if not ctx.is_main:  # one process talks and writes checkpoints
        opts = replace(opts, progress=False, checkpoint_dir=None)
        log = lambda s: None  # noqa: E731
    if log is None:
        log = tqdm.write if opts.progress else (lambda s: None)
    if cfg.dataset == "folder" and cfg.num_classes is None:
        from hpff_bench.data.datasets import folder_classes

        n = len(folder_classes(opts.data_root))
        if n and n != cfg.resolved_num_classes:
            cfg = cfg.replace(num_classes=n).validate()
    result_opts = opts.result_options()
    ckpt_dir = Path(opts.checkpoint_dir) if opts.checkpoint_dir else None
    ckpt_path = ckpt_dir / "last.pt" if ckpt_dir else None
    ckpt = None
    if opts.resume and ckpt_path is not None and ckpt_path.exists():  # checked before data or model
        ckpt = load_checkpoint(ckpt_path, cfg.to_dict(), result_opts, device)
    loaders = build_loaders(cfg, opts, device, ctx)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    method = build_method(cfg, device)
    distributed.attach(method, ctx)  # gradients averaged once per step, after every local backward
    params = sum(p.numel() for p in method.parameters())
    steps_per_epoch = len(loaders.train)
    warmup = opts.resolved_warmup_epochs
    base_lr = cfg.lr

    def factor(step: int) -> float:
        return lr_at(step / steps_per_epoch, base_lr, opts.epochs, warmup, opts.warmup_start_lr) / base_lr

    scheduler = torch.optim.lr_scheduler.LambdaLR(method.optimizer, factor)
    history: list[dict] = []
    step_times: list[float] = []
    forward_calls = None
    start_epoch = 0
    result = TrainResult("ok", None, cfg, result_opts, method.module_count, params, None,
                         data_source=loaders.source, checkpoint=str(ckpt_path) if ckpt_path else None)

    if ckpt is not None:
        method.load_state_dict(ckpt["method"])
        method.optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        start_epoch = ckpt["epoch"]
        history = list(ckpt["history"])
        step_times = list(ckpt.get("step_times", []))
        forward_calls = ckpt.get("forward_calls")
        log(f"resumed from {ckpt_path} after epoch {start_epoch}/{opts.epochs}")

    for epoch in range(start_epoch, opts.epochs):
        # every epoch's data order and augmentation depend only on (seed, epoch): resume-exact
        epoch_seed = cfg.seed * 100_003 + epoch
        loaders.generator.manual_seed(epoch_seed)
        if hasattr(loaders.train.sampler, "set_epoch"):
            loaders.train.sampler.set_epoch(epoch)
        torch.manual_seed(epoch_seed)
        random.seed(epoch_seed)
        t_epoch = time.perf_counter()
        loss_sum = 0.0
        correct = seen = 0
        bar = tqdm(
            loaders.train,
            desc=f"{cfg.label} epoch {epoch + 1}/{opts.epochs}",
            unit="batch",
            leave=False,
            disable=not opts.progress,
            dynamic_ncols=True,
        )
        for i, (x, y) in enumerate(bar):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if forward_calls is None:
                method.reset_counters()
            t0 = time.perf_counter()
            out = method.train_step(x, y)
            loss = out.loss.item()  # synchronises: the step time below is the whole step
            step_times.append(time.perf_counter() - t0)
            if forward_calls is None:
                forward_calls = method.forward_calls
            if not math.isfinite(loss):
                bar.close()
                lr_now = method.optimizer.param_groups[0]["lr"]
                result.status = "diverged"
                result.message = (
                    f"training loss became {loss} at epoch {epoch + 1}, step {i + 1} (lr {lr_now:.4g}); "
                    "the last finite epoch's checkpoint is kept"
                )
                log(result.message)
                break
            scheduler.step()
            loss_sum += loss * y.numel()
            correct += (out.logits.argmax(1) == y).sum().item()
            seen += y.numel()
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{method.optimizer.param_groups[0]['lr']:.3g}")
        if result.status == "diverged":
            break
        train_seconds = time.perf_counter() - t_epoch
        top1 = evaluate(method, loaders.test, device, ctx)
        info = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_top1": correct / max(seen, 1),
            "top1": top1,
            "lr": method.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t_epoch,
            "train_seconds": train_seconds,
        }
        history.append(info)
        log(
            f"{cfg.label}: epoch {epoch + 1}/{opts.epochs}  loss {info['train_loss']:.4f}  "
            f"train {100 * info['train_top1']:.2f}%  test {100 * top1:.2f}%  "
            f"lr {info['lr']:.4g}  {info['seconds']:.1f} s"
        )
        if ckpt_dir is not None:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            state = {
                "format": CHECKPOINT_FORMAT,
                "config": cfg.to_dict(),
                "options": result_opts,
                "epoch": epoch + 1,
                "method": method.state_dict(),
                "optimizer": method.optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "history": history,
                "step_times": step_times[-1000:],
                "forward_calls": forward_calls,
            }
            _save(state, ckpt_path)
            if opts.keep_checkpoints:
                _save(state, ckpt_dir / f"epoch{epoch + 1:04d}.pt")
        if on_epoch is not None:
            on_epoch({**info, "epochs": opts.epochs})

    result.per_epoch = history
    result.forward_calls = forward_calls
    if ctx.enabled:
        source, peak = _process_peak_bytes(device)
        peaks = distributed.gather(peak, ctx)
        result.world_size = ctx.world_size
        result.memory = {"source": source, "peak_memory_bytes": max(peaks), "per_rank_peak_bytes": peaks}
    result.steps = len(history) * steps_per_epoch
    timed = step_times[1:] if len(step_times) > 1 else step_times  # the first step pays for warm-up
    result.step_seconds = statistics.median(timed) if timed else None
    return result


def options_dict(opts: TrainOptions) -> dict:
    return asdict(opts)
