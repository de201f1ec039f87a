"""The command line's chapter-6 parts: ``personalize``, and ``evaluate`` and ``predict`` of the mesh networks.

    python -m handops_models personalize --checkpoint runs/base/final.pt --data synthetic --subject 48 --out s48.json
    python -m handops_models personalize --checkpoint runs/base/final.pt --images crops/ --out me.json
    python -m handops_models evaluate --checkpoint runs/ident/final.pt --data synthetic --split test \\
        --shape calibrated --baseline runs/base/final.pt --detector runs/det/final.pt

``personalize`` calibrates one subject's shape from K images (Eq. 6.6-6.7: the baseline's confidences, softmax
with temperature 0.33, ``handops.calibrate_shape``) and writes it as JSON; on SyntheticHands it also prints the
calibration's errors against the subject's true shape (MSE of the betas, W- and L-error in mm).
``evaluate`` of a mesh checkpoint prints and writes MPJPE and MPVPE (mm, root-relative) without and, with a
``--detector``, with optimisation at inference (Eq. 6.4); an identity-aware network takes the true shape
(``--shape true``) or each subject's calibrated one (``--shape calibrated`` with ``--baseline``); a baseline
also reports its shape errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["add_personalize_parser", "add_mesh_evaluate_arguments", "add_mesh_predict_arguments", "cmd_personalize",
           "evaluate_mesh_checkpoint", "predict_mesh_files", "MESH_MODELS", "DEFAULT_FOCAL"]

MESH_MODELS = ("mesh-baseline", "mesh-identity")


def add_personalize_parser(sub, data_arguments, positive_int) -> None:
    from handops_models.train.data import SIZE_CUE_HELP

    p = sub.add_parser("personalize", help="one subject's MANO shape from unannotated images (Eq. 6.6-6.7)",
                       description="Calibrate one subject's shape from K images with a mesh-baseline checkpoint.")
    p.add_argument("--checkpoint", required=True, help="a mesh-baseline checkpoint (or its run folder)")
    p.add_argument("--images", default=None, help="a folder of crops of one subject (PNG / JPG)")
    p.add_argument("--data", default=None, help="instead of --images: take --k images of --subject from a data set")
    p.add_argument("--root", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--size", type=positive_int, default=None, help="images of the split (synthetic: rendered)")
    p.add_argument("--num-subjects", type=positive_int, default=50, help="synthetic: subjects in all splits")
    p.add_argument("--size-cue", action="store_true", help=SIZE_CUE_HELP)
    p.add_argument("--subject", type=int, default=None)
    p.add_argument("--k", type=positive_int, default=20, help="images of the subject (the thesis: 20)")
    p.add_argument("--seed", type=int, default=0, help="which images of the subject")
    p.add_argument("--no-attention", action="store_true", help="w_i = 1/K instead of softmax(c_i / 0.33)")
    p.add_argument("--out", required=True, help="the shape's JSON file")
    p.add_argument("--device", default=None)


def add_mesh_evaluate_arguments(e, positive_int) -> None:
    g = e.add_argument_group("mesh networks (chapter 6)")
    g.add_argument("--shape", default="true", choices=("true", "calibrated"),
                   help="identity-aware: each image's true shape, or its subject's calibrated one (needs --baseline)")
    g.add_argument("--baseline", default=None, help="a mesh-baseline checkpoint that calibrates the shapes")
    g.add_argument("--k", type=positive_int, default=20, help="images per subject for the calibration")
    g.add_argument("--no-attention", action="store_true", help="calibrate with w_i = 1/K")
    g.add_argument("--detector", default=None, help="a detector2d checkpoint: also evaluate with optimisation (Eq. 6.4)")
    g.add_argument("--solver", default="adam", choices=("adam", "lm"), help="the optimisation's solver")


def _load(path, model: str | None, device: str):
    from handops_models.train.evaluate import load_network

    network, checkpoint = load_network(path, model, device)
    return network, checkpoint


def cmd_personalize(args, device: str, log) -> int:
    from handops_models.metrics import shape_errors
    from handops_models.nets.mesh_inference import personalize, save_shape
    from handops_models.train.cli import CLIError
    from handops_models.train.data import make_split
    from handops_models.train.mesh_eval import choose_images, subject_indices
    from handops_models.train.predict import find_images, load_image, to_input

    if (args.images is None) == (args.data is None):
        raise CLIError("personalize reads either --images DIR (crops of one subject) or --data ... --subject ID")
    baseline, _ = _load(args.checkpoint, "mesh-baseline", device)
    truth, source = None, {}
    if args.images is not None:
        files = find_images([args.images])
        images = torch.stack([to_input(load_image(f), baseline.input_size) for f in files])
        source = {"images": [str(f) for f in files]}
    else:
        if args.subject is None:
            raise CLIError("--data needs --subject ID (a subject of the split)")
        dataset = make_split(args.data, args.root, baseline.input_size, args.split, args.size, cache_dir=args.cache_dir,
                             num_subjects=args.num_subjects, size_cue=args.size_cue)
        by_subject = subject_indices(dataset)
        if args.subject not in by_subject:
            raise CLIError(f"subject {args.subject} has no images in the {args.split} split; its subjects are {sorted(by_subject)}")
        chosen = choose_images(by_subject[args.subject], args.k, args.seed, args.subject)
        images = torch.stack([dataset[i]["image"] for i in chosen])
        truth = dataset[chosen[0]]["betas"]
        source = {"data": args.data, "size_cue": args.size_cue, "split": args.split, "subject": args.subject,
                  "indices": chosen}
    result = personalize(baseline, images.to(device), attention=not args.no_attention)
    info = {"images_used": len(images), "attention": not args.no_attention, "checkpoint": str(args.checkpoint),
            "weights": [round(float(w), 6) for w in result["weights"]], **source}
    if truth is not None:
        errors = shape_errors(baseline.mano, result["betas"][None].double().cpu(), truth[None].double())
        info["errors_against_truth"] = errors
        log(f"subject {args.subject}: MSE of the betas {errors['mse_betas']:.4f}, W-error {errors['w_error_mm']:.2f} mm, "
            f"L-error {errors['l_error_mm']:.2f} mm ({len(images)} images)")
    path = save_shape(args.out, result["betas"].cpu(), **info)
    log(f"wrote {path}")
    return 0


def evaluate_mesh_checkpoint(args, device: str, log) -> int:
    from handops_models.metrics import shape_errors
    from handops_models.train.cli import CLIError
    from handops_models.train.data import make_split
    from handops_models.train.evaluate import resolve_checkpoint
    from handops_models.train.mesh_eval import calibrate_subjects, mesh_errors

    if args.compare:
        raise CLIError("--compare takes 2-D checkpoints; evaluate mesh checkpoints one at a time")
    path = resolve_checkpoint(args.checkpoint)
    network, checkpoint = _load(path, args.model, device)
    dataset = make_split(args.data, args.root, network.input_size, args.split, args.size, cache_dir=args.cache_dir,
                         num_subjects=args.num_subjects, size_cue=args.size_cue)
    shapes, calibration = None, None
    if network.identity_aware and args.shape == "calibrated":
        if args.baseline is None:
            raise CLIError("--shape calibrated needs --baseline FILE (a mesh-baseline checkpoint)")
        baseline, _ = _load(args.baseline, "mesh-baseline", device)
        calibration = calibrate_subjects(baseline, dataset, k=args.k, attention=not args.no_attention, device=device)
        shapes = calibration["betas"]
    elif not network.identity_aware and args.shape == "calibrated":
        raise CLIError("--shape calibrated applies to mesh-identity checkpoints (the baseline regresses its shapes)")
    detector = _load(args.detector, "detector2d", device)[0] if args.detector else None
    errors = mesh_errors(network, dataset, shapes=shapes, detector=detector, solver=args.solver,
                         batch_size=args.batch_size, device=device, progress=True)
    report = {"checkpoint": str(path), "model": checkpoint["network"]["model"], "data": args.data,
              "size_cue": args.size_cue, "split": args.split,
              "num_images": len(dataset), "shape": "regressed" if not network.identity_aware else args.shape,
              "solver": args.solver if detector is not None else None,
              **{k: float(v.double().mean()) for k, v in errors.items() if k.startswith("mp")}}
    if calibration is not None:
        truth = {int(dataset[i]["subject"]): dataset[i]["betas"] for i in range(len(dataset))}
        subjects = sorted(calibration["betas"])
        report["calibration"] = shape_errors(network.mano, torch.stack([calibration["betas"][s] for s in subjects]).double(),
                                             torch.stack([truth[s] for s in subjects]).double())
    if not network.identity_aware:
        true_betas = torch.stack([dataset[i]["betas"] for i in range(len(dataset))])
        report["shape_errors"] = shape_errors(network.mano, errors["betas"].double(), true_betas.double())
    rows = [f"{'':24s}{'MPJPE (mm)':>12s}{'MPVPE (mm)':>12s}", f"{'without optimisation':24s}{report['mpjpe']:12.2f}{report['mpvpe']:12.2f}"]
    if detector is not None:
        rows.append(f"{'with optimisation':24s}{report['mpjpe_opt']:12.2f}{report['mpvpe_opt']:12.2f}")
    for key in ("calibration", "shape_errors"):
        if key in report:
            e = report[key]
            rows.append(f"{key.replace('_', ' ')}: MSE of the betas {e['mse_betas']:.4f}, W-error {e['w_error_mm']:.2f} mm, "
                        f"L-error {e['l_error_mm']:.2f} mm")
    log(f"{report['model']} on {args.data} {args.split} ({len(dataset)} images, shape: {report['shape']}):\n" + "\n".join(rows))
    out = Path(args.out) if args.out is not None else path.parent
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"eval_mesh_{args.data}{'_size_cue' if args.size_cue else ''}_{args.split}.json"
    target.write_text(json.dumps(report, indent=1))
    log(f"wrote {target}")
    return 0


DEFAULT_FOCAL = 1.5  # focal length in crop sides for images without intrinsics (SyntheticHands' crops: 1.1-1.8)


def add_mesh_predict_arguments(r) -> None:
    g = r.add_argument_group("mesh networks (chapter 6)")
    g.add_argument("--shape", default=None, help="mesh-identity: the subject's shape JSON (from personalize)")
    g.add_argument("--detector", default=None,
                   help="a detector2d checkpoint: fit Eq. 6.4 and draw the mesh over the image (an assumed camera)")
    g.add_argument("--solver", default="adam", choices=("adam", "lm"))


def predict_mesh_files(network, args, device: str, log) -> list[dict]:
    """For each image: ``<stem>_mesh.obj`` (the MANO-frame mesh, metres), ``<stem>_mesh.json`` (shape, pose,
    3-D keypoints; with a detector also the fitted translation and the 2-D keypoints) and, with a detector,
    ``<stem>_overlay.png`` (the fitted mesh drawn over the crop). Images are taken as hand crops; their camera
    is assumed: focal length ``DEFAULT_FOCAL`` crop sides, principal point at the centre."""
    from handops_models.nets.mesh_inference import load_shape, refine_with_keypoints
    from handops_models.train.cli import CLIError
    from handops_models.train.predict import find_images, load_image, to_input
    from handops_models.viz import draw_mesh, save_png

    if network.identity_aware and args.shape is None:
        raise CLIError("a mesh-identity network takes the subject's shape: pass --shape FILE (from personalize)")
    if not network.identity_aware and args.shape is not None:
        raise CLIError("--shape applies to mesh-identity checkpoints (the baseline regresses the shape)")
    betas = load_shape(args.shape)[None].to(device) if args.shape else None
    detector = _load(args.detector, "detector2d", device)[0] if args.detector else None
    size = network.input_size
    K = torch.tensor([[DEFAULT_FOCAL * size, 0, (size - 1) / 2], [0, DEFAULT_FOCAL * size, (size - 1) / 2], [0, 0, 1.0]])
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = network.faces.cpu()
    records = []
    for path in find_images(args.inputs):
        image = to_input(load_image(path), size)
        x = image[None].to(device)
        record = {"image": str(path), "model": getattr(network, "model_name", None), "checkpoint": str(args.checkpoint)}
        if detector is not None:
            out = refine_with_keypoints(network, x, K[None].to(device), detector, betas, solver=args.solver)
            record.update(transl=out["transl"][0].tolist(), keypoints2d=out["detected_keypoints2d"][0].tolist(),
                          camera_K=K.tolist(), reprojection_error_px=float(out["reprojection_error"][0]))
        else:
            out = network.predict(x, betas)
        vertices = out["vertices"][0].cpu()
        record.update(betas=out["betas"][0].tolist(), pose=out["pose"][0].tolist(),
                      keypoints3d=out["keypoints3d"][0].tolist())
        stem = path.stem
        obj = out_dir / f"{stem}_mesh.obj"
        obj.write_text("".join(f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in vertices.tolist())
                       + "".join(f"f {i + 1} {j + 1} {k + 1}\n" for i, j, k in faces.tolist()))
        (out_dir / f"{stem}_mesh.json").write_text(json.dumps(record, indent=1))
        written = [obj.name, f"{stem}_mesh.json"]
        if detector is not None:
            camera = vertices + out["transl"][0].cpu()
            png = out_dir / f"{stem}_overlay.png"
            save_png(draw_mesh(image, camera, faces, K, scale=2), png)
            written.append(png.name)
        records.append(record)
        log(f"{path}: {', '.join(written)}")
    return records
