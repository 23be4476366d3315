import pytest
import torch

from diffkit import paths


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


def all_paths():
    """One instance of every kind of Gaussian path, for parametrised tests."""
    return [
        paths.VPPath(), paths.SubVPPath(), paths.VEPath(0.01, 50.0), paths.LinearPath(), paths.LinearPath(0.05),
        paths.CosinePath(), paths.DiscretePath.from_schedule("linear", 1000),
        paths.DiscretePath.from_schedule("cosine", 1000), paths.DiscretePath.from_schedule("sigmoid", 1000),
    ]


def path_id(p):
    return repr(p)
