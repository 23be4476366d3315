"""Does DDIM on chapter 3's MNIST U-Net approach DDPM's FID as its steps go to 1,000 (chapter 4's question)?

    .venv/bin/python benchmarks/ddim_many_steps.py [--n 200] [--steps 250,500,1000] [--seeds 1] [--etas 0,1]

Loads chapter 3's U-Net from the cache (trains it, about 6 CPU minutes, if no chapter has), samples DDIM
(eta = 0, trailing grid, no clipping) and DDPM at the same steps from the same noise, and prints the course's
FID against held-out digits at chapter 4's n, beside real digits against the same held-out ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffkit import data, evaluation, grids, samplers, zoo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="samples per FID (chapter 4's n)")
    parser.add_argument("--steps", default="250,500,1000")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--etas", default="0,1", help="0 = DDIM, 1 = DDPM (ancestral)")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    etas = [float(e) for e in args.etas.split(",")]
    setup = zoo.ddpm_mnist_setup()
    path = setup["path"]
    unet = zoo.ddpm_mnist_unet()
    classifier = evaluation.mnist_classifier(verbose=False, progress=False)
    held_out, _ = data.mnist_tensors("test", n=args.n, seed=1, verbose=False)
    digits, _ = data.mnist_tensors("train", verbose=False)
    real = digits[torch.randperm(len(digits), generator=torch.Generator().manual_seed(2))[:args.n]]
    print(f"chapter 3's U-Net ({setup['config'].steps} steps); FID at n = {args.n}; "
          f"real digits: {evaluation.mnist_fid(classifier, real, held_out):.1f}")
    names = {0.0: "DDIM FID", 1.0: "DDPM FID"}
    print(f"{'steps':>6s} {'seed':>4s} " + " ".join(f"{names.get(e, f'eta {e:g}'):>9s}" for e in etas)
          + f" {'seconds':>8s}")
    for n_steps in steps:
        ts = grids.ddpm_grid(n_steps, path.n_steps, "trailing")
        for seed in range(13, 13 + args.seeds):
            t0 = time.perf_counter()
            fids = []
            for eta in etas:
                gen = torch.Generator().manual_seed(seed)
                x = samplers.prior(path, (args.n, 1, 28, 28), generator=gen)
                with torch.no_grad():
                    out = samplers.ddim(unet, x, ts, path, eta=eta, generator=gen).clamp(-1, 1)
                fids.append(evaluation.mnist_fid(classifier, out, held_out))
            print(f"{n_steps:6d} {seed:4d} " + " ".join(f"{f:9.1f}" for f in fids)
                  + f" {time.perf_counter() - t0:8.0f}", flush=True)


if __name__ == "__main__":
    main()
