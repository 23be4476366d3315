"""diffkit.memorization: nearest-neighbour distances, the copy share, the kernel density of the training set and
its dequantized bits per dimension (chapter 13)."""

import math

import pytest
import torch

from diffkit import memorization, oracles, paths

F64 = torch.float64


def test_nearest_distances_match_a_loop_and_exclude_self():
    g = torch.Generator().manual_seed(0)
    x, ref = torch.randn(7, 1, 2, 2, generator=g), torch.randn(5, 1, 2, 2, generator=g)
    d = memorization.nearest_distances(x, ref, chunk=3)
    for i in range(7):
        assert d[i].item() == pytest.approx(min(float((x[i] - r).norm()) for r in ref), rel=1e-6)
    assert (memorization.nearest_distances(ref, ref) == 0).all()
    own = memorization.nearest_distances(ref, ref, exclude_self=True, chunk=2)
    assert own[0].item() == pytest.approx(min(float((ref[0] - r).norm()) for r in ref[1:]), rel=1e-6)


def test_copy_share_is_the_quantile_for_held_out_data_and_one_for_copies():
    held = torch.arange(1, 101, dtype=F64)
    share, threshold = memorization.copy_share(held, held, 0.05)
    assert share == pytest.approx(0.04, abs=0.011) and 5 <= threshold <= 6
    assert memorization.copy_share(torch.zeros(10, dtype=F64), held, 0.05)[0] == 1.0


def test_kernel_log_density_equals_the_gaussian_mixture_oracle():
    g = torch.Generator().manual_seed(1)
    centres, x = torch.randn(40, 6, generator=g, dtype=F64), torch.randn(9, 6, generator=g, dtype=F64)
    mix = oracles.GaussianMixture(centres, stds=0.7)
    want = mix.log_prob(x, 0.0, paths.DiscretePath.from_schedule("linear", 1000))
    torch.testing.assert_close(memorization.kernel_log_density(x, centres, 0.7, chunk=4), want)


def test_a_uniform_density_on_the_data_range_gives_log2_levels_bits():
    x = torch.randint(0, 256, (5, 1, 3, 3), generator=torch.Generator().manual_seed(2)).double() / 127.5 - 1

    def uniform(z):  # density 2^-D on [-1, 1]^D
        return torch.full((z.shape[0],), -z[0].numel() * math.log(2.0), dtype=F64)

    torch.testing.assert_close(memorization.dequantized_bits_per_dim_of(uniform, x),
                               torch.full((5,), 8.0, dtype=F64))
    x16 = torch.randint(0, 16, (4, 2), generator=torch.Generator().manual_seed(3)).double() / 15
    bits = memorization.dequantized_bits_per_dim_of(lambda z: torch.zeros(len(z), dtype=F64), x16, levels=16,
                                                    data_range=(0.0, 1.0))
    torch.testing.assert_close(bits, torch.full((4,), 4.0, dtype=F64))


def test_a_narrow_kernel_on_the_training_set_scores_its_digits_far_better_than_new_ones():
    g = torch.Generator().manual_seed(4)
    train = torch.randint(0, 256, (50, 16), generator=g).double() / 127.5 - 1
    new = torch.randint(0, 256, (50, 16), generator=g).double() / 127.5 - 1
    bpd = {name: memorization.dequantized_bits_per_dim_of(
        lambda z: memorization.kernel_log_density(z, train, 0.01), x, generator=g).mean()
        for name, x in [("train", train), ("new", new)]}
    assert bpd["train"] < 3 and bpd["new"] > 100  # a uniform guess costs 8 bits/dim


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="std"):
        memorization.kernel_log_density(torch.randn(3, 2), torch.randn(4, 2), 0.0)
    with pytest.raises(ValueError, match="same size per example"):
        memorization.nearest_distances(torch.randn(3, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="quantized"):
        memorization.dequantized_bits_per_dim_of(lambda z: z.sum(1), torch.rand(3, 2) * 0.1)
    with pytest.raises(TypeError, match="log_density"):
        memorization.dequantized_bits_per_dim_of(3, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="quantile"):
        memorization.copy_share(torch.ones(3), torch.ones(3), 0.0)
