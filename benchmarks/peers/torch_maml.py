"""The PyTorch peers of `benchmarks/maml_speed.py` and its float64 reference, one per process.

Runs under the peers' environment (`bash benchmarks/peers/install.sh` makes `.venv-peers`); it
imports numpy and torch only, never jax. The driver writes a job file and runs

    .venv-peers/bin/python benchmarks/peers/torch_maml.py --job JOB.json

which either computes the meta-loss and meta-gradient of the shared episode in float64 (`mode`
"check"; the gradient comes back in flax's names and layouts) or times meta-steps (`mode` "time").
It runs on the GPU where torch sees one (`torch_device` "auto", the default), else on the CPU.

Implementations (`impl`), all the same MAML step: per task, `inner_steps` SGD steps on the support
loss from the meta-parameters, query loss of the adapted weights, mean over tasks, one Adam step:
- `learn2learn`: `l2l.algorithms.MAML(model, lr, first_order)`, `clone()` + `adapt()` per task.
- `higher`: `higher.innerloop_ctx` with SGD per task; first order: `track_higher_grads=False` and
  the query gradient taken with respect to the fast weights (their meta-parameters' `.grad` would
  stay empty).
- `torch`: plain autograd over a functional network (`F.conv2d`, `F.batch_norm(training=True)`),
  `torch.autograd.grad(create_graph=True)` for the inner step, a Python loop over tasks.
- `torchfunc`: `torch.func.grad` inside `torch.func.vmap` over the tasks, batch norm written as
  mean/variance tensor ops (with `F.batch_norm` the vmapped second-order gradient is wrong; that
  variant is `torchfunc-bn`, for showing it).
- `reference`: the float64 reference: a plain loop over tasks with batch norm as mean/variance
  tensor ops and the whole meta-batch's gradient from one `torch.autograd.grad`.

The networks are those of metajax: conv4 (4 x [3x3 conv SAME + bias, batch norm with the batch's
statistics, eps 1e-5, ReLU, 2x2 max-pool VALID], flatten in HWC order, dense) for workload "A" and
the MLP 1-40-40-1 (ReLU, MSE) for workload "B".
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.metadata
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np


def _load_timing() -> types.ModuleType:
    """`metajax/bench/timing.py` (standard library only), loaded by its path: the peers'
    environment has neither metajax nor JAX, and importing `metajax.bench.timing` would import
    the package."""
    path = Path(__file__).resolve().parents[2] / "metajax" / "bench" / "timing.py"
    spec = importlib.util.spec_from_file_location("metajax_bench_timing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


time_steps = _load_timing().time_steps

IMPLS = ("learn2learn", "higher", "torch", "torchfunc", "torchfunc-bn", "reference")
BN_EPS = 1e-5


# --- torchvision stand-in ------------------------------------------------------------------------

class _StandInMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stand_in_class(name)


def _stand_in_class(name: str) -> type:
    def call(self, *args, **kwargs):
        raise RuntimeError(f"torchvision stand-in: {name} is not available (torchvision could "
                           "not be imported; only learn2learn's dataset code uses it)")

    return _StandInMeta(name, (), {"__init__": lambda self, *a, **k: None, "__call__": call})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _stand_in_class(name)
        setattr(self, name, value)
        return value


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def torchvision_stand_in() -> str | None:
    """Makes `import torchvision` work for learn2learn, whose MAML never uses it.

    Returns None if the real torchvision imports, else a note saying that a stand-in module (every
    attribute a placeholder class that raises when called) was put in its place, and why.
    """
    try:
        import torchvision  # noqa: F401
        return None
    except Exception as error:  # a CUDA torchvision beside the CPU torch raises RuntimeError
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _StandInFinder())
    return (f"torchvision could not be imported ({reason}); a stand-in module was placed before "
            "importing learn2learn (its MAML does not use torchvision)")


def versions() -> dict:
    """Versions of torch and each peer, or why a peer cannot be imported."""
    import torch

    out = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "numpy": np.__version__, "python": sys.version.split()[0]}
    note = torchvision_stand_in()
    if note:
        out["torchvision"] = note
    for name in ("learn2learn", "higher"):
        try:
            importlib.import_module(name)
            out[name] = importlib.metadata.version(name)
        except Exception as error:
            out[name] = f"unavailable: {type(error).__name__}: {error}"
    return out


# --- layouts ------------------------------------------------------------------------------------

def to_torch_layout(key: str, value: np.ndarray) -> np.ndarray:
    """flax -> torch: conv kernel HWIO -> OIHW, dense kernel [in, out] -> [out, in]."""
    if key.endswith("kernel"):
        return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    return value


def to_flax_layout(key: str, value: np.ndarray) -> np.ndarray:
    if key.endswith("kernel"):
        return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
    return value


def load_job_arrays(job: dict, dtype):
    """Parameters (flax names, torch layout) and the episode as torch tensors of `dtype`."""
    import torch

    with np.load(job["params"]) as f:
        params = {k: torch.tensor(to_torch_layout(k, f[k]), dtype=dtype) for k in sorted(f.files)}
    with np.load(job["episode"]) as f:
        episode = {k: f[k] for k in f.files}
    out = {}
    for name in ("support", "query"):
        x, y = episode[f"{name}_x"], episode[f"{name}_y"]
        if job["workload"] == "A":  # [T, B, H, W, C] -> [T, B, C, H, W]; int labels
            out[f"{name}_x"] = torch.tensor(x.transpose(0, 1, 4, 2, 3), dtype=dtype)
            out[f"{name}_y"] = torch.tensor(y, dtype=torch.long)
        else:
            out[f"{name}_x"] = torch.tensor(x, dtype=dtype)
            out[f"{name}_y"] = torch.tensor(y, dtype=dtype)
    return params, out


# --- functional networks ------------------------------------------------------------------------

def batch_norm_ops(x, scale, bias):
    """Batch norm with the batch's statistics, as mean/variance tensor ops (NCHW)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
    return (x - mean) * (var + BN_EPS).rsqrt() * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def batch_norm_functional(x, scale, bias):
    import torch.nn.functional as F

    return F.batch_norm(x, None, None, scale, bias, training=True, eps=BN_EPS)


def conv4_apply(p: dict, x, batch_norm=batch_norm_ops):
    import torch.nn.functional as F

    depth = sum(1 for k in p if k.startswith("Conv_") and k.endswith("/kernel"))
    for i in range(depth):
        x = F.conv2d(x, p[f"Conv_{i}/kernel"], p[f"Conv_{i}/bias"], padding=1)
        x = F.relu(batch_norm(x, p[f"BatchNorm_{i}/scale"], p[f"BatchNorm_{i}/bias"]))
        x = F.max_pool2d(x, 2)
    x = x.permute(0, 2, 3, 1).flatten(1)  # flax flattens NHWC
    return F.linear(x, p["Dense_0/kernel"], p["Dense_0/bias"])


def mlp_apply(p: dict, x, batch_norm=None):
    import torch.nn.functional as F

    layers = sum(1 for k in p if k.endswith("/kernel"))
    for i in range(layers):
        x = F.linear(x, p[f"Dense_{i}/kernel"], p[f"Dense_{i}/bias"])
        if i < layers - 1:
            x = F.relu(x)
    return x


def task_loss(workload: str):
    import torch.nn.functional as F

    return F.cross_entropy if workload == "A" else F.mse_loss


class Conv4Module:
    """conv4 as `torch.nn` modules (for learn2learn and higher), loaded from flax-named params."""

    @staticmethod
    def build(params: dict):
        import torch
        from torch import nn

        depth = sum(1 for k in params if k.startswith("Conv_") and k.endswith("/kernel"))
        layers = []
        for i in range(depth):
            kernel = params[f"Conv_{i}/kernel"]
            conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, padding=1, dtype=kernel.dtype)
            bn = nn.BatchNorm2d(kernel.shape[0], eps=BN_EPS, track_running_stats=False,
                                dtype=kernel.dtype)
            with torch.no_grad():
                conv.weight.copy_(kernel)
                conv.bias.copy_(params[f"Conv_{i}/bias"])
                bn.weight.copy_(params[f"BatchNorm_{i}/scale"])
                bn.bias.copy_(params[f"BatchNorm_{i}/bias"])
            layers += [conv, bn, nn.ReLU(), nn.MaxPool2d(2)]
        w = params["Dense_0/kernel"]
        dense = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
        with torch.no_grad():
            dense.weight.copy_(params["Dense_0/kernel"])
            dense.bias.copy_(params["Dense_0/bias"])
        layers += [FlattenHWC(), dense]
        model = nn.Sequential(*layers)
        names = []
        for i in range(depth):
            names += [f"Conv_{i}/kernel", f"Conv_{i}/bias", f"BatchNorm_{i}/scale",
                      f"BatchNorm_{i}/bias"]
        names += ["Dense_0/kernel", "Dense_0/bias"]
        return model, names


def FlattenHWC():
    from torch import nn

    class _FlattenHWC(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1).flatten(1)

    return _FlattenHWC()


def mlp_module(params: dict):
    import torch
    from torch import nn

    layers, names = [], []
    count = sum(1 for k in params if k.endswith("/kernel"))
    for i in range(count):
        w = params[f"Dense_{i}/kernel"]
        dense = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
        with torch.no_grad():
            dense.weight.copy_(w)
            dense.bias.copy_(params[f"Dense_{i}/bias"])
        layers.append(dense)
        if i < count - 1:
            layers.append(nn.ReLU())
        names += [f"Dense_{i}/kernel", f"Dense_{i}/bias"]
    return nn.Sequential(*layers), names


# --- the implementations ------------------------------------------------------------------------

class MetaStep:
    """One implementation's meta-step: `gradient(data)` sets the meta-parameters' `.grad` to the
    meta-gradient and returns the meta-loss; `step(data)` adds the Adam update."""

    def __init__(self, job: dict, params: dict, order: int):
        import torch

        self.workload, self.order = job["workload"], order
        self.inner_steps, self.inner_lr = job["inner_steps"], job["inner_lr"]
        self.loss = task_loss(self.workload)
        self.setup(params)
        self.opt = torch.optim.Adam(self.parameters(), lr=job["outer_lr"])

    def setup(self, params: dict) -> None:
        raise NotImplementedError

    def parameters(self) -> list:
        return [self.named[k] for k in self.names]

    def gradient(self, data: dict) -> float:
        raise NotImplementedError

    def step(self, data: dict) -> float:
        self.opt.zero_grad(set_to_none=False)
        loss = self.gradient(data)
        self.opt.step()
        return loss

    def grads(self) -> dict:
        return {k: to_flax_layout(k, self.named[k].grad.detach().double().cpu().numpy())
                for k in self.names}


class ModuleStep(MetaStep):
    def setup(self, params: dict) -> None:
        build = Conv4Module.build if self.workload == "A" else mlp_module
        self.model, self.names = build(params)
        flat = [p for p in self.model.parameters()]
        self.named = dict(zip(self.names, flat, strict=True))


class Learn2LearnStep(ModuleStep):
    def setup(self, params: dict) -> None:
        import learn2learn as l2l

        super().setup(params)
        self.maml = l2l.algorithms.MAML(self.model, lr=self.inner_lr,
                                        first_order=self.order == 1)

    def gradient(self, data: dict) -> float:
        tasks = data["support_x"].shape[0]
        total = 0.0
        for t in range(tasks):
            learner = self.maml.clone()
            for _ in range(self.inner_steps):
                learner.adapt(self.loss(learner(data["support_x"][t]), data["support_y"][t]))
            query = self.loss(learner(data["query_x"][t]), data["query_y"][t]) / tasks
            query.backward()
            total += query.item()
        return total


class HigherStep(ModuleStep):
    def setup(self, params: dict) -> None:
        import torch

        super().setup(params)
        self.inner_opt = torch.optim.SGD(self.model.parameters(), lr=self.inner_lr)

    def gradient(self, data: dict) -> float:
        import higher
        import torch

        tasks = data["support_x"].shape[0]
        total = 0.0
        for t in range(tasks):
            with higher.innerloop_ctx(self.model, self.inner_opt, copy_initial_weights=False,
                                      track_higher_grads=self.order == 2) as (fmodel, diffopt):
                for _ in range(self.inner_steps):
                    diffopt.step(self.loss(fmodel(data["support_x"][t]), data["support_y"][t]))
                query = self.loss(fmodel(data["query_x"][t]), data["query_y"][t]) / tasks
                if self.order == 2:
                    query.backward()
                else:  # the meta-parameters are cut off: take the gradient at the fast weights
                    fast = list(fmodel.parameters())
                    for p, g in zip(self.parameters(), torch.autograd.grad(query, fast),
                                    strict=True):
                        p.grad.add_(g)
            total += query.item()
        return total


class FunctionalStep(MetaStep):
    """Parameters as a dict of leaf tensors and a functional network."""

    batch_norm = staticmethod(batch_norm_functional)

    def setup(self, params: dict) -> None:
        self.names = sorted(params)
        self.named = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        self.apply = conv4_apply if self.workload == "A" else mlp_apply

    def forward(self, p: dict, x):
        return self.apply(p, x, self.batch_norm)

    def adapt(self, p: dict, x, y, create_graph: bool) -> dict:
        import torch

        for _ in range(self.inner_steps):
            keys = list(p)
            grads = torch.autograd.grad(self.loss(self.forward(p, x), y), [p[k] for k in keys],
                                        create_graph=create_graph)
            p = {k: p[k] - self.inner_lr * g for k, g in zip(keys, grads, strict=True)}
        return p


class TorchLoopStep(FunctionalStep):
    def gradient(self, data: dict) -> float:
        tasks = data["support_x"].shape[0]
        total = 0.0
        for t in range(tasks):
            fast = self.adapt(self.named, data["support_x"][t], data["support_y"][t],
                              create_graph=self.order == 2)
            query = self.loss(self.forward(fast, data["query_x"][t]), data["query_y"][t]) / tasks
            query.backward()
            total += query.item()
        return total


class ReferenceStep(FunctionalStep):
    """The float64 reference: batch norm as tensor ops, one `autograd.grad` of the mean loss."""

    batch_norm = staticmethod(batch_norm_ops)

    def gradient(self, data: dict) -> float:
        import torch

        tasks = data["support_x"].shape[0]
        losses = []
        for t in range(tasks):
            fast = self.adapt(self.named, data["support_x"][t], data["support_y"][t],
                              create_graph=self.order == 2)
            losses.append(self.loss(self.forward(fast, data["query_x"][t]), data["query_y"][t]))
        meta_loss = torch.stack(losses).mean()
        grads = torch.autograd.grad(meta_loss, self.parameters())
        for p, g in zip(self.parameters(), grads, strict=True):
            p.grad = g if p.grad is None else p.grad.copy_(g)
        return meta_loss.item()


class TorchFuncStep(FunctionalStep):
    """`torch.func.grad` in `vmap` over tasks; batch norm as tensor ops (correct)."""

    batch_norm = staticmethod(batch_norm_ops)

    def func_adapt(self, p: dict, x, y) -> dict:
        from torch.func import grad

        support = lambda q: self.loss(self.forward(q, x), y)  # noqa: E731
        for _ in range(self.inner_steps):
            g = grad(support)(p)
            p = {k: p[k] - self.inner_lr * g[k] for k in p}
        return p

    def gradient(self, data: dict) -> float:
        import torch
        from torch.func import grad_and_value, vmap

        params = {k: v.detach() for k, v in self.named.items()}
        args = (data["support_x"], data["support_y"], data["query_x"], data["query_y"])

        def query_loss(p, qx, qy):
            return self.loss(self.forward(p, qx), qy)

        if self.order == 2:
            def task(p, sx, sy, qx, qy):
                return query_loss(self.func_adapt(p, sx, sy), qx, qy)

            def meta(p):
                return vmap(task, in_dims=(None, 0, 0, 0, 0))(p, *args).mean()

            grads, loss = grad_and_value(meta)(params)
        else:  # adapted weights without a graph, then the query gradient at them
            fast = vmap(self.func_adapt, in_dims=(None, 0, 0))(params, args[0], args[1])
            per_task, losses = vmap(grad_and_value(query_loss))(fast, args[2], args[3])
            grads = {k: g.mean(dim=0) for k, g in per_task.items()}
            loss = losses.mean()
        with torch.no_grad():
            for k, p in self.named.items():
                if p.grad is None:
                    p.grad = grads[k].clone()
                else:
                    p.grad.copy_(grads[k])
        return loss.item()


class TorchFuncBatchNormStep(TorchFuncStep):
    """As `torchfunc` with `F.batch_norm(training=True)`: wrong second-order gradient (shown)."""

    batch_norm = staticmethod(batch_norm_functional)


STEPS = {"learn2learn": Learn2LearnStep, "higher": HigherStep, "torch": TorchLoopStep,
         "torchfunc": TorchFuncStep, "torchfunc-bn": TorchFuncBatchNormStep,
         "reference": ReferenceStep}


def run_job(job: dict) -> dict:
    """Runs one job (see the module docstring) and returns its JSON-able result."""
    import torch

    result = {"impl": job["impl"], "order": job["order"], "notes": []}
    if job["impl"] == "learn2learn":
        note = torchvision_stand_in()
        if note:
            result["notes"].append(note)
    # `torch_device` "auto": the GPU where torch sees one. The default device places every tensor
    # and module made below (episode, parameters, optimiser state) there.
    device = job.get("torch_device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_device(device)
    on_gpu = device.startswith("cuda")
    result["device"] = torch.cuda.get_device_name() if on_gpu else "cpu"
    dtype = torch.float64 if job["mode"] == "check" else torch.float32
    params, data = load_job_arrays(job, dtype)
    meta_step = STEPS[job["impl"]](job, params, job["order"])
    if job["mode"] == "check":
        meta_step.opt.zero_grad(set_to_none=False)
        for p in meta_step.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        loss = meta_step.gradient(data)
        grads = meta_step.grads()
        np.savez(job["grads_out"], meta_loss=np.float64(loss), **grads)
        result["meta_loss"] = loss
    else:
        for p in meta_step.parameters():
            p.grad = torch.zeros_like(p)
        # GPU work is asynchronous: each timed step ends when the device has finished it
        sync = (lambda _: torch.cuda.synchronize()) if on_gpu else (lambda _: None)
        result.update(time_steps(lambda: meta_step.step(data), sync,
                                 warmup=job["warmup"], repeats=job["repeats"],
                                 min_seconds=job.get("min_seconds", 0.0)))
    result["threads"] = torch.get_num_threads()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", help="job JSON written by benchmarks/maml_speed.py")
    parser.add_argument("--versions", action="store_true", help="print versions and exit")
    args = parser.parse_args()
    if args.versions:
        print(json.dumps(versions(), indent=1))
        return
    job = json.loads(Path(args.job).read_text())
    result = run_job(job)
    Path(job["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
