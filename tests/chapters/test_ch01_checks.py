"""Chapter 1's checks, run at the chapter's size against the planted bugs they guard against.

The bend test asks whether the discriminator it is given maximises V(D, G) of eq-gan-value: bent by a bump
exp(-(x - c)^2) of size delta in its logit, at every integer c of the grid, it must lose V, by the second-order
amount of eq-gan-bend, wherever V can feel the bend at all (both densities non-negligible). A discriminator that
is wrong anywhere the densities overlap, the tails beyond |x| = 3 included, must fail it. The check it replaces
bent D* with one bump at the origin only, which a D* wrong beyond |x| = 3 passed.
"""

import math

import pytest
import torch

from diffkit import gan

X = torch.linspace(-12, 12, 24_001, dtype=torch.float64)  # the chapter's grid
DX = (X[1] - X[0]).item()


def normal_pdf(x, mean, std):
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


P_DATA = 0.5 * normal_pdf(X, -2, 0.5) + 0.5 * normal_pdf(X, 2, 0.5)
P_G = normal_pdf(X, 0, 1.5)
D_STAR = P_DATA / (P_DATA + P_G)  # eq-gan-dstar


def bend_check(d):
    """The chapter's check, as its notebook cell runs it; returns the range of centres it covered."""
    centres = torch.arange(-12.0, 13.0)
    sizes = [-0.1, -0.01, 0.01, 0.1]
    gap, second_order = gan.bend_gaps(P_DATA, P_G, d, X, DX, centres, sizes)
    felt = second_order[:, 1] > 5e-14
    ratio = gap[felt] / second_order[felt]
    assert (gap[felt] > 0).all() and ((ratio - 1).abs() < 0.05).all()
    return centres[felt].min().item(), centres[felt].max().item()


def old_bend_check(d):
    """The check the chapter used before: one bump at the origin, four sizes, gaps positive."""
    v = gan.value_function(P_DATA, P_G, d, DX)
    for bump in [-0.1, -0.01, 0.01, 0.1]:
        bent = torch.sigmoid(torch.logit(d) + bump * torch.exp(-X**2))
        assert v - gan.value_function(P_DATA, P_G, bent, DX) > 0


TAILS = X.abs() > 3
WRONG = {  # discriminators that equal D* for |x| <= 3 and are wrong beyond
    "one half in the tails": torch.where(TAILS, torch.full_like(D_STAR, 0.5), D_STAR),
    "logit + 0.3 in the tails": torch.where(TAILS, torch.sigmoid(torch.logit(D_STAR) + 0.3), D_STAR),
    "p_g's tails 20% too heavy": torch.where(TAILS, P_DATA / (P_DATA + 1.2 * P_G), D_STAR),
}


def test_the_optimal_discriminator_passes_and_the_check_covers_the_overlap():
    lo, hi = bend_check(D_STAR)
    assert lo <= -5 and hi >= 5  # well beyond |x| = 3, out to where p_data is ~1e-8 of its peak


@pytest.mark.parametrize("name", list(WRONG))
def test_a_discriminator_wrong_beyond_three_fails(name):
    d = WRONG[name]
    assert (d[~TAILS] == D_STAR[~TAILS]).all() and not torch.equal(d, D_STAR)
    with pytest.raises(AssertionError):
        bend_check(d)


@pytest.mark.parametrize("name", list(WRONG))
def test_the_old_check_let_it_through(name):
    old_bend_check(WRONG[name])  # passes: that is why the chapter's check changed
