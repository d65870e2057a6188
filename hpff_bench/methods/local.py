"""Locally supervised learning (Greedy SL, DGL, InfoPro), with HPFF's HiLo and PFF as options.

Without HiLo each module j is trained by its own auxiliary objective (the last one by the
network's cross-entropy), and its graph is backpropagated and released before module j+1
runs. HiLo adds the cascade level: window W_i = modules i..i+s-1 gets an aux objective on
module i+s-1's output whose gradient flows through the whole window and stops at its input;
the last window is closed by the network's own classifier. The plain method is HiLo's
independent level alone with weight 1 and window size 1, and runs through the same code.

Two executions of HiLo, same gradients:
- fused: each module's forward runs once and its graph is kept (retain_graph) until the last
  window containing it is closed. A window's gradient is carried down through its modules
  at once (each backward gives that module's weight gradients and, except at the window's
  start, the gradient for the module below); the IL gradient is a weight-only backward of its
  module. Windows are closed before the IL aux net runs, so the oldest graph is gone first.
  Nothing is held between backward calls but the graphs themselves. Per module and step:
  1 forward, s backward passes for the windows that contain it, 1 weight-only for IL.
- reference: every window recomputes its modules' forward from its (stored, detached) input,
  as the official code does: K + s·(K-s+1) module forwards per step.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import unset_fake_temporarily

from hpff_bench.aux.builders import AUX_NETS, AuxSite
from hpff_bench.aux.layout import map_adapter
from hpff_bench.aux.objective import AuxObjective
from hpff_bench.aux.pff import check_divisible, fold_patches
from hpff_bench.methods.base import Method, StepOutput
from hpff_bench.networks import get_network
from hpff_bench.scope import scope


class LocalLearning(Method):
    def __init__(self, config, device="cpu", foreach=None):
        super().__init__(config, device, foreach)
        c = config
        k = len(self.modules_)
        self.name = c.method
        self.span = c.cascade_span if c.hilo else 1
        w_il = c.w_independent if c.hilo else 1.0
        # IL weight per module (the last module's IL is the network's CE); tests scale these
        self.il_weights = [w_il if (c.independent or not c.hilo) else 0.0] * k
        self.w_cascade = c.w_cascade
        grid_il = c.pff_grid if c.pff_on in ("independent", "both") else 1
        grid_cl = c.pff_grid if c.pff_on in ("cascade", "both") else 1
        shapes = self._module_output_shapes()
        self.independent: dict[int, AuxObjective] = {}
        self.cascade: dict[int, AuxObjective] = {}
        with torch.device(self.device):
            for j in range(k - 1):
                if self.il_weights[j] > 0 or not c.hilo:
                    obj = self._objective(shapes[j], j, grid_il, f"aux/independent/{j}")
                    self.independent[j] = obj
                    self.aux_nets[f"independent{j}"] = obj
            if c.hilo:
                for i in range(k - self.span + 1):
                    end = i + self.span - 1
                    if end < k - 1:  # the last window is closed by the network's classifier
                        obj = self._objective(shapes[end], end, grid_cl, f"aux/cascade/{i}")
                        self.cascade[i] = obj
                        self.aux_nets[f"cascade{i}"] = obj
        self._params = [list(m.parameters()) for m in self.modules_]
        self._build_optimizer()

    @property
    def module_count(self) -> int:
        return len(self.modules_)

    # ----- construction ------------------------------------------------------------------
    def _module_output_shapes(self) -> list[tuple[int, ...]]:
        """Each module's output shape without the batch ((C, H, W) for a CNN; tokens (N, D), ...);
        they do not depend on the batch: cached per split."""
        c = self.config
        ranges = tuple((r.start, r.stop) for r in self.unit_ranges)
        return list(_module_output_shapes(c.network, c.resolved_num_classes, c.resolved_image_size, ranges))

    def _objective(self, shape, position: int, grid: int, name: str) -> AuxObjective:
        c = self.config
        adapter, (channels, height, width) = map_adapter(shape, f"the output of module {position}")
        size = c.resolved_image_size
        if grid > 1:
            check_divisible(height, width, grid, f"the output of module {position} ({name})")
            check_divisible(size, size, grid, "the input image")
        if c.method not in AUX_NETS:
            raise ValueError(f"not a local method (no aux nets registered): {c.method}")
        site = AuxSite(c, channels, height // grid, height, position, len(self.modules_), grid,
                       get_network(c.network).family)
        terms = AUX_NETS[c.method](site)
        return AuxObjective(terms, grid, c.pff_exec, name, self.autocast, adapter)

    # ----- training step -----------------------------------------------------------------
    def _targets(self, x):
        """The reconstruction target (InfoPro's decoder, any per-patch term), folded once per step
        for every grid an aux net uses (only those: the unfolded image is not kept when no aux net
        reads it)."""
        if not any(t.kind == "per-patch" for obj in self.aux_nets.values() for t in obj.terms):
            return None
        image = self.denormalize(x)
        grids = {obj.target_grid for obj in self.aux_nets.values()}
        return {g: image if g == 1 else fold_patches(image, g) for g in grids}

    def _forward_backward(self, x, y):
        target = self._targets(x)
        if self.config.hilo and self.config.hilo_exec == "reference":
            return self._reference(x, y, target)
        return self._fused(x, y, target)

    def _final_ce_grad(self, logits, y):
        """Cross-entropy at the head: (loss, dloss/dlogits)."""
        with scope("loss"):
            a = logits.detach().requires_grad_()
            loss = F.cross_entropy(a.float(), y)
            (loss * self._scale).backward()
        return loss.detach(), a.grad

    def _backward_module(self, j, out, grad, inp=None, retain=False):
        """Backpropagate `grad` through module j: weight gradients, and the gradient for the
        module's input when `inp` is given (returned). `retain` keeps the graph for a later use."""
        with scope("backbone", j, f"module{j}"):
            if inp is None:
                torch.autograd.backward(out, grad, inputs=self._params[j], retain_graph=retain)
                return None
            torch.autograd.backward(out, grad, inputs=[inp, *self._params[j]], retain_graph=retain)
            g, inp.grad = inp.grad, None
            return g

    def _fused(self, x, y, target):
        k, s = len(self.modules_), self.span
        hilo = s > 1
        # the step at which each module's graph is used for the last time: when the last
        # window containing it is closed
        last_use = [min(j, k - s) + s - 1 if hilo else j for j in range(k)]
        outs, inps = {}, {}
        h, loss, logits = x, None, None
        for e in range(k):
            inp = h if e == 0 else h.detach().requires_grad_(hilo)
            out = self.run_module(e, inp)
            outs[e], inps[e] = out, inp
            h = out.detach()
            il_grad = window_grad = None
            if e == k - 1:
                loss, dce = self._final_ce_grad(out, y)
                logits = h
                if self.il_weights[e] > 0:
                    il_grad = self.il_weights[e] * dce
                if hilo:
                    window_grad = self.w_cascade * dce
                del dce
            il_follows = il_grad is not None or e in self.independent
            start = e - s + 1
            if hilo and start >= 0:
                # close window `start` first, so the oldest graph is freed before the IL aux net runs
                if e < k - 1:
                    _, window_grad = self.cascade[start].run(out, y, target, self.w_cascade * self._scale)
                g, window_grad = window_grad, None
                for j in range(e, start - 1, -1):
                    keep = last_use[j] > e or (j == e and il_follows)
                    g = self._backward_module(j, outs[j], g, inps[j] if j > start else None, keep)
            if e in self.independent:
                _, il_grad = self.independent[e].run(out, y, target, self.il_weights[e] * self._scale)
            if il_grad is not None:
                self._backward_module(e, out, il_grad, None, retain=last_use[e] > e)
            del il_grad, out
            for j in [j for j in outs if last_use[j] <= e]:
                del outs[j], inps[j]
        return StepOutput(loss, logits)

    def _reference(self, x, y, target):
        k, s = len(self.modules_), self.span
        inputs = {0: x}  # detached input of each module, kept while a window may start there
        loss = logits = None
        for e in range(k):
            inp = inputs[e]
            if self.il_weights[e] > 0:
                out = self.run_module(e, inp)
                if e < k - 1:
                    _, grad = self.independent[e].run(out, y, target, self.il_weights[e] * self._scale)
                else:
                    loss, dce = self._final_ce_grad(out, y)
                    logits, grad = out.detach(), self.il_weights[e] * dce
                self._backward_module(e, out, grad)
            else:
                with torch.no_grad():
                    out = self.run_module(e, inp)
            inputs[e + 1] = out.detach()
            del out
            i = e - s + 1
            if self.config.hilo and i >= 0:
                z = inputs[i]
                for j in range(i, e + 1):
                    z = self.run_module(j, z)
                if e < k - 1:
                    _, grad = self.cascade[i].run(z, y, target, self.w_cascade * self._scale)
                else:
                    loss, dce = self._final_ce_grad(z, y)
                    logits, grad = z.detach(), self.w_cascade * dce
                with scope("backbone", e, f"module{e}"):
                    torch.autograd.backward(z, grad)
                del z, grad
                inputs.pop(i)
        return StepOutput(loss, logits)


@functools.lru_cache(maxsize=256)
def _module_output_shapes(network: str, num_classes: int, size: int,
                          ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, ...], ...]:
    """From a forward on meta tensors (no memory, no compute). Cached: a budget search or a
    plan builds the same network and split at many batch sizes (~0.3 s each for resnet110)."""
    # outside any fake-tensor mode: meta tensors need no faking (and it costs seconds)
    with unset_fake_temporarily(), torch.device("meta"):
        units = list(get_network(network).build(num_classes).units)
        h = torch.empty(2, 3, size, size)  # 2: training-mode BatchNorm refuses one value per channel (1x1 maps)
        shapes = []
        for start, stop in ranges:
            for u in range(start, stop):
                h = units[u](h)
            shapes.append(tuple(h.shape[1:]))
    return tuple(shapes)
