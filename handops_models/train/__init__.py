"""Training: recipes (each network's thesis schedule as data), one loop, checkpoints, data for training."""

from handops_models.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from handops_models.train.loop import Settings, evaluate_model, run_recipe
from handops_models.train.recipes import RECIPES, Stage, recipe_for, scaled

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint", "Settings", "evaluate_model", "run_recipe", "RECIPES",
           "Stage", "recipe_for", "scaled"]
