"""Losses: pure functions over embeddings, one per module. None of them touches files or models.

Each loss module registers its spec in :mod:`.registry` when imported; importing this package
imports them all, InfoNCE first, since the registration order is the order ``--loss`` lists them in.
Every other module of the package is imported too, so a new loss is one new file (docs/losses.md).
"""

import importlib
import pkgutil

# Not sorted: registration order is the order --loss lists the losses in, the default first.
# isort: off
from .infonce import info_nce
from .cosent import cosent
from .cosine import cosine_regression
from .angle import angle_loss, angle_objective_groups, angle_objective_pairs, pair_in_batch_negatives
# isort: on
from .distill import similarity_distillation
from .ese import ese_loss, pca_compress
from .matryoshka import matryoshka
from .registry import Groups, LossSpec, Pairs, register
from .topk import multi_topk, topk_mask

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Groups", "LossSpec", "Pairs", "angle_loss", "angle_objective_groups", "angle_objective_pairs", "cosent",
           "cosine_regression", "ese_loss", "info_nce", "matryoshka", "multi_topk", "pair_in_batch_negatives",
           "pca_compress", "register", "similarity_distillation", "topk_mask"]
