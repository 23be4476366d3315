"""Training and sampling throughput of the book's networks: fp32 against bf16, the Trainer against a bare loop,
and diffkit's DiT and U-Net against diffusers' at matched sizes.

    .venv/bin/python benchmarks/throughput.py                      # every table (about 10 min on 2 CPU cores)
    .venv/bin/python benchmarks/throughput.py --only precision     # or: overhead, dit-reference, unet-reference,
                                                                   #     compile
    .venv/bin/python benchmarks/throughput.py --device cuda --rounds 7

Every number is a rate in images per second, the median over ``--rounds`` interleaved rounds (A, B, A, B, ...:
a machine that slows down mid-run slows both sides alike).  On CUDA the timer synchronises inside the timed
region, so queued kernels are counted.  Training steps are full steps (forward, backward, clipping, AdamW, EMA);
sampling is one network evaluation per image (NFE).  The bf16 loss probe trains the same seeded run in both
precisions and compares the mean loss over its last quarter.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffkit import losses, models, recipes, training, zoo  # noqa: E402

PARTS = ("precision", "overhead", "dit-reference", "unet-reference", "compile")


# --- timing -----------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Wall seconds per call of ``fn`` over ``calls`` calls, with the device synchronised before the clock starts
    and before it stops (inside the timed region: work still queued on a GPU is counted)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / calls


def compare(contestants: dict[str, Callable[[], object]], device: torch.device, rounds: int,
            round_seconds: float) -> dict[str, float]:
    """Median seconds per call of each contestant, timed in interleaved rounds of about ``round_seconds``."""
    calls = {}
    for name, fn in contestants.items():  # warm up, and size each round from one timed call
        fn()
        calls[name] = max(1, round(round_seconds / seconds_per_call(fn, 1, device)))
    times: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(rounds):
        for name, fn in contestants.items():
            times[name].append(seconds_per_call(fn, calls[name], device))
    return {name: statistics.median(ts) for name, ts in times.items()}


# --- the book's networks ----------------------------------------------------------------------------------------
def book_models() -> dict[str, tuple[Callable[[], nn.Module], int]]:
    """The networks the chapters train, as they configure them, with their batch sizes."""
    ch3 = zoo.ddpm_mnist_setup()
    return {
        "DiT p4 d128 L4 (ch. 8-10)": (recipes.get_recipe("dit").build_model, 128),
        "DiT p2 d128 L4": (lambda: models.DiT(patch_size=2, hidden=128, depth=4, heads=4, num_classes=10), 128),
        "U-Net 16-32 (ch. 3-7)": (lambda: models.UNet(**ch3["unet"]), ch3["config"].batch_size),
        "U-Net 16-32-32 attn 7 (ch. 10)": (recipes.get_recipe("sd1").build_model, 128),
    }


def _batch(batch: int, device: torch.device, labelled: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch * 4, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch * 4,), generator=g) if labelled else None
    return x, y


def _trainer(build: Callable[[], nn.Module], batch: int, device: torch.device, mixed: bool | str,
             steps: int = 10**9) -> training.Trainer:
    model = build()
    labelled = getattr(model, "num_classes", None) is not None
    x, y = _batch(batch, device, labelled)
    config = training.TrainConfig(steps=steps, batch_size=batch, lr=5e-4, mixed_precision=mixed)
    objective = losses.objective("ddpm", path=zoo.DDPM_MNIST["path"], target="eps")
    return training.Trainer(model, objective, (x, y) if labelled else x, config, device=device)


def _low_precision(device: torch.device) -> bool | str:
    return "bf16" if device.type == "cpu" else True


def precision_table(device: torch.device, rounds: int, round_seconds: float, probe_steps: int) -> None:
    low = _low_precision(device)
    print(f"\n## fp32 against {'bf16' if low == 'bf16' else 'mixed precision'} autocast "
          f"(this CPU {'has' if training.cpu_has_bf16() else 'lacks'} bf16 units)")
    print(f"{'network':32s} {'batch':>5s} {'train fp32':>10s} {'bf16':>8s} {'x':>5s}   "
          f"{'sample fp32':>11s} {'bf16':>8s} {'x':>5s}   {'probe: late loss bf16/fp32':>26s}")
    for name, (build, batch) in book_models().items():
        trainers = {p: _trainer(build, batch, device, m) for p, m in (("fp32", False), ("low", low))}
        train = compare({p: t.train_step for p, t in trainers.items()}, device, rounds, round_seconds)
        net = trainers["fp32"].model.eval()
        x, y = (a[:batch].to(device) if a is not None else None for a in _batch(batch, device, net.num_classes
                                                                                   is not None))
        t = torch.full((batch,), 0.5, device=device)
        amp = trainers["low"].amp_dtype

        def sample(dtype: torch.dtype | None) -> Callable[[], object]:
            def run() -> object:
                with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    return net(x, t, y)
            return run

        evals = compare({"fp32": sample(None), "low": sample(amp)}, device, rounds, round_seconds)
        probe = ""
        if probe_steps:
            late = {}
            for p, m in (("fp32", False), ("low", low)):
                run = _trainer(build, batch, device, m, steps=probe_steps)
                history = run.fit(progress=False)
                late[p] = statistics.fmean(history[-max(1, probe_steps // 4):])
            probe = f"{late['low']:.4f} / {late['fp32']:.4f} = {late['low'] / late['fp32']:.3f}"
        print(f"{name:32s} {batch:5d} {batch / train['fp32']:10.0f} {batch / train['low']:8.0f} "
              f"{train['fp32'] / train['low']:5.2f}   {batch / evals['fp32']:11.0f} {batch / evals['low']:8.0f} "
              f"{evals['fp32'] / evals['low']:5.2f}   {probe:>26s}")


# --- the Trainer against a bare loop -----------------------------------------------------------------------------
def bare_step(model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer, objective: Callable,
              x_all: torch.Tensor, y_all: torch.Tensor | None, batch: int, generator: torch.Generator,
              clip: float | None, decay: float) -> Callable[[], None]:
    """The step a Trainer takes, written as a plain loop: data already on the device, AdamW, clipping, EMA."""
    device = x_all.device
    ema_params, params = list(ema.parameters()), list(model.parameters())

    def step() -> None:
        idx = torch.randint(x_all.shape[0], (batch,), generator=generator).to(device)
        loss = objective(model, x_all[idx], y_all[idx] if y_all is not None else None, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
    return step


def overhead_table(device: torch.device, rounds: int, round_seconds: float) -> None:
    print("\n## the Trainer against a bare PyTorch loop (same model, data on the device, AdamW, clipping, EMA)")
    print(f"{'network':32s} {'batch':>5s} {'bare img/s':>10s} {'Trainer':>8s} {'overhead':>9s}")
    for name, (build, batch) in book_models().items():
        trainer = _trainer(build, batch, device, False)

        def fit_chunk(trainer: training.Trainer = trainer) -> None:  # the Trainer's own loop, 5 steps a call
            trainer.fit(steps=trainer.step + 5, progress=False)

        model = build().to(device)
        ema = copy.deepcopy(model).requires_grad_(False)
        labelled = getattr(model, "num_classes", None) is not None
        x, y = _batch(batch, device, labelled)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
        step = bare_step(model, ema, opt, trainer.loss_fn, x.to(device), y.to(device) if y is not None else None,
                         batch, torch.Generator().manual_seed(0), trainer.config.grad_clip, trainer.config.ema_decay)

        def bare_chunk() -> None:
            for _ in range(5):
                step()

        times = compare({"bare": bare_chunk, "trainer": fit_chunk}, device, rounds, round_seconds)
        print(f"{name:32s} {batch:5d} {5 * batch / times['bare']:10.0f} {5 * batch / times['trainer']:8.0f} "
              f"{times['trainer'] / times['bare'] - 1:+9.1%}")


# --- against diffusers -------------------------------------------------------------------------------------------
class _DiffusersDiT(nn.Module):
    """diffusers' ``DiTTransformer2DModel`` called as a diffkit model, ``model(x, t, y)``."""

    def __init__(self, patch: int, hidden: int, depth: int, heads: int):
        super().__init__()
        from diffusers import DiTTransformer2DModel

        self.net = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=1,
                                         out_channels=1, num_layers=depth, sample_size=28, patch_size=patch,
                                         num_embeds_ada_norm=10)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, timestep=t * 1000, class_labels=y, return_dict=False)[0]


class _DiffusersUNet(nn.Module):
    """diffusers' ``UNet2DModel`` called as a diffkit model, ``model(x, t)``; like diffkit's U-Net it has
    self-attention in its middle block, and at the levels ``attention_at`` marks."""

    def __init__(self, channels: tuple[int, ...], attention_at: tuple[bool, ...], groups: int):
        super().__init__()
        from diffusers import UNet2DModel

        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_at)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_at))
        self.net = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=channels,
                               down_block_types=down, up_block_types=up, layers_per_block=1, norm_num_groups=groups,
                               attention_head_dim=channels[-1] // 4, add_attention=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t * 1000, return_dict=False)[0]


def _step_and_sample(nets: dict[str, nn.Module], batch: int, device: torch.device, labelled: bool
                     ) -> tuple[dict[str, Callable[[], None]], dict[str, Callable[[], None]]]:
    """For each network, one AdamW training step on a fixed random batch (MSE to a fixed target) and one
    network evaluation without gradients, both as calls ``fn()``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device) if labelled else None
    t = torch.rand(batch, generator=g).to(device)
    target = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    steps, evals = {}, {}
    for k, net in nets.items():
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step(net: nn.Module = net, opt: torch.optim.Optimizer = opt) -> None:
            loss = (net(x, t, y) - target).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def evaluate(net: nn.Module = net) -> None:
            with torch.no_grad():
                net(x, t, y)
        steps[k], evals[k] = step, evaluate
    return steps, evals


def _versus(pairs: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module]]], batch: int,
            device: torch.device, rounds: int, round_seconds: float, labelled: bool) -> None:
    print(f"{'config':22s} {'params':>13s} {'train img/s':>19s} {'ratio':>6s}   {'sample img/s':>19s} {'ratio':>6s}")
    for name, (ours, theirs) in pairs.items():
        nets = {"diffkit": ours().to(device), "diffusers": theirs().to(device)}
        params = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
        steps, evals = _step_and_sample(nets, batch, device, labelled)
        train = compare(steps, device, rounds, round_seconds)
        sample = compare(evals, device, rounds, round_seconds)
        print(f"{name:22s} {params['diffkit'] / 1e6:5.2f}M/{params['diffusers'] / 1e6:5.2f}M "
              f"{batch / train['diffkit']:9.0f}/{batch / train['diffusers']:<9.0f} "
              f"{train['diffusers'] / train['diffkit']:6.2f}   "
              f"{batch / sample['diffkit']:9.0f}/{batch / sample['diffusers']:<9.0f} "
              f"{sample['diffusers'] / sample['diffkit']:6.2f}")


def dit_reference_table(device: torch.device, rounds: int, round_seconds: float, batch: int) -> None:
    print(f"\n## diffkit's DiT against diffusers' DiTTransformer2DModel (adaLN-Zero), fp32, batch {batch}: "
          "diffkit/diffusers, ratio = diffkit's speed-up")
    pairs = {}
    for patch, hidden, depth in ((4, 128, 4), (4, 256, 6), (2, 128, 4)):
        pairs[f"p{patch}/d{hidden}/L{depth}"] = (
            lambda p=patch, h=hidden, d=depth: models.DiT(patch_size=p, hidden=h, depth=d, heads=4, num_classes=10),
            lambda p=patch, h=hidden, d=depth: _DiffusersDiT(p, h, d, 4))
    _versus(pairs, batch, device, rounds, round_seconds, labelled=True)


def unet_reference_table(device: torch.device, rounds: int, round_seconds: float) -> None:
    print("\n## diffkit's U-Net against diffusers' UNet2DModel (one res block a level), fp32: diffkit/diffusers")
    ch3 = zoo.ddpm_mnist_setup()
    pairs = {
        "16-32 (ch. 3), b64": (lambda: models.UNet(**ch3["unet"]), lambda: _DiffusersUNet((16, 32), (False, False), 8)),
        "32-64-64 attn 7, b64": (lambda: models.UNet(base_channels=32, channel_mults=(1, 2, 2),
                                                     attention_resolutions=(7,)),
                                 lambda: _DiffusersUNet((32, 64, 64), (False, False, True), 8)),
    }
    _versus(pairs, 64, device, rounds, round_seconds, labelled=False)


def compile_table(device: torch.device, rounds: int, round_seconds: float, batch: int) -> None:
    """The recipes' DiT eager, with each transformer block ``torch.compile``d (regional compilation: one graph,
    reused by every block), and diffusers' eager DiT, train and sample; with the seconds the first step and
    evaluation took (compilation included), which a chapter's run would pay once."""
    print(f"\n## torch.compile of the DiT's blocks (p4/d128/L4), fp32, batch {batch}: img/s, speed-up over diffusers")
    nets = {name: models.DiT(patch_size=4, hidden=128, depth=4, heads=4, num_classes=10).to(device)
            for name in ("diffkit eager", "diffkit compiled")}
    nets["diffusers eager"] = _DiffusersDiT(4, 128, 4, 4).to(device)
    for block in nets["diffkit compiled"].blocks:
        block.compile()
    steps, evals = _step_and_sample(nets, batch, device, labelled=True)
    first = {name: seconds_per_call(steps[name], 1, device) + seconds_per_call(evals[name], 1, device)
             for name in nets}  # the compiled network compiles here
    train = compare(steps, device, rounds, round_seconds)
    sample = compare(evals, device, rounds, round_seconds)
    print(f"{'':18s} {'first step s':>12s} {'train':>7s} {'x':>6s} {'sample':>7s} {'x':>6s}")
    for name in nets:
        print(f"{name:18s} {first[name]:12.1f} {batch / train[name]:7.0f} "
              f"{train['diffusers eager'] / train[name]:6.2f} {batch / sample[name]:7.0f} "
              f"{sample['diffusers eager'] / sample[name]:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(training.default_device()))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per comparison (median)")
    parser.add_argument("--round-seconds", type=float, default=2.0, help="seconds per contestant per round")
    parser.add_argument("--probe-steps", type=int, default=120, help="training steps of the bf16 loss probe (0: off)")
    parser.add_argument("--batch", type=int, default=128, help="batch of the DiT reference comparison")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"--only: unknown part(s) {unknown}; choose from {PARTS}")
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds of {args.round_seconds:g} s")
    if "precision" in parts:
        precision_table(device, args.rounds, args.round_seconds, args.probe_steps)
    if "overhead" in parts:
        overhead_table(device, args.rounds, args.round_seconds)
    if "dit-reference" in parts:
        dit_reference_table(device, args.rounds, args.round_seconds, args.batch)
    if "unet-reference" in parts:
        unet_reference_table(device, args.rounds, args.round_seconds)
    if "compile" in parts:
        compile_table(device, args.rounds, args.round_seconds, args.batch)


if __name__ == "__main__":
    main()
