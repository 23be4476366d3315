"""Training and sampling throughput of diffkit's DiT and U-Net at the book's configurations.

    .venv/bin/python benchmarks/throughput.py [--device cpu] [--batch 128] [--seconds 20]

Training: images per second for full AdamW steps (forward, backward, clipping, EMA) of the class-conditional
models used in chapters 9-10.  Sampling: images per second per network evaluation (NFE), with and without
classifier-free guidance (guidance doubles the batch of each evaluation).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffkit import losses, recipes, training  # noqa: E402


def timed(fn, seconds: float, warmup: int = 2) -> tuple[int, float]:
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(training.default_device()))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    print(f"{'model':28s} {'params':>8s} {'train img/s':>12s} {'sample img/s/NFE':>17s} {'+guidance':>10s}")
    for name, build in [("DiT patch 4 (49 tokens)", recipes.RECIPES["dit"].build_model),
                        ("DiT patch 2 (196 tokens)", lambda: _dit_patch2()),
                        ("U-Net 32-64-64, attn at 7", recipes.RECIPES["sd1"].build_model)]:
        model = build()
        n_params = sum(p.numel() for p in model.parameters())
        trainer = training.Trainer(model, lambda m, xb, yb, g: losses.cfm_loss(m, xb, y=yb, generator=g),
                                   (x.cpu(), y.cpu()), training.TrainConfig(steps=10**9, batch_size=args.batch),
                                   device=device)
        steps, secs = timed(trainer.train_step, args.seconds)
        train_ips = steps * args.batch / secs
        model.eval()
        t = torch.full((args.batch,), 0.5, device=device)
        with torch.no_grad():
            evals, esecs = timed(lambda: model(x, t, y), args.seconds / 2)
            both = torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, 10)])
            gevals, gsecs = timed(lambda: model(*both), args.seconds / 2)
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"{name:28s} {n_params / 1e6:7.2f}M {train_ips:12.0f} {evals * args.batch / esecs:17.0f} "
              f"{gevals * args.batch / gsecs:10.0f}")


def _dit_patch2() -> torch.nn.Module:
    from diffkit.models import DiT

    return DiT(image_size=28, in_channels=1, patch_size=2, hidden=128, depth=4, heads=4, num_classes=10)


if __name__ == "__main__":
    main()
