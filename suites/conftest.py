"""pytest-benchmark options, cases and the end-of-session memory summary for suites/.

Options (pytest suites/ --help, group "hpff-bench"):
  --hpff-preset quick|paper  quick (default): small sizes that finish in minutes on 2 CPU
                             cores; paper: the papers' networks, K and batch 1024 (needs a GPU)
  --hpff-device auto|cpu|cuda
  --hpff-threads N           torch.set_num_threads(N) for the session (default: torch's)
  --hpff-rounds N            timed rounds of test_method_speed.py (default 5): more rounds, steadier
                             medians on a noisy machine (each round is one step of every case)
  --hpff-no-predict          skip the fake-tensor prediction of the CUDA peak (saves seconds per case)
  --hpff-all                 run every case even under --benchmark-disable
  --hpff-retain-heap         glibc keeps freed memory (mallopt), so CPU steps stop paying the
                             kernel for fresh zeroed pages, as a GPU's caching allocator never does
  --hpff-official-code DIR   the official HPFF CIFAR code's directory ('Exp on CIFAR_SVHN_STL' of a
                             Zeudfish/HPFF checkout): test_method_speed.py times its own steps too
  --hpff-official-infopro DIR  the official InfoPro CIFAR code's directory ('Experiments on
                             CIFAR-SVHN-STL10' of a blackfeather-wang/InfoPro-Pytorch checkout): its
                             InfoPro step is timed too
  --hpff-official-dgl DIR    a eugenium/DGL checkout: test_aux_speed.py times its CIFAR aux net
                             beside our DGL head

Under --benchmark-disable (as `make test` runs it) only the cases marked `bench_smoke` run: one
BP and one InfoPro+HPFF step, so the suite is exercised on every test run without slowing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

METHODS = ("bp", "gc", "greedy", "greedy+hpff", "dgl", "dgl+hpff", "infopro", "infopro+hpff")


@dataclass(frozen=True)
class Preset:
    networks: dict  # network -> K values (BP always runs once, at K=1)
    batch_size: int
    rounds: int
    warmup_rounds: int
    dataset: str = "cifar10"
    needs_gpu: bool = False


PRESETS = {
    # ~1-2 min on 2 idle CPU cores
    "quick": Preset(networks={"resnet20": (2, 4)}, batch_size=8, rounds=3, warmup_rounds=1),
    # the papers' sizes (InfoPro K table, HPFF's every-block K=55 for ResNet-110), CIFAR batch 1024
    "paper": Preset(
        networks={"resnet32": (2, 4, 8, 16), "resnet110": (2, 4, 8, 16, 55)},
        batch_size=1024, rounds=10, warmup_rounds=3, needs_gpu=True,
    ),
}


DEVICES = ("auto", "cpu", "cuda")


def pytest_addoption(parser):
    # no `choices` / `type` here: pytest's parser would refuse a bad value with its usage error
    # (exit 4, a usage text); pytest_configure checks each value and exits 2 with one line
    g = parser.getgroup("hpff-bench", "hpff-bench benchmarks (suites/test_benchmarks.py)")
    g.addoption("--hpff-preset", default="quick", metavar="|".join(sorted(PRESETS)),
                help="sizes: quick (CPU, minutes) or paper (papers' networks/K, batch 1024; GPU)")
    g.addoption("--hpff-device", default="auto", metavar="|".join(DEVICES),
                help="device for the benchmarks (auto: cuda when available)")
    g.addoption("--hpff-threads", default=None, metavar="N",
                help="torch.set_num_threads for the session, a whole number >= 1 (default: torch's own)")
    g.addoption("--hpff-rounds", default=None, metavar="N",
                help="timed rounds of the method-speed benchmark, a whole number >= 1 (default 5)")
    g.addoption("--hpff-no-predict", action="store_true",
                help="do not predict the CUDA peak with fake tensors (a few seconds per case)")
    g.addoption("--hpff-all", action="store_true",
                help="run every case even with --benchmark-disable (default there: the bench_smoke cases)")
    g.addoption("--hpff-official-code", default=None, metavar="DIR",
                help="a Zeudfish/HPFF checkout's 'Exp on CIFAR_SVHN_STL' directory: the method-speed benchmark "
                     "then times the official code's own steps (its E2E path and InfoPro+HPFF) beside ours")
    g.addoption("--hpff-official-infopro", default=None, metavar="DIR",
                help="a blackfeather-wang/InfoPro-Pytorch checkout's 'Experiments on CIFAR-SVHN-STL10' directory: "
                     "the method-speed benchmark then times the official InfoPro code's InfoPro step beside ours")
    g.addoption("--hpff-official-man", default=None, metavar="DIR",
                help="a JunhaoSu0/MAN checkout's 'Exp on CIFAR-SVHN-STL' directory: the method-speed benchmark "
                     "then times the official MAN step beside our man case")
    g.addoption("--hpff-official-auglocal", default=None, metavar="DIR",
                help="a ChenxiangMA/AugLocal checkout (its top directory): the method-speed benchmark then "
                     "times the official AugLocal step beside our auglocal case")
    g.addoption("--hpff-official-dgl", default=None, metavar="DIR",
                help="a eugenium/DGL checkout: suites/test_aux_speed.py times its CIFAR aux net beside our DGL head")
    g.addoption("--hpff-retain-heap", action="store_true",
                help="glibc keeps freed memory for reuse (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD): "
                     "CPU steps then take no minor page faults for their activations")


def refuse(message: str):
    """A bad option value: one line on stderr (pytest writes it as "Exit: ..."), exit 2 before any
    test is collected, as the hpff-bench CLI does."""
    pytest.exit(message, returncode=2)


def whole_number_option(flag: str, text: str | None) -> int | None:
    """A whole number >= 1, or None where the option was not given."""
    if text is None:
        return None
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        refuse(f"{flag} {text}: must be a whole number >= 1")
    return number


def pytest_configure(config):
    config.addinivalue_line("markers", "bench_smoke: the cheap benchmark cases run under --benchmark-disable")
    config.addinivalue_line("markers", "hpff_cases: parametrised over (network, method, k) by --hpff-preset")
    config.stash[ROWS] = []
    preset = config.getoption("hpff_preset", "quick")
    if preset not in PRESETS:
        refuse(f"--hpff-preset {preset}: must be one of {', '.join(sorted(PRESETS))}")
    device = config.getoption("hpff_device", "auto")
    if device not in DEVICES:
        refuse(f"--hpff-device {device}: must be one of {', '.join(DEVICES)}")
    threads = whole_number_option("--hpff-threads", config.getoption("hpff_threads", None))
    whole_number_option("--hpff-rounds", config.getoption("hpff_rounds", None))
    if threads:
        import torch

        torch.set_num_threads(threads)
    from hpff_bench.errors import ConfigError
    from hpff_bench.official_code_run import (
        AUGLOCAL_CODE,
        DGL_CODE,
        HPFF_CODE,
        INFOPRO_CODE,
        MAN_CODE,
        check_official_dir,
    )

    for flag, code in (("--hpff-official-code", HPFF_CODE), ("--hpff-official-infopro", INFOPRO_CODE),
                       ("--hpff-official-man", MAN_CODE), ("--hpff-official-auglocal", AUGLOCAL_CODE),
                       ("--hpff-official-dgl", DGL_CODE)):
        directory = config.getoption(flag.lstrip("-").replace("-", "_"), None)
        if directory is not None:
            try:
                check_official_dir(directory, code)
            except ConfigError as e:
                refuse(f"{flag}: {e}")
    if config.getoption("hpff_retain_heap", False):
        retain_heap()


def retain_heap() -> None:
    """Serve every CPU allocation from a heap that is never given back to the kernel.

    Why: glibc serves large blocks by mmap and trims freed heap memory, so each training step
    takes fresh pages that the kernel must zero (16,000-46,000 minor faults per BP step at batch
    128 on resnet32, more for aux-heavy methods, varying from run to run), and step-time ratios
    move with it. Fixed thresholds switch that off for the rest of the process."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    mallopt = getattr(libc, "mallopt", None)
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    if mallopt is None or not (mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
        refuse("--hpff-retain-heap needs glibc's mallopt (Linux); this C library has none")


ROWS = pytest.StashKey[list]()


def cases(preset: Preset) -> list:
    """(network, method, k) params with readable ids, e.g. resnet32-infopro+hpff-k16."""
    out = []
    first_net = next(iter(preset.networks))
    for net, ks in preset.networks.items():
        smoke = net == first_net
        out.append(pytest.param(net, "bp", 1, id=f"{net}-bp-k1",
                                marks=[pytest.mark.bench_smoke] if smoke else []))
        for k in ks:
            for m in METHODS[1:]:
                mark = smoke and m == "infopro+hpff" and k == min(ks)
                out.append(pytest.param(net, m, k, id=f"{net}-{m}-k{k}",
                                        marks=[pytest.mark.bench_smoke] if mark else []))
    return out


def pytest_generate_tests(metafunc):
    if {"network", "method", "k"} <= set(metafunc.fixturenames) and metafunc.definition.get_closest_marker(
        "hpff_cases"
    ):
        preset = PRESETS[metafunc.config.getoption("hpff_preset")]
        metafunc.parametrize(("network", "method", "k"), cases(preset))


def pytest_collection_modifyitems(config, items):
    if not _benchmark_disabled(config) or config.getoption("hpff_all"):
        return
    keep, drop = [], []
    for item in items:
        if item.get_closest_marker("hpff_cases") and not item.get_closest_marker("bench_smoke"):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _benchmark_disabled(config) -> bool:
    return bool(config.getoption("benchmark_disable", False))


@pytest.fixture(scope="session")
def hpff_official_code(request):
    """--hpff-official-code's directory (checked at start-up), or None."""
    return request.config.getoption("hpff_official_code")


@pytest.fixture(scope="session")
def hpff_official_infopro(request):
    """--hpff-official-infopro's directory (checked at start-up), or None."""
    return request.config.getoption("hpff_official_infopro")


@pytest.fixture(scope="session")
def hpff_official_2024(request) -> dict:
    """{"man": --hpff-official-man's directory, "auglocal": --hpff-official-auglocal's} (None where
    not given; checked at start-up)."""
    return {m: request.config.getoption(f"hpff_official_{m}") for m in ("man", "auglocal")}


@pytest.fixture(scope="session")
def hpff_official_dgl(request):
    """--hpff-official-dgl's directory (checked at start-up), or None."""
    return request.config.getoption("hpff_official_dgl")


@pytest.fixture(scope="session")
def hpff_rounds(request) -> int | None:
    """--hpff-rounds (checked at start-up), or None: the benchmark's own default."""
    return whole_number_option("--hpff-rounds", request.config.getoption("hpff_rounds"))


@pytest.fixture(scope="session")
def hpff_preset(request) -> Preset:
    return PRESETS[request.config.getoption("hpff_preset")]


@pytest.fixture(scope="session")
def hpff_device(request, hpff_preset):
    import torch

    want = request.config.getoption("hpff_device")
    has_cuda = torch.cuda.is_available()
    if want == "cuda" and not has_cuda:
        pytest.skip("--hpff-device cuda: no CUDA device on this machine")
    device = "cuda" if (want == "cuda" or (want == "auto" and has_cuda)) else "cpu"
    if hpff_preset.needs_gpu and device == "cpu" and want != "cpu":
        pytest.skip("--hpff-preset paper runs the papers' sizes (batch 1024, ResNet-110) and needs a GPU; "
                    "add --hpff-device cpu to run them on the CPU anyway")
    return torch.device(device)


@pytest.fixture
def hpff_summary(request):
    """Append one row for the end-of-session summary."""
    return request.config.stash[ROWS].append


def _mib(b) -> str:
    return "—" if b is None else f"{b / 2**20:,.1f} MiB"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    tr = terminalreporter
    bp_step = {r["network"]: r["step_seconds"] for r in rows if r["method"] == "bp" and r["step_seconds"]}
    headers = ("Name", "modules", "fwd/step", "peak memory", "measured by", "predicted CUDA peak",
               "images/s", "step vs BP")
    table = []
    def order(r):
        variant = METHODS.index(r["variant"]) if r["variant"] in METHODS else len(METHODS)
        return (r["network_order"], r["k"], variant, r["name"])

    for r in sorted(rows, key=order):
        bp = bp_step.get(r["network"])
        table.append((
            r["name"], str(r["modules"]), f"{r['forward_calls']:g}", _mib(r["peak_bytes"]), r["source"],
            _mib(r["predicted_bytes"]),
            "—" if r["images_per_second"] is None else f"{r['images_per_second']:,.1f}",
            "—" if not (bp and r["step_seconds"]) else f"{r['step_seconds'] / bp:.2f}x",
        ))
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    tr.write_sep("-", "hpff-bench: peak memory of one training step per benchmark")
    tr.write_line(line(headers))
    for row in table:
        tr.write_line(line(row))
    tr.write_line(
        "peak memory: CUDA allocator (max_memory_allocated) on a GPU, live-tensor tracker on the CPU; "
        "predicted CUDA peak: fake-tensor prediction; step vs BP: median step time / BP's (same network)."
    )
