"""Train the recipes of chapter 10 on MNIST for the same CPU budget; print FID and class accuracy.

    .venv/bin/python benchmarks/recipes.py                       # 15 minutes per recipe, all four
    .venv/bin/python benchmarks/recipes.py --recipes flux --minutes 15 --guidance 1 3

FID (in the course classifier's feature space, see diffkit.evaluation) is measured between 1,000 guided,
class-conditional samples (100 per digit) and the 1,000-digit MNIST test split; class accuracy is the share of
samples the classifier assigns to the digit that was asked for.  A grid of samples is written to
benchmarks/out/<recipe>.png.

Then, to say *why* a recipe is behind, the denoising error of each trained model by noise level
(diffkit.losses.denoising_mse on 500 test digits), with and without the class label.  It is indexed by the
signal-to-noise ratio, not by t: the recipes use different paths, and the best possible error depends on the path
only through the SNR (x_t / alpha_t = x_0 + eps / sqrt(SNR)).  A model whose error at low SNR exceeds the data's
variance (what predicting the mean digit scores) has not learned the coarse structure; one whose error is the same
with and without the label has not learned the classes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffkit import data, evaluation, recipes, training  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def save_grid(images: torch.Tensor, path: Path, per_row: int = 10) -> None:
    import matplotlib.pyplot as plt

    rows = images.reshape(-1, per_row, 28, 28)  # one row per digit
    grid = rows.permute(0, 2, 1, 3).reshape(rows.shape[0] * 28, per_row * 28)
    path.parent.mkdir(exist_ok=True)
    plt.imsave(path, ((grid + 1) / 2).clamp(0, 1).numpy(), cmap="gray")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(recipes.RECIPES), choices=list(recipes.RECIPES))
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per recipe (wall clock)")
    parser.add_argument("--steps", type=int, default=30, help="sampling steps (NFE per sample without guidance)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()

    images, labels = data.mnist_tensors("train")
    test_images, test_labels = data.mnist_tensors("test")
    classifier = evaluation.mnist_classifier()
    print(f"torch threads: {torch.get_num_threads()}, device: {training.default_device()}")
    asked = torch.arange(10).repeat_interleave(max(1, args.samples // 10))
    rows, errors = [], {}
    for name in args.recipes:
        recipe = recipes.get_recipe(name)
        torch.manual_seed(0)
        config = training.TrainConfig(steps=10**7, batch_size=128, lr=recipe.lr, warmup_steps=200, ema_decay=0.999)
        trainer = training.Trainer(recipe.build_model(), recipe.loss, (images, labels), config)
        trainer.seconds_used = 0.0
        while trainer.seconds_used < 60 * args.minutes:  # report once a minute
            trainer.fit(max_seconds=min(60.0, 60 * args.minutes - trainer.seconds_used), progress=False)
            trainer.seconds_used += trainer.seconds
            recent = trainer.losses[-100:]
            print(f"  {name}: {trainer.seconds_used / 60:4.1f} min, step {trainer.step}, "
                  f"loss {sum(recent) / len(recent):.4f}", flush=True)
        trainer.seconds = trainer.seconds_used
        history = trainer.losses
        print(f"{name}: {trainer.step} steps in {trainer.seconds:.0f} s ({trainer.step / trainer.seconds:.2f} steps/s), "
              f"loss {sum(history[:50]) / min(50, len(history)):.4f} (first 50 steps) -> "
              f"{sum(history[-200:]) / min(200, len(history)):.4f} (last 200)")
        for w in args.guidance:
            t0 = time.perf_counter()
            samples = recipes.generate(recipe, trainer.ema_model, asked, n_steps=args.steps, guidance=w,
                                       generator=torch.Generator().manual_seed(1))
            secs = time.perf_counter() - t0
            fid = evaluation.mnist_fid(classifier, samples, test_images)
            acc = evaluation.class_accuracy(classifier, samples, asked)
            per_class = len(asked) // 10
            first_ten = (torch.arange(10)[:, None] * per_class + torch.arange(min(10, per_class))[None, :]).flatten()
            save_grid(samples[first_ten], OUT / f"{name}_w{w:g}.png", per_row=min(10, per_class))
            rows.append((recipe.title, trainer.step, trainer.seconds, args.steps, w, fid, acc, secs))
            print(f"  guidance {w:g}: FID {fid:.2f}, class accuracy {acc:.3f}, sampling {secs:.0f} s")
        with torch.no_grad():
            label, null = recipes.error_by_snr(recipe, trainer.ema_model.cpu(), test_images[:500], test_labels[:500])
            errors[name] = list(zip(recipes.SNRS, label.tolist(), null.tolist()))
    print(f"\n{'recipe':50s} {'steps':>6s} {'train s':>8s} {'NFE':>4s} {'w':>4s} {'FID':>7s} {'acc':>6s} {'sample s':>8s}")
    for title, steps, tsec, nfe, w, fid, acc, ssec in rows:
        print(f"{title:50s} {steps:6d} {tsec:8.0f} {nfe:4d} {w:4g} {fid:7.2f} {acc:6.3f} {ssec:8.0f}")
    variance = ((test_images[:500] - test_images[:500].mean(0)) ** 2).mean().item()
    print(f"\ndenoising error E|x0_hat - x0|^2 / d by SNR, with the label / with the null label "
          f"(predicting the mean digit scores {variance:.3f})")
    print(f"{'SNR':>8s} " + " ".join(f"{name:>17s}" for name in errors))
    for i, snr in enumerate(recipes.SNRS):
        print(f"{snr:8g} " + " ".join(f"{e[i][1]:8.4f}/{e[i][2]:8.4f}" for e in errors.values()))


if __name__ == "__main__":
    main()
