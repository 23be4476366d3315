import itertools

import pytest
import torch

from diffkit.coupling import ot_pair, ot_permutation


def _cost(x0, x1, perm):
    return ((x0 - x1[perm]) ** 2).sum().item()


def test_exact_assignment_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x0, x1 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
        best = min(_cost(x0, x1, torch.tensor(p)) for p in itertools.permutations(range(6)))
        assert _cost(x0, x1, ot_permutation(x0, x1)) == pytest.approx(best, rel=1e-6)


def test_is_a_permutation_and_beats_random_pairing():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(256, 1, 8, 8, generator=g), torch.randn(256, 1, 8, 8, generator=g)
    perm = ot_permutation(x0, x1)
    assert torch.equal(perm.sort().values, torch.arange(256))  # every noise sample used exactly once
    ot = _cost(x0, x1, perm)
    assert all(ot < _cost(x0, x1, torch.randperm(256, generator=g)) for _ in range(20))


def test_equivariant_to_relabelling():
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(32, 3, generator=g), torch.randn(32, 3, generator=g)
    shuffle = torch.randperm(32, generator=g)
    a0, a1 = ot_pair(x0, x1)
    b0, b1 = ot_pair(x0[shuffle], x1)
    # the same pairs come out, in the order of the data
    torch.testing.assert_close(b1, a1[shuffle])


def test_bad_input():
    with pytest.raises(ValueError, match="x0 and x1 must have the same shape"):
        ot_permutation(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(TypeError, match="x1 must be a torch.Tensor"):
        ot_permutation(torch.zeros(4, 2), None)
