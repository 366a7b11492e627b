"""The project's params.yaml and its named variants, as tests read them."""

from pathlib import Path

from groklab import params as P

ROOT = Path(__file__).resolve().parents[1]
PARAMS = P.load_params(ROOT / "params.yaml")
AUGMENTATIONS = {name: P.augmentation(PARAMS, name) for name in PARAMS["augmentations"]}
CURRICULA = {name: P.curriculum(PARAMS, name) for name in PARAMS["curricula"]}
OPTIMIZERS = list(PARAMS["optimizers"])
