"""The command line: ``python -m handops_models {train,evaluate,predict} ...`` (``main(argv)`` runs it in-process).

    python -m handops_models train --model agmn --config tiny --data synthetic --out runs/agmn
    python -m handops_models evaluate --checkpoint runs/agmn/final.pt --data synthetic --split test --compare runs/cpm/final.pt
    python -m handops_models predict --checkpoint runs/agmn/final.pt hand.png crops/ --out pred --decode map
    torchrun --nproc_per_node=2 -m handops_models train ...      (DistributedDataParallel; see train.distributed)

``train`` runs the network's whole thesis recipe (``train.recipes``), stage by stage, through ``run_recipe``
and writes into ``--out``:

    config.json            the model, its config (``config_to_dict``), the recipe, the settings and the data, at the start
    metrics.jsonl          one record per epoch (and per stop); curves.png, the loss and validation curves
    <stage>/best.pt        the stage's best weights on the validation split (mPCK); the next stage starts from them
    last.pt                everything ``--resume`` needs (written atomically every --checkpoint-every steps and epoch)
    clusters.pt            R-MGMN: the K-means centres of the training split's poses (reused on --resume)
    final.pt               the network the run ends with (the last stage's best weights when the recipe completed)

R-MGMN's classifier stage: K-means (``config.num_models`` clusters, the thesis' 20) on the rotation-normalised
neighbour offsets (``data.targets.fit_pose_clusters``) of the training split's keypoints only; the soft
classifier then trains on a seeded 70% of the training split's images and is validated (the loop's mPCK, which
picks the stage's best checkpoint) on the other 30%, as in the thesis (``--classifier-split``; 1 trains it on
the whole training split and validates on the validation split).

Errors a user can make (unknown model or data, missing --root, a config of another network, a checkpoint of
another model, ...) print one line ``error: ...`` on stderr and return exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

__all__ = ["main", "build_parser", "resolve_config", "CLIError"]

MODELS = ("cpm", "hourglass", "agmn", "rmgmn", "siapose", "rsiapose", "sharedgcn", "mesh-baseline", "mesh-identity",
          "detector2d")
TRAIN_TARGETS = MODELS + ("mesh-confidence",)  # mesh-confidence: the confidence stage alone on a trained mesh-baseline
SIAPOSE_MODELS = ("siapose", "rsiapose", "sharedgcn")


class CLIError(Exception):
    """A usage error: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------ parser


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text}")
    return value


def _data_arguments(p: argparse.ArgumentParser) -> None:
    from handops_models.train.data import DATA_SOURCES, SIZE_CUE_HELP

    p.add_argument("--data", required=True, choices=DATA_SOURCES, help="the data source")
    p.add_argument("--root", default=None, help="the dataset's folder (real data only)")
    p.add_argument("--cache-dir", default=None, help="synthetic: cache rendered images here (uint8 shards)")
    p.add_argument("--dexycb-setup", default="s0", choices=("s0", "s1", "s2", "s3"), help="DexYCB's split setup")
    p.add_argument("--mhp-protocol", default="ch5", choices=("ch3", "ch4", "ch5"), help="MHP's thesis split")
    p.add_argument("--num-subjects", type=_positive_int, default=50,
                   help="synthetic: subjects in all splits (80/10/10; each has its own hand shape)")
    p.add_argument("--size-cue", action="store_true", help=SIZE_CUE_HELP)


def build_parser() -> argparse.ArgumentParser:
    from handops_models.train.mesh_cli import add_mesh_evaluate_arguments, add_mesh_predict_arguments, add_personalize_parser
    from handops_models.train.predict import DECODERS

    parser = argparse.ArgumentParser(prog="python -m handops_models",
                                     description="Train, evaluate and run the thesis' 2-D hand pose networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,predict,personalize}")

    t = sub.add_parser("train", help="run a network's thesis recipe, stage by stage",
                       description="Run a network's thesis training recipe stage by stage (handops_models.train.recipes).")
    t.add_argument("--model", required=True, choices=TRAIN_TARGETS)
    t.add_argument("--init", default=None, help="mesh-confidence: the trained mesh-baseline checkpoint to start from")
    t.add_argument("--config", default="tiny", help="'tiny', 'paper' or a JSON file of nets.configs.config_to_dict")
    _data_arguments(t)
    t.add_argument("--out", required=True, help="the run's folder")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    t.add_argument("--max-steps", type=_positive_int, default=None, help="stop after this many optimizer steps")
    t.add_argument("--heads", type=_positive_int, default=None, help="SIA-GCN heads (siapose, rsiapose, sharedgcn)")
    t.add_argument("--epochs-scale", type=_positive_float, default=1.0,
                   help="multiply every stage's epochs (at least 1 each)")
    t.add_argument("--total-epochs", type=_positive_int, default=None,
                   help="train this many epochs in all, shared among the stages in the thesis' proportions (at least 1 "
                        "each; instead of --epochs-scale)")
    t.add_argument("--lr-scale", type=_positive_float, default=1.0, help="multiply every stage's learning rate")
    t.add_argument("--batch-size", type=_positive_int, default=32)
    t.add_argument("--workers", type=_non_negative_int, default=0, help="DataLoader worker processes reading training batches ahead (and the evaluation passes)")
    t.add_argument("--seed", type=int, default=0, help="weights and data order (the data splits do not change)")
    t.add_argument("--train-size", type=_positive_int, default=None, help="training images (synthetic: rendered)")
    t.add_argument("--val-size", type=_positive_int, default=None, help="validation images")
    t.add_argument("--val-limit", type=_positive_int, default=None, help="validate on the first N images only")
    t.add_argument("--checkpoint-every", type=_non_negative_int, default=200, help="steps between last.pt writes")
    t.add_argument("--classifier-split", type=_fraction, default=0.7,
                   help="R-MGMN: the share of the training split the classifier trains on (the rest validates it)")
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    t.add_argument("--no-progress", action="store_true", help="no tqdm bars (the per-epoch lines stay)")

    e = sub.add_parser("evaluate", help="PCK / AUC / EPE of checkpoints on a split",
                       description="PCK at the thesis' thresholds (the layout of Table 4.1), AUC and EPE; a JSON and a "
                                   "PCK-curve PNG.")
    e.add_argument("--checkpoint", required=True, help="a checkpoint file or a run folder (its final.pt)")
    e.add_argument("--compare", nargs="+", default=[], metavar="FILE", help="more checkpoints for the same table/plot")
    e.add_argument("--labels", nargs="+", default=None, help="row names, one per checkpoint (--checkpoint first)")
    e.add_argument("--model", choices=MODELS, default=None, help="refuse checkpoints of another network")
    _data_arguments(e)
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--size", type=_positive_int, default=None, help="images of the split (synthetic: rendered)")
    e.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    e.add_argument("--batch-size", type=_positive_int, default=32)
    e.add_argument("--workers", type=_non_negative_int, default=0)
    e.add_argument("--device", default=None)
    add_mesh_evaluate_arguments(e, _positive_int)

    r = sub.add_parser("predict", help="keypoints of image files (JSON + overlay PNG each)",
                       description="Keypoints of images taken as already-cropped hands (handops_models.train.predict).")
    r.add_argument("--checkpoint", required=True, help="a checkpoint file or a run folder (its final.pt)")
    r.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    r.add_argument("--out", required=True)
    r.add_argument("--decode", default="argmax", choices=DECODERS,
                   help="argmax per keypoint, or map: handops.tree_map's joint configuration (agmn, rmgmn)")
    r.add_argument("--model", choices=MODELS, default=None, help="refuse checkpoints of another network")
    r.add_argument("--device", default=None)
    add_mesh_predict_arguments(r)
    add_personalize_parser(sub, _data_arguments, _positive_int)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed the usage error (or --help)
        return int(e.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "personalize": cmd_personalize}
    from handops_models.data.formats._common import FormatError
    from handops_models.train.checkpoint import CheckpointError

    try:
        return commands[args.command](args)
    except (CLIError, CheckpointError, FormatError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except ValueError as e:  # the library's argument checks (sizes, configs, splits, ...)
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2


def _log(message: str) -> None:
    print(message, flush=True)


def _device(name: str | None) -> str:
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available here")
    return name


def _data_options(args) -> dict:
    return {"cache_dir": args.cache_dir, "dexycb_setup": args.dexycb_setup, "mhp_protocol": args.mhp_protocol,
            "num_subjects": args.num_subjects, "size_cue": args.size_cue}


# ------------------------------------------------------------------------------------------------ train


def resolve_config(model: str, config: str, heads: int | None = None):
    """The network config of ``--config`` (a preset name or a JSON file of ``config_to_dict``) and ``--heads``."""
    from handops_models.nets.configs import CONFIG_TYPES, PRESETS, config_from_dict, preset

    if config in PRESETS:
        cfg = preset(model, config)
    else:
        path = Path(config)
        if not path.is_file():
            raise CLIError(f"--config {config!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a file")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CLIError(f"--config {path}: not valid JSON ({e})") from e
        try:
            cfg = config_from_dict(data)
        except (ValueError, TypeError) as e:
            raise CLIError(f"--config {path}: {e}") from e
        if not isinstance(cfg, CONFIG_TYPES[model]):
            raise CLIError(f"--config {path} holds a {type(cfg).__name__}, but --model {model} takes a "
                           f"{CONFIG_TYPES[model].__name__}")
    if heads is not None:
        if model not in SIAPOSE_MODELS:
            raise CLIError(f"--heads sets SIA-GCN heads: it applies to {', '.join(SIAPOSE_MODELS)}, not {model}")
        cfg = dataclasses.replace(cfg, heads=heads)
    return cfg


def _plain(value):
    return json.loads(json.dumps(value))


def _recipe_record(recipe) -> list[dict]:
    return _plain([dataclasses.asdict(s) for s in recipe])


def _with_added_fields(stored: dict) -> dict:
    """A config.json written before the recipe's per-stage ``batch_size`` / ``selection``, the data's
    ``num_subjects`` / ``size_cue`` or a config's ADDED_FIELDS existed, with the values that reproduce such a run."""
    from handops_models.nets.configs import config_from_dict, config_to_dict
    from handops_models.train.recipes import Stage

    out = dict(stored)
    defaults = {f.name: f.default for f in dataclasses.fields(Stage) if f.default is not dataclasses.MISSING}
    if isinstance(out.get("recipe"), list):
        out["recipe"] = [{**defaults, **stage} if isinstance(stage, dict) else stage for stage in out["recipe"]]
    if isinstance(out.get("data"), dict):
        # SyntheticHands' subjects were 50 before the option, and no run had the size cue
        out["data"] = {"num_subjects": 50, "size_cue": False, **out["data"]}
    out.setdefault("init_sha256", None)  # runs from before the record: a mesh-confidence run must start anew
    try:  # rebuilt through config_from_dict, which fills ADDED_FIELDS at every level
        out["config"] = _plain(config_to_dict(config_from_dict(out.get("config"))))
    except (ValueError, TypeError):
        pass  # not a config: the comparison reports it
    return out


def _file_digest(path: Path) -> str:
    """sha256 of a file's bytes (``--init``'s identity: a resumed mesh-confidence run must start from the same
    baseline, wherever the file now lies)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_resume(out: Path, record: dict, resume: bool) -> dict | None:
    """The stored config.json when resuming (it must describe the same model, config and recipe)."""
    stored_path = out / "config.json"
    if not resume:
        if (out / "last.pt").is_file():
            raise CLIError(f"{out} already holds a run (last.pt): pass --resume to continue it, or choose another --out")
        return None
    if not stored_path.is_file():
        return None
    stored = json.loads(stored_path.read_text())
    comparable = _with_added_fields(stored)
    for key, what in (("model", "model"), ("config", "config"), ("recipe", "recipe (--epochs-scale, --lr-scale)"),
                      ("data", "data"), ("init_sha256", "--init checkpoint (its sha256)")):
        if key == "init_sha256" and comparable.get(key) is None and record[key] is not None:
            raise CLIError(f"--resume: {stored_path} is a mesh-confidence run from before runs recorded their --init "
                           f"checkpoint, so this --init cannot be checked against the baseline it started from; "
                           f"start it anew in another --out")
        if comparable.get(key) != record[key]:
            raise CLIError(f"--resume: {stored_path} was written for another {what}: {stored.get(key)!r} there, "
                           f"{record[key]!r} now; resume with the run's own arguments")
    return stored


def _clusters(train, num_clusters: int, out: Path, seed: int, workers: int, is_main: bool) -> torch.Tensor:
    """R-MGMN's K-means centres on the training split (``out/clusters.pt``, computed once)."""
    from handops_models.data.targets import fit_pose_clusters
    from handops_models.train.data import split_keypoints

    path = out / "clusters.pt"
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        centres = stored["centres"]
        if centres.shape[0] != num_clusters or stored.get("num_images") != len(train):
            raise CLIError(f"{path}: {centres.shape[0]} clusters of {stored.get('num_images')} images, but this run has "
                           f"{num_clusters} clusters and {len(train)} training images; remove it or use another --out")
        return centres
    if len(train) < num_clusters:
        raise CLIError(f"R-MGMN's K-means needs at least num_models = {num_clusters} training images, the training "
                       f"split has {len(train)}")
    _log(f"R-MGMN: K-means ({num_clusters} clusters) on the rotation-normalised neighbour offsets of the "
         f"{len(train)} training images")
    clusters = fit_pose_clusters(split_keypoints(train, workers=workers), num_clusters=num_clusters, seed=seed)
    if is_main:
        from handops_models.train.checkpoint import atomic_write

        data = {"centres": clusters.centres, "inertia": float(clusters.inertia), "num_images": len(train)}
        atomic_write(path, lambda f: torch.save(data, f))
    return clusters.centres


def cmd_train(args) -> int:
    from handops_models.train import distributed as D

    ctx = D.setup(device=_device(args.device))
    try:
        return _train(args, ctx)
    finally:
        D.teardown()


def _train(args, ctx) -> int:
    import handops_models
    from handops_models.nets import build_model, count_parameters
    from handops_models.nets.configs import config_to_dict
    from handops_models.train import distributed as D
    from handops_models.train.checkpoint import atomic_write, save_checkpoint
    from handops_models.train.data import holdout_split, make_split
    from handops_models.train.loop import Settings, run_recipe
    from handops_models.train.recipes import recipe_for, scaled, with_total_epochs

    log = _log if ctx.is_main else (lambda message: None)
    if args.data != "synthetic" and args.root is None:
        raise CLIError(f"--data {args.data} reads a dataset you downloaded: pass its folder as --root DIR")
    if (args.init is not None) != (args.model == "mesh-confidence"):
        raise CLIError("--model mesh-confidence trains the confidence predictor of a trained mesh-baseline: pass that "
                       "checkpoint as --init FILE (and --init only with mesh-confidence)")
    seed = D.seed_everything(args.seed)
    if args.model == "mesh-confidence":  # the baseline's last recipe stage, on its trained weights
        from handops_models.train.checkpoint import load_checkpoint
        from handops_models.train.evaluate import resolve_checkpoint

        init_path = resolve_checkpoint(args.init)
        model = load_checkpoint(init_path, expect_model="mesh-baseline")["model"]
        init_digest = _file_digest(init_path)
        config = model.config
        recipe = recipe_for("mesh-baseline")[-1:]
    else:
        init_digest = None
        config = resolve_config(args.model, args.config, args.heads)
        try:
            model = build_model(args.model, config)
        except (TypeError, ValueError) as e:
            raise CLIError(f"--model {args.model} with --config {args.config}: {e}") from e
        recipe = recipe_for(args.model, getattr(config, "estimator", "cpm"))
    if args.total_epochs is not None:
        if args.epochs_scale != 1.0:
            raise CLIError("--total-epochs and --epochs-scale both set the epochs: pass one of them")
        try:
            recipe = with_total_epochs(recipe, args.total_epochs)
        except ValueError as e:
            raise CLIError(f"--total-epochs {args.total_epochs} for {args.model}: {e}") from None
    if args.epochs_scale != 1.0 or args.lr_scale != 1.0:
        recipe = scaled(recipe, args.epochs_scale, lr_factor=args.lr_scale)
    out = Path(args.out)
    options = _data_options(args)
    root = None if args.root is None else str(Path(args.root).resolve())
    data_record = {"name": args.data, "root": root, "input_size": model.input_size, "train_size": args.train_size,
                   "val_size": args.val_size, **{k: v for k, v in options.items() if k != "cache_dir"}}
    record = {"model": args.model, "config": _plain(config_to_dict(config)), "recipe": _recipe_record(recipe),
              "data": data_record, "init_sha256": init_digest}
    stored = _check_resume(out, record, args.resume)

    if ctx.distributed and not ctx.is_main:
        D.barrier()  # rank 0 renders the synthetic cache and fits R-MGMN's clusters first; the others read them
    train = make_split(args.data, args.root, model.input_size, "train", args.train_size, progress=ctx.is_main, **options)
    val = make_split(args.data, args.root, model.input_size, "val", args.val_size, progress=ctx.is_main, **options)
    needs_clusters = any(stage.needs_clusters for stage in recipe)
    centres = _clusters(train, config.num_models, out, args.seed, args.workers, ctx.is_main) if needs_clusters else None
    if ctx.distributed and ctx.is_main:
        D.barrier()
    settings = Settings(batch_size=args.batch_size, seed=args.seed, workers=args.workers, max_steps=args.max_steps,
                        checkpoint_every=args.checkpoint_every, val_limit=args.val_limit, device=ctx.device,
                        progress=not args.no_progress)
    classifier = None
    if needs_clusters:
        settings.cluster_centres = centres
        if args.classifier_split < 1.0:
            kept, held = holdout_split(np.arange(len(train)), 1.0 - args.classifier_split)
            stage = next(s for s in recipe if s.needs_clusters)
            settings.stage_data[stage.name] = (Subset(train, kept), Subset(train, held))
            classifier = {"stage": stage.name, "train_images": len(kept), "validation_images": len(held)}

    run_settings = {"batch_size": settings.batch_size, "seed": settings.seed, "rank_seed": seed,
                    "workers": settings.workers, "max_steps": settings.max_steps,
                    "checkpoint_every": settings.checkpoint_every, "val_limit": settings.val_limit,
                    "device": settings.device, "world_size": ctx.world_size, "epochs_scale": args.epochs_scale,
                    "total_epochs": args.total_epochs, "lr_scale": args.lr_scale,
                    "thresholds": list(settings.thresholds), "coarse_thresholds": list(settings.extra_thresholds),
                    "classifier_split": args.classifier_split if classifier else None}
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        if stored is None:
            content = {**record, "settings": run_settings, "classifier": classifier,
                       "data_sizes": {"train": len(train), "val": len(val)}, "parameters": count_parameters(model),
                       "handops_version": handops_models.__version__, "argv": args.argv, "started": now}
        else:
            content = dict(stored)
            content.setdefault("resumed", []).append({"settings": run_settings, "started": now, "argv": args.argv})
        text = json.dumps(content, indent=1).encode()
        atomic_write(out / "config.json", lambda f: f.write(text))

    stages = ", ".join(f"{s.name} {s.epochs} epoch{'s' if s.epochs != 1 else ''} (lr {s.lr:g})" for s in recipe)
    log(f"train {args.model} ({args.config} config, {count_parameters(model):,} parameters) on {args.data}: "
        f"{len(train)} training / {len(val)} validation images at {model.input_size}x{model.input_size}, "
        f"batch {args.batch_size}, device {settings.device}" + (f", {ctx.world_size} processes" if ctx.distributed else ""))
    log(f"recipe: {stages}")
    if classifier:
        log(f"classifier stage: trains on {classifier['train_images']} and is validated on "
            f"{classifier['validation_images']} images of the training split ({args.classifier_split:g} / rest)")
    log(f"writing to {out}: config.json, metrics.jsonl, curves.png, <stage>/best.pt, last.pt, final.pt")
    started = time.perf_counter()
    result = run_recipe(model, recipe, train, val, out, settings, resume=args.resume, log=log)
    complete = not result["stopped"]
    if ctx.is_main:
        last = result["history"][-1] if result["history"] else {}
        names = [s.name for s in recipe]
        stage = len(recipe) - 1 if complete else names.index(last.get("stage", names[0]))
        path = save_checkpoint(out / "final.pt", model, stage=stage, stage_name=names[stage],
                               epoch=int(last.get("epoch", 0)), step=last.get("step", 0),
                               extra={"complete": complete, "best": result["best"]})
        best = ", ".join(f"{k} {v:.4f}" for k, v in result["best"].items())
        steps = f"{args.max_steps} step{'s' if args.max_steps != 1 else ''}"
        log(f"{'done' if complete else f'stopped after {steps}'} in "
            f"{time.perf_counter() - started:.1f} s; best validation score per stage (mPCK, or minus MPVPE "
            f"in mm, or the stage's selection metric): {best or 'none'}; wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------------ evaluate


def cmd_evaluate(args) -> int:
    from handops_models.train.checkpoint import load_checkpoint
    from handops_models.train.evaluate import evaluate_checkpoints, resolve_checkpoint
    from handops_models.train.loop import Settings
    from handops_models.train.mesh_cli import MESH_MODELS, evaluate_mesh_checkpoint

    if args.data != "synthetic" and args.root is None:
        raise CLIError(f"--data {args.data} reads a dataset you downloaded: pass its folder as --root DIR")
    if load_checkpoint(resolve_checkpoint(args.checkpoint), build=False)["network"]["model"] in MESH_MODELS:
        return evaluate_mesh_checkpoint(args, _device(args.device), _log)
    paths = [args.checkpoint] + list(args.compare)
    out = args.out if args.out is not None else resolve_checkpoint(args.checkpoint).parent
    settings = Settings(batch_size=args.batch_size, workers=args.workers, device=_device(args.device), progress=False)
    evaluate_checkpoints(paths, args.data, args.root, args.split, out, settings=settings, size=args.size,
                         expect_model=args.model, labels=args.labels, data_options=_data_options(args), log=_log)
    return 0


def cmd_personalize(args) -> int:
    from handops_models.train.mesh_cli import cmd_personalize as personalize

    return personalize(args, _device(args.device), _log)


# ------------------------------------------------------------------------------------------------ predict


def cmd_predict(args) -> int:
    from handops_models.train.evaluate import load_network, resolve_checkpoint
    from handops_models.train.predict import check_map_decodable, predict_files

    from handops_models.train.mesh_cli import MESH_MODELS, predict_mesh_files

    device = _device(args.device)
    path = resolve_checkpoint(args.checkpoint)
    network, checkpoint = load_network(path, args.model, device)
    if checkpoint["network"]["model"] in MESH_MODELS:
        records = predict_mesh_files(network, args, device, _log)
        _log(f"{len(records)} image{'s' if len(records) != 1 else ''}: meshes in {args.out}")
        return 0
    if args.shape is not None or args.detector is not None:
        raise CLIError("--shape and --detector apply to the mesh networks (mesh-baseline, mesh-identity)")
    if args.decode == "map":
        check_map_decodable(network)
    records = predict_files(network, args.inputs, args.out, args.decode, device=device, checkpoint=str(path), log=_log)
    _log(f"{len(records)} image{'s' if len(records) != 1 else ''}: keypoints and overlays in {args.out}")
    return 0
