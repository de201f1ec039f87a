"""What every 2-D network shares: input checks, ImageNet normalisation, heatmap targets and losses,
decoding heatmaps to keypoints (``predict``).

A network is a module with three methods:

    forward(images [B, 3, S, S] in [0, 1]) -> dict of outputs; "heatmaps" [B, K, h, w] are the final maps
    loss(outputs, targets, weights=None) -> (total, {name: term}); targets hold "keypoints2d" [B, K, 2]
        in input pixels (a collated batch of ``handops_models.data`` samples works as is)
    predict(images) -> {"keypoints2d" [B, K, 2] input pixels, "confidence" [B, K]}

Loss terms are the thesis' sums of squared Frobenius norms (Eq. 3.25, 4.12-4.15, 5.4) averaged over the
batch: ``sum_t sum_k ||S_k^t - S_k^*||_F^2 / B``. (The author's code uses 30 x the mean squared error, the
same up to a constant factor.) A keypoint outside the input image gets an all-zero target map; occluded
keypoints inside the image keep their targets: inferring them is what the structured models are for.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from handops_models.data.targets import heatmap_to_image, keypoint_heatmaps, target_mask

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageModel", "HandPoseNet", "squared_error", "argmax_2d"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum ||pred - target||_F^2 / B`` over every dimension but the batch (dim 0)."""
    return (pred - target).pow(2).sum() / max(pred.shape[0], 1)


def argmax_2d(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """maps [..., h, w] -> (positions [..., 2] as (col, row) float, values [...]) of each map's maximum."""
    flat = maps.flatten(-2)
    values, index = flat.max(-1)
    width = maps.shape[-1]
    cols, rows = index % width, torch.div(index, width, rounding_mode="floor")
    return torch.stack([cols, rows], -1).to(maps.dtype), values


class ImageModel(nn.Module):
    """What every network of handops_models shares: ``input_size`` x ``input_size`` RGB images in [0, 1],
    checked and ImageNet-normalised (:meth:`check_images`), named loss terms summed with weights
    (:meth:`_total`) and inference in eval mode without gradients (:meth:`inference`)."""

    name = "image model"

    def __init__(self, config, input_size: int):
        super().__init__()
        self.config = config
        self.input_size = int(input_size)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ----------------------------------------------------------------------------------- inputs
    def check_images(self, images) -> torch.Tensor:
        """Validate ``images`` [B, 3, S, S] (float in [0, 1], the model's device) and normalise them with
        the ImageNet mean and std (thesis 3.5.1)."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{self.name}: images must be a tensor [B, 3, {self.input_size}, {self.input_size}], "
                            f"got {type(images).__name__}")
        expected = f"[B, 3, {self.input_size}, {self.input_size}]"
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: images must be {expected} RGB, got shape {list(images.shape)}")
        if tuple(images.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"{self.name}: this config takes {self.input_size}x{self.input_size} images {expected}, got "
                             f"{images.shape[-2]}x{images.shape[-1]}; resize them (transforms.Resize) or build the model "
                             f"with input_size={images.shape[-1]}")
        if not images.is_floating_point():
            raise TypeError(f"{self.name}: images must be floating point in [0, 1], got {images.dtype} "
                            f"(convert uint8 images with images.float() / 255)")
        parameter = next(self.parameters())
        if images.device != parameter.device:
            raise ValueError(f"{self.name}: images are on {images.device} but the model is on {parameter.device}")
        images = images.to(parameter.dtype)
        return (images - self.pixel_mean.to(images)) / self.pixel_std.to(images)

    @staticmethod
    def _total(terms: dict[str, torch.Tensor], weights, default: dict[str, float]) -> torch.Tensor:
        """sum of weights[name] * terms[name]; ``weights`` None means the model's default weights."""
        weights = default if weights is None else dict(weights)
        if not weights:
            raise ValueError(f"loss weights are empty: name at least one of the terms {sorted(terms)}")
        unknown = sorted(set(weights) - set(terms))
        if unknown:
            raise ValueError(f"loss weights name terms {unknown} that this model does not compute; it has {sorted(terms)}")
        total = None
        for name, w in weights.items():
            term = float(w) * terms[name]
            total = term if total is None else total + term
        return total

    def batch_inputs(self, batch: dict) -> tuple:
        """The arguments of ``forward`` (and ``predict``) from a collated batch: the images."""
        return (batch["image"],)

    @contextlib.contextmanager
    def inference(self):
        """A context for prediction: eval mode and no gradients; on exit every submodule gets its own mode back
        (a frozen BatchNorm stays in eval, a training model goes back to training)."""
        modes = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            with torch.no_grad():
                yield self
        finally:
            for module, training in modes:
                module.training = training


class HandPoseNet(ImageModel):
    """Base of the 2-D networks: ``input_size`` x ``input_size`` RGB in, ``map_size`` maps out."""

    name = "hand pose net"

    def __init__(self, config, input_size: int, map_size: int, num_keypoints: int = 21, sigma: float = 1.0):
        super().__init__(config, input_size)
        if input_size % map_size != 0:
            raise ValueError(f"input size {input_size} must be a multiple of the map size {map_size}")
        self.map_size = int(map_size)
        self.stride = self.input_size // self.map_size
        self.num_keypoints, self.sigma = int(num_keypoints), float(sigma)

    # ----------------------------------------------------------------------------------- targets
    def _keypoints(self, targets) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(targets, dict) or "keypoints2d" not in targets:
            raise ValueError(f"{self.name}: targets must be a dict with 'keypoints2d' [B, {self.num_keypoints}, 2] "
                             f"(input pixels), got {type(targets).__name__}"
                             + (f" with keys {sorted(targets)}" if isinstance(targets, dict) else ""))
        keypoints = torch.as_tensor(targets["keypoints2d"])
        if keypoints.dim() != 3 or keypoints.shape[1:] != (self.num_keypoints, 2):
            hint = " (one image? add the batch dimension: keypoints2d[None])" if keypoints.dim() == 2 else ""
            raise ValueError(f"{self.name}: keypoints2d must be [B, {self.num_keypoints}, 2], got {list(keypoints.shape)}{hint}")
        mask = target_mask(keypoints, image_size=self.input_size)
        return keypoints, mask

    def heatmap_targets(self, targets, normalize: bool = False) -> torch.Tensor:
        """Gaussian target maps [B, K, h, w] (sigma in map pixels); ``normalize``: each sums to 1 (Eq. 4.15)."""
        keypoints, mask = self._keypoints(targets)
        parameter = next(self.parameters())
        return keypoint_heatmaps(keypoints.to(parameter), size=self.map_size, stride=self.stride, sigma=self.sigma,
                                 visibility=mask.to(parameter.device), normalize=normalize)

    def _check_batch(self, outputs: dict, targets) -> None:
        keypoints, _ = self._keypoints(targets)  # shape errors first: [21, 2] unbatched is named as such
        batch = outputs["heatmaps"].shape[0]
        if len(keypoints) != batch:
            raise ValueError(f"{self.name}: outputs are for {batch} images but targets hold {len(keypoints)}")

    # ----------------------------------------------------------------------------------- prediction
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keypoints [B, K, 2] in input pixels (argmax of the final maps, Eq. 3.13 / 4.6, mapped by the
        stride as in :mod:`handops_models.data.targets`) and their map values [B, K] as confidence.
        Runs in eval mode without gradients (every submodule's mode is restored afterwards). The argmax is
        a map cell, so a prediction is quantised to the stride (8 input pixels for CPM-based networks)."""
        with self.inference():
            maps = self.forward(images)["heatmaps"]
        positions, values = argmax_2d(maps)
        return {"keypoints2d": heatmap_to_image(positions, stride=self.stride), "confidence": values}
