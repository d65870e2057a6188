"""The run options shared by `profile`, `estimate`, `train` and the benchmarks.

One place turns command-line flags into a validated `RunConfig`, so every command accepts the
same options with the same help text.
"""

from __future__ import annotations

import argparse

from hpff_bench.config import (
    DATASETS,
    DEVICES,
    HPFF_INFOPRO_LAMBDAS,
    INFOPRO_AUX,
    LOCAL_LOSSES,
    PFF_EXECS,
    PFF_ON,
    PRECISIONS,
    SPLITS,
    VARIANTS,
    InfoProLambdas,
    RunConfig,
)
from hpff_bench.method_registry import METHODS

HILO_HELP = """\
HiLo (hierarchical local learning, HPFF paper). The independent level (IL) is each module's
own local loss; the cascade level (CL) gives every window of --cascade-span adjacent modules
(windows slide by one) its own auxiliary net on the window's output, whose gradient flows
through the whole window and stops at its input. The last window is closed by the network's
own classifier. Weights default to the official CIFAR code's 0.001*IL + 0.999*CL."""

PFF_HELP = """\
PFF (patch feature fusion). The auxiliary nets' input is split into an n x n grid of patches.
Classifier-type heads average the per-patch outputs before the loss (y = mean g(patch)); the
InfoPro decoder reconstructs each patch's own image region and the per-patch losses are
averaged. The official CIFAR code applies PFF to the reconstruction decoder only (one decoder
per quadrant, four BCE losses summed); here every auxiliary net of the chosen level(s) uses
patches, and the losses are averaged, as the paper's formula says."""


NETWORK_HELP = """a registered network (`hpff-bench networks` lists them) or PKG.MODULE:CALLABLE,
e.g. torchvision.models:mobilenet_v2: this imports PKG.MODULE, which runs its code (naming it is
your explicit choice), calls CALLABLE (with num_classes= when it takes it) and cuts the model it
returns into units by structure (docs/extending.md)"""


PRECISION_HELP = f"""{', '.join(PRECISIONS)} (default fp32). bf16/fp16 run every module and
aux-net forward under torch.autocast (losses in fp32) with a gradient scaler for fp16. CPU and
CUDA autocast keep different ops in low precision (CUDA: convolutions, linear and matmul in
fp16/bf16, batch norm in the input's dtype; CPU: bf16 lists are similar but several ops fall
back to fp32), so a prediction made on CPU fake tensors uses the CPU autocast lists: under
bf16/fp16 it can differ from a CUDA run by the activations those ops keep."""


def add_config_arguments(parser: argparse.ArgumentParser, step_counts: bool = True) -> None:
    """The RunConfig flags; step_counts=False leaves out --steps/--warmup (training counts epochs)."""
    d = RunConfig()
    g = parser.add_argument_group("run")
    g.add_argument("--network", default=d.network, help=NETWORK_HELP + " (default %(default)s)")
    g.add_argument("--method", default=d.method, help=f"one of {', '.join(METHODS.registered())}, or a method "
                   "an installed package registers (docs/extending.md) (default %(default)s)")
    g.add_argument("--k", type=int, default=None, help="number of modules K (default 1; with --cuts: their count + 1)")
    g.add_argument(
        "--split",
        default=d.split,
        help=f"split scheme: {', '.join(SPLITS)}; auto = the InfoPro table where it has the "
        "network and K, else the HPFF table, else uniform, and the result says which and why; "
        "infopro-balanced = InfoPro* (memory-balanced, resnet110 on cifar10/stl10); balanced = the cuts "
        "that minimise the predicted peak for this network, batch, method and K, searched (hpff_bench/planning.py) "
        "(default %(default)s)",
    )
    g.add_argument(
        "--cuts",
        default=d.cuts,
        help="your own split: STAGE.BLOCK cut points, comma-separated, e.g. 1.14,2.8 = detach after "
        "block 14 of stage 1 and after block 8 of stage 2 (0.0 = after the stem); K = cuts + 1",
    )
    g.add_argument("--dataset", default=d.dataset, help=f"{', '.join(DATASETS)}: sets image size and classes")
    g.add_argument("--image-size", type=int, default=None, help="override the dataset's image size")
    g.add_argument("--num-classes", type=int, default=None, help="override the dataset's classes")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="(default %(default)s)")
    if step_counts:
        g.add_argument("--steps", type=int, default=d.steps, help="measured steps (default %(default)s)")
        g.add_argument("--warmup", type=int, default=d.warmup, help="warm-up steps (default %(default)s)")
    g.add_argument("--device", default=d.device, help=f"{', '.join(DEVICES)} (default %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--precision", default=d.precision, help=PRECISION_HELP)
    o = parser.add_argument_group("optimizer (SGD, Nesterov momentum)")
    o.add_argument("--lr", type=float, default=d.lr)
    o.add_argument("--momentum", type=float, default=d.momentum)
    o.add_argument("--weight-decay", type=float, default=d.weight_decay)
    i = parser.add_argument_group("InfoPro")
    i.add_argument("--aux", default=None, help=f"InfoPro classifier head: {', '.join(INFOPRO_AUX)} (default: the "
                   "paper's recipe, hpff_bench/recipes.toml: 1c2f for InfoPro's commands, 2c2f with --hpff; else 1c2f)")
    i.add_argument("--local-loss", default=None, help=f"{', '.join(LOCAL_LOSSES)}: task term of InfoPro's loss (default: "
                   "the recipe's: supcon for InfoPro's commands, ce with --hpff; else ce)")
    lam = InfoProLambdas()
    for name in ("ixx_1", "ixy_1", "ixx_2", "ixy_2"):
        i.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            default=None,
            help=f"InfoPro lambda (default: the paper's command for this dataset/network/K, "
            f"{getattr(HPFF_INFOPRO_LAMBDAS, name)} with --hpff; {getattr(lam, name)} where it has none)",
        )
    i.add_argument("--predsim-beta", type=float, default=d.predsim_beta,
                   help="PredSim: (1-beta)*prediction + beta*similarity (default %(default)s)")
    m = parser.add_argument_group("MAN and AugLocal")
    m.add_argument("--man-momentum", type=float, default=None,
                   help="MAN: momentum of the aux block's moving average of the next block (default: its "
                   "README command's 0.995, hpff_bench/recipes.toml)")
    m.add_argument("--aux-net-depth", type=int, default=None,
                   help="AugLocal: layers each aux net samples from the later backbone; its K counts the "
                   "last this-many units as one module (default: its command's, 2 for resnet32 K=16, 3 for "
                   "resnet110 K=55; else 2)")
    m.add_argument("--no-pyramid", action="store_true",
                   help="AugLocal: the same depth for every aux net (default: its pyramidal schedule)")
    m.add_argument("--pyramid-coeff", type=float, default=None,
                   help="AugLocal: how far the pyramid lowers the depth towards the last module (default 0.5)")
    h = parser.add_argument_group("HiLo", HILO_HELP)
    h.add_argument("--hilo", action="store_true", help="add the cascade level")
    h.add_argument("--cascade-span", type=int, default=d.cascade_span, help="modules per cascade window (default %(default)s)")
    h.add_argument("--no-independent", action="store_true", help="drop the independent level (the paper's 'CL' ablation)")
    h.add_argument("--w-independent", type=float, default=d.w_independent, help="IL weight (default %(default)s, official code)")
    h.add_argument("--w-cascade", type=float, default=d.w_cascade, help="CL weight (default %(default)s, official code)")
    h.add_argument(
        "--hilo-exec",
        default=None,
        help="fused: each module's forward runs once per step and its graph lives while a window "
        "still needs it; reference: every window recomputes its modules' forward from the "
        "window's input and backpropagates each level at once. Same gradients. official: the "
        "official code's execution, the only one (and the default) with --variant official. "
        "(default fused)",
    )
    h.add_argument(
        "--variant",
        default=d.variant,
        help=f"{', '.join(VARIANTS)}: ours = hpff-bench's versions of the methods; official = the "
        "official HPFF CIFAR code's step (IL = classifier alone, CL = quadrant decoders + "
        "classifier, no loss on module 0, λ ratio i/(K-2) with the paper's K, its own aux nets "
        "and execution); resnet32/resnet110 with the official module table only (default %(default)s)",
    )
    p = parser.add_argument_group("PFF", PFF_HELP)
    p.add_argument("--pff-grid", type=int, default=d.pff_grid, help="n for an n x n patch grid: 1 (off), 2, 4")
    p.add_argument("--pff-on", default=d.pff_on, help=f"which level's aux nets use patches: {', '.join(PFF_ON)}")
    p.add_argument(
        "--pff-exec",
        default=d.pff_exec,
        help="batched: all patches in one call, folded into the batch; streamed: one patch's aux "
        "activations live at a time (output-averaged heads run every patch twice: a no-grad pass "
        "for the averaged output, then a per-patch recomputation to backpropagate its share). "
        f"One of {', '.join(PFF_EXECS)} (default %(default)s)",
    )
    p.add_argument("--hpff", action="store_true", help="= --hilo --pff-grid 2, and for InfoPro HPFF's own "
                   "loss settings (ce, 2c2f, ixx 5->0, ixy 0.5->0)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve flags (and the --hpff shortcut) into a validated RunConfig (raises ConfigError)."""
    from hpff_bench.recipes import auglocal_defaults, infopro_defaults, man_momentum

    hpff = getattr(args, "hpff", False)
    # what the user leaves unset comes from the paper's recipe (hpff_bench/recipes.toml)
    recipe = infopro_defaults(args.dataset, args.network, args.k, hpff, args.method)
    aug = auglocal_defaults(args.dataset, args.network, args.k)
    lambdas = InfoProLambdas(
        **{
            n: (getattr(args, n) if getattr(args, n) is not None else getattr(recipe["lambdas"], n))
            for n in ("ixx_1", "ixy_1", "ixx_2", "ixy_2")
        }
    )
    pff_grid = args.pff_grid
    if hpff and pff_grid == 1:
        pff_grid = 2
    cfg = RunConfig(
        network=args.network,
        method=args.method,
        k=args.k if args.k is not None else (len(args.cuts.split(",")) + 1 if args.cuts.strip() else 1),
        split=args.split,
        cuts=args.cuts,
        dataset=args.dataset,
        image_size=args.image_size,
        num_classes=args.num_classes,
        batch_size=args.batch_size,
        steps=getattr(args, "steps", RunConfig.steps),
        warmup=getattr(args, "warmup", RunConfig.warmup),
        device=args.device,
        seed=args.seed,
        precision=args.precision,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        aux=args.aux or recipe["aux"],
        local_loss=args.local_loss or recipe["local_loss"],
        lambdas=lambdas,
        predsim_beta=args.predsim_beta,
        man_momentum=args.man_momentum if args.man_momentum is not None else man_momentum(),
        aux_net_depth=args.aux_net_depth if args.aux_net_depth is not None else aug["aux_net_depth"],
        pyramid=aug["pyramid"] and not args.no_pyramid,
        pyramid_coeff=args.pyramid_coeff if args.pyramid_coeff is not None else aug["pyramid_coeff"],
        hilo=args.hilo or hpff,
        cascade_span=args.cascade_span,
        independent=not args.no_independent,
        w_independent=args.w_independent,
        w_cascade=args.w_cascade,
        hilo_exec=args.hilo_exec or ("official" if args.variant == "official" else "fused"),
        variant=args.variant,
        pff_grid=pff_grid,
        pff_on=args.pff_on,
        pff_exec=args.pff_exec,
    )
    return cfg.validate()
