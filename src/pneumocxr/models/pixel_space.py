"""A model that takes [0, 1] pixels: what adversarial attacks perturb.

Attacks are defined in pixel space: ε = 2/255 means "each pixel of the 8-bit image moves by at
most 2 grey levels", whatever a model's mean/std. So the attacked function is normalisation
followed by the model, with the normalisation done by ``models.inputs.normalise`` (the second
half of ``to_model_input``, the one path training and inference use), and the attack clips to
[0, 1] before it.

The input is the gray plane (N, 1, S, S): a chest film has one channel, and the channel repeat
happens inside ``normalise``, so a perturbation is the same on every channel the network sees,
as it would be for a real 8-bit image.
"""

from __future__ import annotations

import torch
from torch import nn

from pneumocxr.config import Preprocess
from pneumocxr.models.inputs import normalise


class PixelSpaceModel(nn.Module):
    """(N, 1, S, S) pixels in [0, 1] → ``model``'s logits, normalised as ``preprocess`` says.

    ``two_logits``: a one-logit binary head's output z becomes (N, 2) logits [−z/2, z/2]. Then
    softmax = [1 − σ(z), σ(z)], so the cross-entropy that attack libraries (ART, torchattacks)
    use on 2-class outputs is exactly the binary cross-entropy of z, and ``argmax`` is the 0.5 cut;
    z = ``out[:, 1] − out[:, 0]``. Why not [0, z], which has the same softmax: in float32 σ(z)
    rounds to 1 beyond z ≈ 17, so the gradient through the z column is exactly 0 and the constant
    column carries none: a confidently right image cannot be attacked at all (gradient masking).
    Measured: 10 of 39 PNEUMONIA images of a smoke-scale Lite0 had an all-zero input gradient with
    [0, z], none with [−z/2, z/2] (there the other column's tiny probability still flows back).
    k-class logits (k > 2) pass through unchanged.
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, *, two_logits: bool = True):
        super().__init__()
        self.model = model
        self.preprocess = preprocess  # a plain attribute: not part of the state_dict
        self.two_logits = two_logits

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 1:
            raise ValueError(f"expected (N, 1, S, S) pixels in [0, 1], got shape {tuple(pixels.shape)}")
        logits = self.model(normalise(pixels, self.preprocess))  # (N, 1) or (N, k)
        if self.two_logits and logits.shape[1] == 1:
            half = logits / 2
            return torch.cat([-half, half], dim=1)  # (N, 2) = [−z/2, z/2]
        return logits


def to_pixels(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Normalised model input (N, C, S, S) → the gray plane (N, 1, S, S) in [0, 1] it was made from.

    Inverts ``normalise`` on channel 0 (every channel holds the same plane); clamped to [0, 1]
    against rounding. Detached float32.
    """
    mean, std = float(preprocess.mean[0]), float(preprocess.std[0])
    return (images[:, :1].detach().float() * std + mean).clamp_(0.0, 1.0)
