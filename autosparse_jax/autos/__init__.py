"""AutoS: a network that scores each weight from its features at initialisation."""
from autosparse_jax.autos.scorer import BACKBONES, IMAGE_SHAPES, AutoSScorer, make_scorer

__all__ = ["AutoSScorer", "BACKBONES", "IMAGE_SHAPES", "make_scorer"]
