"""linalg_lowrank: numerical linear algebra for people who study and build neural-network optimizers."""

from .results import ConvergenceWarning, DegenerateSingularValueWarning, PowerIterationResult
from .spectral import best_rank1, power_iteration, spectral_norm, spectral_norm_grad, spectral_weight_decay

__version__ = "0.1.0.dev0"

__all__ = [
    "ConvergenceWarning",
    "DegenerateSingularValueWarning",
    "PowerIterationResult",
    "best_rank1",
    "power_iteration",
    "spectral_norm",
    "spectral_norm_grad",
    "spectral_weight_decay",
]
