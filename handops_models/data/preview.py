"""Writes a PNG grid of dataset samples with their keypoints and skeletons drawn, for a person to look at.

    python -m handops_models.data.preview --dataset synthetic --num 16 --out samples.png

``--dataset`` chooses from :data:`DATASETS` (``synthetic`` today); :func:`register_dataset` adds a
name with a factory ``(args) -> Dataset`` (e.g. a real-dataset loader reading ``--root``). Options:
``--seed``, ``--image-size``, ``--occlusion``, ``--split``, ``--start`` (first index), ``--cols``,
``--scale`` (enlargement of each tile), ``--mesh wireframe|filled`` (overlay the projected MANO mesh
where the samples have vertices) and ``--raw`` (the plain image before each annotated one).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["DATASETS", "register_dataset", "build_parser", "main"]


def _synthetic(args: argparse.Namespace):
    from handops_models.data.synthetic import SyntheticHands

    return SyntheticHands(args.start + args.num, image_size=args.image_size, seed=args.seed, split=args.split,
                          occlusion=args.occlusion, progress=False)


def _synthetic_faces(args: argparse.Namespace):
    import handops

    return handops.mano.synthetic_model(0).faces


# name -> (dataset factory, mesh faces factory or None)
DATASETS: dict[str, tuple[Callable, Callable | None]] = {"synthetic": (_synthetic, _synthetic_faces)}


def register_dataset(name: str, factory: Callable, faces: Callable | None = None) -> None:
    """Makes ``--dataset name`` build ``factory(args)``; ``faces(args)`` gives the mesh faces for ``--mesh``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise ValueError(f"factory must be callable, got {type(factory).__name__}")
    DATASETS[name] = (factory, faces)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m handops_models.data.preview", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic")
    parser.add_argument("--num", type=int, default=16, help="how many samples (default 16)")
    parser.add_argument("--out", default="samples.png", help="the PNG to write")
    parser.add_argument("--start", type=int, default=0, help="index of the first sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--occlusion", type=float, default=0.3)
    parser.add_argument("--split", choices=("train", "val", "test"), default="train")
    parser.add_argument("--cols", type=int, default=None, help="grid columns (default ceil(sqrt(num)))")
    parser.add_argument("--scale", type=int, default=2, help="enlarge each image this many times (default 2)")
    parser.add_argument("--mesh", choices=("wireframe", "filled"), default=None, help="overlay the projected mesh")
    parser.add_argument("--raw", action="store_true", help="show the plain image before each annotated one")
    return parser


def main(argv: list[str] | None = None) -> str:
    from handops_models import viz

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num must be >= 1, got {args.num}")
    if args.start < 0:
        parser.error(f"--start must be >= 0, got {args.start}")
    if args.scale < 1:
        parser.error(f"--scale must be >= 1, got {args.scale}")
    factory, faces_factory = DATASETS[args.dataset]
    dataset = factory(args)
    indices = list(range(args.start, min(len(dataset), args.start + args.num)))
    getitems = getattr(dataset, "__getitems__", None)
    samples = getitems(indices) if getitems is not None else [dataset[i] for i in indices]
    faces = None
    if args.mesh is not None:
        if faces_factory is None:
            parser.error(f"--mesh is not available for --dataset {args.dataset}")
        faces = faces_factory(args)
    image = viz.sample_grid(samples, ncols=args.cols, scale=args.scale, mesh=args.mesh, faces=faces, raw=args.raw)
    path = viz.save_png(image, args.out)
    print(f"wrote {path} ({len(samples)} {args.dataset} samples, {image.size[0]} x {image.size[1]} px)")
    return path


if __name__ == "__main__":
    main()
