"""Published CIFAR-10 test errors and GPU memory, each with its source, beside our own numbers.

Every number here is the papers' (docs/published.md lists them with their sources). `modules`
is the real number of gradient-isolated modules the paper's K means (docs/splits.md "Counting
K"): InfoPro's K is the module count; HPFF's ResNet-32 "K=16" is 15
modules and its ResNet-110 "K=55" is 54. Our runs are matched on the real module count, so a
number is never compared with a run that cut the network differently.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpff_bench.method_registry import METHODS

SOURCES = {
    "infopro": (
        "Wang, Ni, Song, Yang, Huang. Revisiting Locally Supervised Learning: an Alternative to "
        "End-to-end Training. ICLR 2021. CIFAR-10 test error, mean of 5 runs."
    ),
    "hpff": (
        "Su et al. HPFF: Hierarchical Locally Supervised Learning with Patch Feature Fusion. "
        "ECCV 2024. CIFAR-10 test error as quoted in summaries of the paper; approximate until checked against it (docs/published.md)."
    ),
}
SHORT = {"infopro": "InfoPro paper (ICLR 2021)", "hpff": "HPFF paper (ECCV 2024)"}


@dataclass(frozen=True)
class Published:
    source: str  # key of SOURCES
    network: str
    method: str  # bp | greedy | dgl | infopro
    variant: str  # "" (plain) | "CL" | "IL+CL" | "IL+CL+PFF" (HiLo/HPFF; PFF with n=2)
    paper_k: int  # K as the paper writes it
    modules: int  # the real number of gradient-isolated modules
    test_error_pct: float
    local_loss: str | None = None  # InfoPro task loss: "ce" (softmax) | "supcon" (contrast)
    dataset: str = "cifar10"

    @property
    def name(self) -> str:
        base = METHODS[self.method].label
        if self.local_loss:
            base += " (softmax)" if self.local_loss == "ce" else " (contrast)"
        return base + (f" [{self.variant}]" if self.variant else "")


def _infopro() -> list[Published]:
    rows: list[Published] = []
    table = {
        "resnet32": {
            ("greedy", None): (10.30, 16.07, 21.19, 24.59),
            ("dgl", None): (8.69, 11.48, 14.17, 16.21),
            ("infopro", "ce"): (8.13, 8.64, 11.40, 14.23),
            ("infopro", "supcon"): (7.76, 8.58, 11.13, 12.75),
        },
        "resnet110": {
            ("greedy", None): (8.21, 13.16, 15.61, 18.92),
            ("dgl", None): (7.70, 10.50, 12.46, 13.80),
            ("infopro", "ce"): (7.01, 7.96, 9.40, 10.78),
            ("infopro", "supcon"): (6.42, 7.30, 8.93, 9.90),
        },
    }
    for network, methods in table.items():
        for (method, loss), errors in methods.items():
            for k, err in zip((2, 4, 8, 16), errors):
                rows.append(Published("infopro", network, method, "", k, k, err, loss))
    rows.append(Published("infopro", "resnet32", "bp", "", 1, 1, 7.37))
    rows.append(Published("infopro", "resnet110", "bp", "", 1, 1, 6.50))
    return rows


def _hpff() -> list[Published]:
    r32 = dict(source="hpff", network="resnet32", paper_k=16, modules=15)
    r110 = dict(source="hpff", network="resnet110", paper_k=55, modules=54)
    return [
        # the ablation (DGL, ResNet-32 "K=16"); "IL" alone is plain DGL
        Published(method="dgl", variant="", test_error_pct=14.08, **r32),
        Published(method="dgl", variant="CL", test_error_pct=10.51, **r32),
        Published(method="dgl", variant="IL+CL", test_error_pct=9.44, **r32),
        Published(method="dgl", variant="IL+CL+PFF", test_error_pct=8.94, **r32),
        Published(method="infopro", variant="", test_error_pct=12.93, **r32),
        Published(method="infopro", variant="IL+CL+PFF", test_error_pct=8.99, **r32),
        Published("hpff", "resnet32", "bp", "", 1, 1, 6.37),
        Published(method="dgl", variant="", test_error_pct=14.45, **r110),
        Published(method="dgl", variant="IL+CL+PFF", test_error_pct=8.74, **r110),
        Published(method="infopro", variant="", test_error_pct=13.22, **r110),
        Published(method="infopro", variant="IL+CL+PFF", test_error_pct=8.96, **r110),
        Published("hpff", "resnet110", "bp", "", 1, 1, 5.42),
    ]


PUBLISHED: tuple[Published, ...] = tuple(_infopro() + _hpff())


def variant_of(hilo: bool, independent: bool, pff_grid: int) -> str | None:
    """Our run's variant in the papers' terms; None where no paper reports it (e.g. PFF n=4)."""
    if not hilo:
        return "" if pff_grid == 1 else None
    if pff_grid == 1:
        return "IL+CL" if independent else "CL"
    return "IL+CL+PFF" if (independent and pff_grid == 2) else None


def match(
    network: str,
    dataset: str,
    method: str,
    modules: int | None,
    hilo: bool,
    independent: bool,
    pff_grid: int,
    local_loss: str | None,
) -> list[Published]:
    """The published numbers for the same network, method, variant and real module count."""
    variant = variant_of(bool(hilo), bool(independent), int(pff_grid or 1))
    if variant is None or method not in ("bp", "greedy", "dgl", "infopro"):
        return []
    out = []
    for p in PUBLISHED:
        if (p.network, p.dataset, p.method, p.variant) != (network, dataset, method, variant):
            continue
        if method != "bp" and modules != p.modules:
            continue
        if p.local_loss is not None and local_loss is not None and p.local_loss != local_loss:
            continue
        out.append(p)
    return out


# ----- published GPU memory ------------------------------------------------------------------
MEMORY_SOURCES = {
    "infopro-t3": (
        "Wang et al., ICLR 2021, Table 3: ResNet-110 on one Nvidia Titan Xp, CIFAR-10 batch 1024 and "
        "STL-10 batch 128; 'minimally required GPU memory', with torch.backends.cudnn.benchmark on."
    ),
    "infopro-t4": (
        "Wang et al., ICLR 2021, Table 4: ImageNet on 8 Tesla V100s, memory per GPU (the batch is "
        "split over the 8 GPUs); InfoPro* = the memory-balanced split."
    ),
    "hpff-mem": (
        "Su et al., ECCV 2024: ResNet-110 \"K=55\" (54 modules), CIFAR-10 batch 1024, GPU memory as "
        "quoted by a secondary summary of the paper; approximate until checked against the paper's "
        "table, whose GPU and way of reading memory we do not have."
    ),
}
MEMORY_TABLES = {"infopro-t3": "InfoPro Table 3", "infopro-t4": "InfoPro Table 4", "hpff-mem": "HPFF (approx.)"}

# Our memory quantities, as the report names them (docs/published.md "Which of our numbers").
# (the table's caption and docs/published.md say what each is)
QUANTITIES = {
    "allocated": "allocated peak",
    "least_device": "least device memory",
    "reserved": "reserved peak",
    "device": "device total",
}
# What each source's own description of its measurement points to, and why.
MEASURED_AS = {
    "infopro-t3": (("allocated", "least_device"), (
        "InfoPro reports the 'minimally required GPU memory' and says it differs from what "
        "nvidia-smi shows: that rules out the reserved peak and the device total (the cache a GPU "
        "with room keeps). 'Minimally required' fits both the allocated peak and the least device "
        "memory the step runs in; the paper does not say which it read, so both are compared.")),
    "hpff-mem": (tuple(QUANTITIES), (
        "Our source does not say how the HPFF paper read memory, so no reading can be preferred: "
        "every quantity is compared.")),
}
MEASURED_AS["infopro-t4"] = (MEASURED_AS["infopro-t3"][0], "Same paper and wording as its Table 3. "
                             + MEASURED_AS["infopro-t3"][1])
# "GB" in the papers: neither says 10^9 or 2^30 bytes, so every difference is given both ways.
GB_READINGS = {"10^9": 10**9, "2^30": 2**30}


def in_paper_unit(nbytes: float, reading: str) -> float:
    """Our bytes in the paper's "GB", read as 10^9 or 2^30 bytes."""
    return nbytes / GB_READINGS[reading]


def difference_pct(nbytes: float, published_gb: float, reading: str) -> float:
    """(ours - published) / published, in %, with the paper's GB read as `reading`."""
    return 100.0 * (in_paper_unit(nbytes, reading) - published_gb) / published_gb


@dataclass(frozen=True)
class PublishedMemory:
    source: str  # key of MEMORY_SOURCES
    network: str
    dataset: str
    batch_per_gpu: int
    method: str  # bp | gc | infopro | dgl | predsim
    paper_name: str  # as the paper writes it
    k: int  # the paper's K (= real modules for InfoPro)
    split: str  # our split that reproduces the paper's cuts
    gb: float  # the published number ("GB" in the paper)
    hpff: bool = False  # HiLo + PFF (n=2)
    modules: int | None = None  # the real module count where it differs from k (HPFF's "K=55")

    @property
    def table(self) -> str:
        return MEMORY_TABLES[self.source]

    @property
    def compared_with(self) -> tuple[str, ...]:
        """The quantities (keys of QUANTITIES) the source's description of its measurement points to."""
        return MEASURED_AS[self.source][0]


def _memory_rows() -> list[PublishedMemory]:
    rows = []
    t3 = {"cifar10": (1024, (9.40, 3.91, 5.38, 4.22, 3.52)), "stl10": (128, (10.77, 4.50, 6.15, 4.96, 4.08))}
    for dataset, (batch, (e2e, gc, k2, k3, k4)) in t3.items():
        rows += [
            PublishedMemory("infopro-t3", "resnet110", dataset, batch, "bp", "E2E", 1, "auto", e2e),
            PublishedMemory("infopro-t3", "resnet110", dataset, batch, "gc", "checkpointing", 4, "infopro", gc),
            PublishedMemory("infopro-t3", "resnet110", dataset, batch, "infopro", "InfoPro* K=2", 2, "infopro-balanced", k2),
            PublishedMemory("infopro-t3", "resnet110", dataset, batch, "infopro", "InfoPro* K=3", 3, "infopro-balanced", k3),
            PublishedMemory("infopro-t3", "resnet110", dataset, batch, "infopro", "InfoPro* K=4", 4, "infopro-balanced", k4),
        ]
    for network, batch, e2e, k2 in (("resnet101", 1024, 19.71, 12.06), ("resnet152", 1024, 26.29, 15.53),
                                    ("resnext101_32x8d", 512, 19.22, 11.55)):
        rows += [
            PublishedMemory("infopro-t4", network, "imagenet", batch // 8, "bp", "E2E", 1, "auto", e2e),
            PublishedMemory("infopro-t4", network, "imagenet", batch // 8, "infopro", "InfoPro* K=2", 2, "auto", k2),
        ]
    hpff = dict(source="hpff-mem", network="resnet110", dataset="cifar10", batch_per_gpu=1024)
    rows += [
        PublishedMemory(method="bp", paper_name="BP", k=1, split="auto", gb=9.26, **hpff),
        *(PublishedMemory(method=m, paper_name=f"{name}+HPFF", k=55, split="hpff", gb=gb, hpff=True, modules=54, **hpff)
          for m, name, gb in (("dgl", "DGL", 2.44), ("infopro", "InfoPro", 2.38), ("predsim", "PredSim", 1.90))),
    ]
    return rows


PUBLISHED_MEMORY: tuple[PublishedMemory, ...] = tuple(_memory_rows())


def cannot_run(p: PublishedMemory) -> str | None:
    """Why this project cannot run the published configuration (None: it can)."""
    from hpff_bench.errors import ConfigError
    from hpff_bench.networks.splits import resolve_cuts

    try:
        resolve_cuts(p.network, p.split, p.k, p.dataset)
    except ConfigError as e:
        return f"the {p.split} split (docs/splits.md) is not in this version ({str(e).split('; ')[-1]})"
    return None

