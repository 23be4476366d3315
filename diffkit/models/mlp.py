r"""A conditional MLP for 2-D toy data (chapters 3 and 8).

:math:`h_1 = \mathrm{SiLU}(W_1 x + U_1 c)`, :math:`h_{l+1} = \mathrm{SiLU}(W_{l+1} h_l + U_{l+1} c)`,
:math:`f(x, t, y) = W_\mathrm{out} h_L`, where :math:`c = \mathrm{SiLU}(\tau(t) + e(y))` is the conditioning
vector of :class:`~diffkit.models.embeddings.ConditionEmbedding`, injected as a bias into every hidden layer.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int
from .embeddings import ConditionEmbedding, DiffusionModel, check_model_input

__all__ = ["MLP"]


class MLP(DiffusionModel):
    r"""``MLP(dim, hidden, depth, time_dim, num_classes, label_dropout)``: ``forward(x, t, y=None)`` (B, dim) -> (B, dim).

    ``depth`` hidden layers of width ``hidden``; the conditioning :math:`c` (width ``time_dim``) is projected
    by one Linear to the ``depth`` per-layer biases :math:`U_l c`.  PyTorch's default initialisation throughout.
    ``label_dropout`` (0.1, as the UNet and DiT) trains the null label that classifier-free guidance needs.
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, time_dim: int = 128,
                 num_classes: int | None = None, label_dropout: float = 0.1):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.hidden = check_positive_int("hidden", hidden)
        self.depth = check_positive_int("depth", depth)
        self.cond = ConditionEmbedding(check_positive_int("time_dim", time_dim), num_classes, label_dropout)
        self.layers = nn.ModuleList(nn.Linear(dim if i == 0 else hidden, hidden) for i in range(depth))  # W_l
        self.cond_proj = nn.Linear(time_dim, depth * hidden)  # [U_1; ...; U_L]
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = check_model_input(x, t, (self.dim,), self)  # (B,)
        c = F.silu(self.cond(t, y))  # (B, time_dim)
        biases = self.cond_proj(c).chunk(self.depth, dim=-1)  # depth x (B, hidden)
        h = x  # (B, dim)
        for layer, bias in zip(self.layers, biases):
            h = F.silu(layer(h) + bias)  # (B, hidden)
        return self.out(h)  # (B, dim)
