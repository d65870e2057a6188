"""What the official HPFF CIFAR code (Zeudfish/HPFF, `Exp on CIFAR_SVHN_STL/`) has a path for.

`--variant official` runs that code's execution (methods/official.py); this module is the data
it and the config validation need, so a combination the official code cannot run is refused
before anything is built.
"""

from __future__ import annotations

SOURCE = "Zeudfish/HPFF: Exp on CIFAR_SVHN_STL/network/config.py (InfoPro table)"

# local_module_num (the paper's K) -> module ends [stage, block]; the last end is the network's
# end, the stem is folded into the first module. K=1 (its end-to-end path) is plain BP here.
MODULE_ENDS: dict[str, dict[int, list[tuple[int, int]]]] = {
    "resnet32": {
        2: [(2, 1), (3, 4)],
        3: [(1, 4), (2, 4), (3, 4)],
        4: [(1, 2), (2, 1), (3, 0), (3, 4)],
        8: [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2), (3, 4)],
        16: [(s, b) for s in (1, 2, 3) for b in range(5)],
    },
    "resnet110": {
        2: [(2, 8), (3, 17)],
        3: [(1, 17), (2, 17), (3, 17)],
        4: [(1, 11), (2, 7), (3, 3), (3, 17)],
        8: [(1, 4), (1, 11), (2, 0), (2, 7), (2, 14), (3, 3), (3, 10), (3, 17)],
        16: [(1, 1), (1, 4), (1, 7), (1, 10), (1, 13), (1, 16), (2, 1), (2, 4), (2, 7), (2, 11),
             (2, 15), (3, 1), (3, 5), (3, 9), (3, 13), (3, 17)],
        32: [(1, b) for b in (1, 2, 4, 5, 7, 9, 11, 13, 14, 16, 17)]
        + [(2, b) for b in (1, 2, 4, 5, 7, 9, 11, 13, 14, 16, 17)]
        + [(3, b) for b in (1, 3, 4, 6, 7, 9, 11, 13, 15, 17)],
        55: [(s, b) for s in (1, 2, 3) for b in range(18)],
    },
}
# InfoPro is the official code's method; DGL, Greedy SL and PredSim have no official HPFF code,
# they run the same execution with their own head as the independent net (see methods/official).
METHODS = ("infopro", "dgl", "greedy", "predsim")
DATASETS = ("cifar10", "svhn", "stl10")  # its data loaders (and de-normalisation constants)
