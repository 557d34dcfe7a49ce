"""AutoS: a network that scores each weight from its features at initialisation.

pretrained(name): a scorer shipped with the package (pretrained/NAME/, each with a
MODEL_CARD.md); load_scorer(dir): any scorer_dir an autos_train job wrote.
"""
import os

from autosparse_jax.autos.apply import TrainedScorer, load_scorer
from autosparse_jax.autos.scorer import BACKBONES, IMAGE_SHAPES, AutoSScorer, make_scorer
from autosparse_jax.errors import unknown_name_message

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")


def pretrained_names():
  """Names of the scorers shipped in the package."""
  if not os.path.isdir(PRETRAINED_DIR):
    return ()
  return tuple(sorted(n for n in os.listdir(PRETRAINED_DIR)
                      if os.path.exists(os.path.join(PRETRAINED_DIR, n, "scorer.json"))))


def pretrained(name):
  """The shipped scorer `name` (a TrainedScorer); a wrong name lists the available ones."""
  names = pretrained_names()
  if name not in names:
    raise ValueError(unknown_name_message("asj.autos.pretrained(name)", name, names))
  return load_scorer(os.path.join(PRETRAINED_DIR, name))


__all__ = ["AutoSScorer", "BACKBONES", "IMAGE_SHAPES", "TrainedScorer", "load_scorer", "make_scorer",
           "pretrained", "pretrained_names"]
