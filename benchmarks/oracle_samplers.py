"""Print the distance every sampler reaches when driven by the exact oracle of the eight-Gaussians mixture.

    .venv/bin/python benchmarks/oracle_samplers.py [--seeds 3]

Uses the same cases, sample size and bounds as tests/test_samplers.py; prints squared MMD to fresh true
samples (mean over seeds), the same for a wrong model (each Gaussian blurred from std 0.3 to 0.5), the
energy distance, and the wall time of one sampling run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffkit import distances, oracles, samplers  # noqa: E402
from tests.test_samplers import CASES, MMD_BOUND, MMD_WRONG_MIN, N_SAMPLES, case_id  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    mixture = oracles.eight_gaussians()
    blurred = oracles.GaussianMixture(mixture.means, stds=0.5)
    print(f"{N_SAMPLES} samples, {args.seeds} seeds; test bound MMD^2 < {MMD_BOUND}, wrong model > {MMD_WRONG_MIN}")
    g = torch.Generator().manual_seed(123)
    floor = [distances.mmd(mixture.sample(N_SAMPLES, generator=g), mixture.sample(N_SAMPLES, generator=g)).item()
             for _ in range(args.seeds)]
    print(f"{'two sets of true samples':62s} MMD^2 {sum(floor) / len(floor):8.5f}")
    print(f"{'case':62s} {'MMD^2':>8s} {'wrong':>8s} {'energy':>8s} {'seconds':>8s}")
    for case in CASES:
        name, path, ts, target, opts = case
        good, wrong, energy, secs = [], [], [], 0.0
        for seed in range(args.seeds):
            for model, out_list in ((mixture, good), (blurred, wrong)):
                g = torch.Generator().manual_seed(seed)
                ref = mixture.sample(N_SAMPLES, generator=g)
                x = samplers.prior(path, (N_SAMPLES, 2), generator=g, dtype=torch.float64)
                t0 = time.perf_counter()
                out = samplers.get_sampler(name)(model.as_model(path, target), x, ts, path, target=target,
                                                 generator=g, **opts)
                secs = time.perf_counter() - t0
                out_list.append(distances.mmd(out, ref).item())
                if model is mixture:
                    energy.append(distances.energy_distance(out, ref).item())
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        print(f"{case_id(case):62s} {mean(good):8.5f} {mean(wrong):8.5f} {mean(energy):8.5f} {secs:8.2f}")


if __name__ == "__main__":
    main()
