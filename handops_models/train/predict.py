"""Keypoints for image files from a trained checkpoint: JSON and an overlay PNG per image.

    predict_files(network, ["hand.jpg", "crops/"], out_dir, decode="argmax")

The image is taken as an already-cropped hand (as the networks were trained on the thesis' 2.2x square crop
around the hand, roughly centred): it is not detected or cropped here. A non-square image is padded with
black to a square about its centre, then resized (bilinear, antialiased) to the network's input size;
the keypoints are mapped back to the original image's pixels ((0, 0) the centre of the top-left pixel).

Decoding:
* ``argmax``: each keypoint independently, the maximum of the network's final maps (``network.predict``).
* ``map``: one jointly most probable configuration of the tree model, ``handops.tree_map`` (max-product with
  backtracking), for the networks that have pairwise kernels:
  - AGMN: its outputs "unary" and "kernels" (the normalised potentials its ``tree_marginals`` call uses);
  - R-MGMN: a mixture of L tree models has no single MAP configuration that ``tree_map`` computes, so the
    kernels of the highest-weight model (the soft classifier's argmax) are used with the unary on the upright
    (rotated) image, and the decoded keypoints are rotated back by the rotation net's angle.
  Other networks (CPM, Hourglass, SiaPose and its variants: edge_conv kernels are not a tree's potentials)
  have no pairwise kernels and are refused.
The confidence reported is the network's final map ("heatmaps"; R-MGMN: the upright marginals) at the
decoded position.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["IMAGE_SUFFIXES", "DECODERS", "find_images", "load_image", "to_input", "to_original", "decode",
           "tree_map_keypoints", "check_map_decodable", "map_decode", "rotate_back", "predict_files"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DECODERS = ("argmax", "map")


def find_images(inputs) -> list[Path]:
    """Image files from files and folders (a folder's PNG / JPG files, sorted, not recursive)."""
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"{path}: no .png / .jpg images in this folder")
            found += files
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image or folder")
    return found


def load_image(path) -> torch.Tensor:
    """[3, H, W] float32 in [0, 1] (Pillow; grey and RGBA become RGB)."""
    from handops_models.data.formats._common import read_image

    return read_image(Path(path))


def to_input(image: torch.Tensor, size: int) -> torch.Tensor:
    """[3, H, W] -> [3, size, size]: padded to a centred square (black), then resized."""
    _, height, width = image.shape
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    square = F.pad(image, (left, side - width - left, top, side - height - top))
    if side == size:
        return square
    return F.interpolate(square[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=side > size)[0].clamp(0, 1)


def to_original(keypoints: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """Input pixels [..., 2] of the network -> pixels of the original [H, W] image (inverse of :func:`to_input`)."""
    side = max(height, width)
    left, top = (side - width) // 2, (side - height) // 2
    square = (keypoints.double() + 0.5) * (side / size) - 0.5
    return square - torch.tensor([left, top], dtype=torch.float64)


def rotate_back(keypoints: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    """Keypoints [B, K, 2] found on the upright image ``rotate(image, angle)`` -> the original image's pixels.

    ``nets.rotation.rotate`` turns the content counter-clockwise by ``angle`` about the image centre
    ((size - 1) / 2 in pixels), so the inverse turns them by ``-angle`` about that centre."""
    from handops_models.data.targets import rotate_keypoints

    centre = torch.full((keypoints.shape[0], 2), (size - 1) / 2, dtype=keypoints.dtype, device=keypoints.device)
    return rotate_keypoints(keypoints, -angle.to(keypoints.dtype), centre=centre)


def _at(maps: torch.Tensor, config: torch.Tensor) -> torch.Tensor:
    """maps [B, K, h, w] at config [B, K, 2] (row, col) -> [B, K]."""
    width = maps.shape[-1]
    flat = maps.flatten(-2)
    return flat.gather(-1, (config[..., 0] * width + config[..., 1])[..., None])[..., 0]


def tree_map_keypoints(unary: torch.Tensor, kernels: torch.Tensor, tree, stride: int):
    """``handops.tree_map``'s configuration as (keypoints [B, K, 2] input pixels (x, y), config [B, K, 2] (row, col))."""
    import handops
    from handops_models.data.targets import heatmap_to_image

    _, config = handops.tree_map(unary, kernels, tree)
    return heatmap_to_image(config.flip(-1).to(unary.dtype), stride=stride), config


def check_map_decodable(network) -> None:
    """Raise ValueError for a network without pairwise kernels (anything but AGMN and R-MGMN)."""
    from handops_models.nets.agmn import AGMN
    from handops_models.nets.rmgmn import RMGMN

    if not isinstance(network, (AGMN, RMGMN)):
        name = getattr(network, "model_name", type(network).__name__)
        raise ValueError(f"--decode map needs pairwise kernels (a tree model's potentials): agmn and rmgmn have them, "
                         f"a {name!r} network does not; use --decode argmax")


def map_decode(network, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``handops.tree_map`` decoding (module docstring): {"keypoints2d" [B, K, 2] input pixels, "confidence" [B, K]}."""
    from handops_models.nets.agmn import AGMN
    from handops_models.nets.rmgmn import RMGMN
    from handops_models.nets.structured import normalised_potentials

    check_map_decodable(network)
    captured = {}
    hook = None
    if isinstance(network, RMGMN):  # the unary on the upright image is not among the outputs: capture it
        hook = network.unary_branch.stages.register_forward_hook(lambda m, i, o: captured.__setitem__("stages", o))
    modes = [(module, module.training) for module in network.modules()]
    network.eval()
    try:
        with torch.no_grad():
            outputs = network(images)
    finally:
        for module, training in modes:  # each submodule's own mode back (a frozen part may be in eval mode)
            module.training = training
        if hook is not None:
            hook.remove()
    if isinstance(network, AGMN):
        unary, kernels, final = outputs["unary"], outputs["kernels"], outputs["heatmaps"]
    else:
        unary = normalised_potentials(captured["stages"][:, -1], network.config.unary_floor)
        pool = normalised_potentials(network.kernels.detach(), network.config.kernel_floor)
        kernels = pool[outputs["weights"].argmax(-1)]
        final = outputs["marginals_upright"]
    keypoints, config = tree_map_keypoints(unary, kernels, network.tree, network.stride)
    if isinstance(network, RMGMN):
        keypoints = rotate_back(keypoints, outputs["angle"], network.input_size)
    return {"keypoints2d": keypoints, "confidence": _at(final, config)}


def decode(network, images: torch.Tensor, method: str = "argmax") -> dict[str, torch.Tensor]:
    if method == "argmax":
        return network.predict(images)
    if method == "map":
        return map_decode(network, images)
    raise ValueError(f"unknown decoding {method!r}; expected one of {DECODERS}")


def predict_files(network, inputs, out_dir, decode_method: str = "argmax", device: str = "cpu",
                  checkpoint: str | None = None, log=print) -> list[dict]:
    """For each image: ``<stem>_keypoints.json`` and ``<stem>_overlay.png`` in ``out_dir``; returns the records."""
    import handops
    from handops_models.viz import draw_keypoints, save_png

    if decode_method not in DECODERS:
        raise ValueError(f"unknown decoding {decode_method!r}; expected one of {DECODERS}")
    if decode_method == "map":  # refuse before reading any image
        check_map_decodable(network)
    files = find_images(inputs)
    out_dir = Path(out_dir)
    size = network.input_size
    records, used = [], set()
    for path in files:
        image = load_image(path)
        _, height, width = image.shape
        out = decode(network, to_input(image, size)[None].to(device), decode_method)
        keypoints = to_original(out["keypoints2d"][0].cpu(), height, width, size)
        stem = path.stem
        k = 1
        while stem in used:
            k += 1
            stem = f"{path.stem}_{k}"
        used.add(stem)
        record = {"image": str(path), "width": width, "height": height, "model": getattr(network, "model_name", None),
                  "checkpoint": checkpoint, "decode": decode_method, "input_size": size,
                  "keypoint_names": list(handops.HAND_KEYPOINT_NAMES),
                  "keypoints2d": keypoints.tolist(), "confidence": out["confidence"][0].cpu().double().tolist()}
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / f"{stem}_keypoints.json"
        json_path.write_text(json.dumps(record, indent=1))
        scale = max(1, math.ceil(256 / max(height, width)))
        png_path = out_dir / f"{stem}_overlay.png"
        save_png(draw_keypoints(image, keypoints, scale=scale), png_path)
        record.update(json=str(json_path), overlay=str(png_path))
        records.append(record)
        log(f"{path}: {json_path.name}, {png_path.name}")
    return records
