r"""Neural networks for diffusion and flow matching, all called ``model(x, t, y=None)``.

* :mod:`diffkit.models.embeddings` — time features, class table with a null label, :math:`c = \tau(t) + e(y)`
  (chapters 3, 8)
* :mod:`diffkit.models.mlp`        — conditional MLP for 2-D toy data (chapters 3, 8)
* :mod:`diffkit.models.unet`       — the DDPM UNet (chapters 3, 8)
* :mod:`diffkit.models.dit`        — patches, ViT blocks and the Diffusion Transformer (chapter 9)

``x`` is (B, D) or (B, C, H, W) and the output has its shape; ``t`` (B,) lies in [0, 1] with 0 = data;
``y`` (B,) holds class labels, ``num_classes`` being the null label (``y=None`` = null label for all).
Every model records its constructor arguments in ``model.config`` (so :func:`diffkit.checkpoints.save_model`
can rebuild it), and :func:`check_guidance_support` warns when guidance is asked of a model trained without
label dropout.
"""

from . import dit, embeddings, mlp, unet
from .dit import (CONDITIONINGS, Attention, CrossAttention, DiT, DiTBlock, FinalLayer, Mlp, ViTBlock, patchify,
                  sincos_position_embedding, unpatchify)
from .embeddings import (ConditionEmbedding, DiffusionModel, LabelEmbedding, RecordsConfig, TimestepEmbedding,
                         check_guidance_support, sinusoidal_embedding)
from .mlp import MLP
from .unet import UNet

__all__ = [
    "dit", "embeddings", "mlp", "unet",
    "sinusoidal_embedding", "TimestepEmbedding", "LabelEmbedding", "ConditionEmbedding", "DiffusionModel",
    "RecordsConfig", "check_guidance_support",
    "MLP", "UNet",
    "patchify", "unpatchify", "sincos_position_embedding", "Attention", "CrossAttention", "Mlp", "ViTBlock",
    "DiTBlock", "FinalLayer", "DiT", "CONDITIONINGS",
]
