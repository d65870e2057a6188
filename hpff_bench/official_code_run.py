"""The official CIFAR code's own training step, run from a user's checkout of it: HPFF's
(Zeudfish/HPFF), InfoPro's (blackfeather-wang/InfoPro-Pytorch), MAN's (JunhaoSu0/MAN) and
AugLocal's (ChenxiangMA/AugLocal); and DGL's CIFAR aux net
(eugenium/DGL), which has no ResNet step to run, for timing it beside our DGL head.

Why: "at least as fast as the official code" is only a claim if the official code is timed
beside ours in the same run. Nothing of it is copied into hpff-bench: its model file is imported
from the directory the user names (HPFF's `Exp on CIFAR_SVHN_STL`, which holds
`network/resnetInfoPro_HPFF.py`; InfoPro's `Experiments on CIFAR-SVHN-STL10`, which holds
`networks/resnet.py`; MAN's `Exp on CIFAR-SVHN-STL`, which holds `networks/resnetInfoPro_MAN.py`;
AugLocal's top directory, which holds `networks/resnet.py`), and stepped the way its `train.py`
steps it: `zero_grad()`,
`model(img=x, target=y, ixx_1=…, …)` (its forward runs every backward itself), `SGD.step()`
(momentum, Nesterov, weight decay; `foreach` as given, torch's default for the device if None).
Its `DataParallel` wrapper is left out: on one device it calls the model directly.
The model's constructor copies two de-normalisation tensors with `.cuda()`; on another device
that call goes to the step's device while the model is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError
from hpff_bench.networks.splits import INFOPRO_TABLE
from hpff_bench.official_code import MODULE_ENDS

_LOCAL_LOSS = {"ce": "cross_entropy", "supcon": "contrast"}  # ours -> its --local_loss_mode


@dataclass(frozen=True)
class OfficialCode:
    """One paper's official CIFAR code: where its model lies in a checkout (`directory`: which
    directory of the checkout the user names), the K it has a module table for (K=1 is its
    end-to-end path), and whether its model is HPFF's (which also takes the cascade weights wx, wy)."""

    name: str
    repository: str
    directory: str
    model_file: Path
    module_counts: dict[str, tuple[int, ...]]  # () for a network: any K hpff-bench's validation allows
    hpff: bool
    method: str = "infopro"  # our --method its step computes
    loss_index: int = -1  # where its forward's return holds the loss


def _infopro_kwargs(c: RunConfig) -> dict:
    """The constructor arguments of InfoPro's CIFAR model, which HPFF's and MAN's extend."""
    return dict(local_module_num=c.k, batch_size=c.batch_size, image_size=c.resolved_image_size,
                balanced_memory=False, dataset=c.dataset, class_num=c.resolved_num_classes,
                wide_list=(16, 16, 32, 64), dropout_rate=0.0, aux_net_config=c.aux,
                local_loss_mode=_LOCAL_LOSS[c.local_loss], aux_net_widen=1, aux_net_feature_dim=128)


def _model_kwargs(code: OfficialCode, c: RunConfig) -> dict:
    if code.method == "auglocal":
        # train.py with --rule AugLocal: local_module_num -= aux_net_depth, aux_net_config 'unifSamp';
        # the other arguments are its defaults (unused by this rule)
        return dict(local_module_num=c.k - c.aux_net_depth, batch_size=c.batch_size,
                    image_size=c.resolved_image_size, dataset=c.dataset, class_num=c.resolved_num_classes,
                    wide_list=(16, 16, 32, 64), dropout_rate=0.0, aux_net_config="unifSamp",
                    aux_net_config_aux_loss="0c1f", aux_net_widen=1, aux_net_widen_aux_loss=1,
                    aux_net_feature_dim=1024, hidden_dim=512, hidden_dim_aux_loss=512, rule="AugLocal",
                    aux_net_depth=c.aux_net_depth, is_pyramid=c.pyramid, paramid_coeff=c.pyramid_coeff)
    extra = {"wx": c.w_independent, "wy": c.w_cascade} if code.hpff else {}
    if code.method == "man":
        extra["momentum"] = c.man_momentum
    return {**_infopro_kwargs(c), **extra}


def _forward_lambdas(code: OfficialCode, c: RunConfig) -> dict:
    """The λ its train.py passes to the forward: AugLocal's defaults (ixy 1, ixx 0), else the config's."""
    if code.method == "auglocal":
        return {"ixx_1": 0.0, "ixy_1": 1.0, "ixx_2": 0.0, "ixy_2": 1.0}
    lam = c.lambdas
    return {"ixx_1": lam.ixx_1, "ixy_1": lam.ixy_1, "ixx_2": lam.ixx_2, "ixy_2": lam.ixy_2}


HPFF_CODE = OfficialCode(
    "HPFF", "Zeudfish/HPFF", "the 'Exp on CIFAR_SVHN_STL'", Path("network") / "resnetInfoPro_HPFF.py",
    {net: tuple(sorted(ends)) for net, ends in MODULE_ENDS.items()}, hpff=True)
INFOPRO_CODE = OfficialCode(
    "InfoPro", "blackfeather-wang/InfoPro-Pytorch", "the 'Experiments on CIFAR-SVHN-STL10'", Path("networks") / "resnet.py",
    {net: tuple(sorted(INFOPRO_TABLE[net])) for net in ("resnet32", "resnet110")}, hpff=False)
# its aux-net study's models: `auxillary_classifier2` is the CIFAR aux net (`mlp-sr`: n_lin=3,
# mlp_layers=3) our DGL head follows; no ResNet step of it exists to time
DGL_CODE = OfficialCode("DGL", "eugenium/DGL", "the top", Path("auxiliary_nets_study") / "models.py", {}, hpff=False)
MAN_CODE = OfficialCode(
    "MAN", "JunhaoSu0/MAN", "the 'Exp on CIFAR-SVHN-STL'", Path("networks") / "resnetInfoPro_MAN.py",
    {net: tuple(sorted(ends)) for net, ends in MODULE_ENDS.items()}, hpff=False, method="man")
AUGLOCAL_CODE = OfficialCode(
    "AugLocal", "ChenxiangMA/AugLocal", "the top", Path("networks") / "resnet.py",
    {"resnet32": (), "resnet110": ()}, hpff=False, method="auglocal", loss_index=1)
def check_official_dir(path: str | Path, code: OfficialCode = HPFF_CODE) -> Path:
    """The directory, or ConfigError naming what is missing."""
    p = Path(path)
    if not (p / code.model_file).is_file():
        raise ConfigError(
            f"official code directory {str(path)!r} has no {code.model_file.as_posix()}; give "
            f"{code.directory} directory of a {code.repository} checkout"
        )
    return p


def load_official_model_module(path: str | Path, code: OfficialCode = HPFF_CODE):
    """The checkout's model file, imported as a package (HPFF's and InfoPro's import their module
    tables and aux nets relatively) under a name made from its path, so no other module and no
    other checkout can collide with it."""
    root = check_official_dir(path, code).resolve() / code.model_file.parent
    package = "_hpff_official_" + hashlib.sha1(str(root).encode()).hexdigest()[:12]
    if package not in sys.modules:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(root)]
        sys.modules[package] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{package}.{code.model_file.stem}")


@contextlib.contextmanager
def _cuda_goes_to(device: torch.device):
    """`.cuda()` of tensors and modules means `.to(device)` inside (a real copy, as `.cuda()`
    is); untouched on a CUDA device."""
    if device.type == "cuda":
        yield
        return
    with mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self.to(device, copy=True)), \
            mock.patch.object(nn.Module, "cuda", lambda self, *a, **k: self.to(device)):
        yield


class OfficialCodeStep:
    """One training step of the official model at `config`'s network, batch, recipe and the
    official code's `local_module_num` = `config.k` (1: its end-to-end path)."""

    def __init__(self, path: str | Path, config: RunConfig, device: torch.device | str = "cpu",
                 foreach: bool | None = None, code: OfficialCode = HPFF_CODE):
        c = config
        counts = code.module_counts
        if c.network not in counts:
            raise ConfigError(f"the official {code.name} code has {', '.join(counts)}, not {c.network}")
        if c.k != 1 and counts[c.network] and c.k not in counts[c.network]:
            raise ConfigError(f"the official {code.name} code has local_module_num 1, "
                              f"{', '.join(map(str, counts[c.network]))} for {c.network}, not {c.k}")
        if not code.hpff and (c.hilo or c.pff_grid > 1 or c.method != code.method):
            raise ConfigError(f"the official {code.name} code runs {code.name} without HiLo or PFF, "
                              f"not {c.method} with hilo={c.hilo}, pff_grid={c.pff_grid}")
        self.device = torch.device(device)
        self.config = c
        module = load_official_model_module(path, code)
        with _cuda_goes_to(self.device):
            model = getattr(module, c.network)(**_model_kwargs(code, c))
        self.model = model.to(self.device).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum,
                                         nesterov=c.momentum > 0, weight_decay=c.weight_decay, foreach=foreach)
        self._lambdas = _forward_lambdas(code, c)
        self._loss_index = code.loss_index

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """zero_grad, its forward (which backpropagates), step; returns its loss (the last of
        what the forward returns for HPFF's three values, InfoPro's and MAN's two; AugLocal's second)."""
        self.optimizer.zero_grad()
        loss = self.model(img=x, target=y, **self._lambdas)[self._loss_index]
        self.optimizer.step()
        return loss.detach()
