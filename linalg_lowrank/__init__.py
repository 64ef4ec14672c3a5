"""linalg_lowrank: numerical linear algebra for people who study and build neural-network optimizers."""

from . import lab, optim
from .curvature import (
    CurvatureConditionWarning,
    GaussNewtonOperator,
    LBFGSHessian,
    LBFGSInverseHessian,
    QuasiNewtonUpdate,
    bfgs_update,
    dfp_update,
    empirical_fisher_operator,
    fisher_operator,
    gauss_newton_operator,
    lbfgs_hessian,
    lbfgs_inverse_hessian,
    sr1_update,
)
from .dynamics import (
    WeightRMSSimulation,
    adam_update_rms,
    adamw_weight_rms,
    signsgdm_weight_rms,
    simulate_weight_rms,
)
from .hutchinson import (
    DiagonalEstimate,
    HutchinsonAccumulator,
    TraceEstimate,
    hessian_operator,
    hutchinson_diagonal,
    hutchinson_trace,
)
from .kronecker import KroneckerApproximation, kfac_solve, kron_matvec, nearest_kronecker_product
from .lora import LoraGAInit, lora_ga_init
from .lowrank import (
    BestRankResult,
    CRProductResult,
    CURResult,
    IDResult,
    LowRankFactors,
    RandomizedSVDResult,
    best_rank,
    cr_expected_error,
    cr_matmul,
    cur,
    interpolative_decomposition,
    pinv,
    pinv_lowrank,
    randomized_svd,
)
from .polar import MsignResult, msign, ns_polynomial, polar
from .results import ConvergenceWarning, DegenerateSingularValueWarning, PowerIterationResult, Result
from .roots import InverseRootResult, SymmetricEig, inverse_pth_root, shampoo_precondition, symmetric_eig
from .spectral import best_rank1, power_iteration, spectral_norm, spectral_norm_grad, spectral_weight_decay
from .spectrum import (
    SpectrumStatistics,
    TopSingularValuesResult,
    difference_norm,
    power_law_alpha,
    spectrum_statistics,
    top_singular_values,
)

__version__ = "0.1.0.dev0"

__all__ = [
    # spectral core
    "power_iteration",
    "spectral_norm",
    "spectral_norm_grad",
    "best_rank1",
    "spectral_weight_decay",
    "PowerIterationResult",
    "Result",
    "ConvergenceWarning",
    "DegenerateSingularValueWarning",
    # low-rank toolkit
    "best_rank",
    "randomized_svd",
    "pinv",
    "pinv_lowrank",
    "cr_matmul",
    "cr_expected_error",
    "interpolative_decomposition",
    "cur",
    "msign",
    "polar",
    "ns_polynomial",
    "BestRankResult",
    "RandomizedSVDResult",
    "LowRankFactors",
    "CRProductResult",
    "IDResult",
    "CURResult",
    "MsignResult",
    # stochastic diagonal and trace estimation
    "hutchinson_diagonal",
    "hutchinson_trace",
    "hessian_operator",
    "HutchinsonAccumulator",
    "DiagonalEstimate",
    "TraceEstimate",
    # Kronecker and Shampoo preconditioners
    "inverse_pth_root",
    "symmetric_eig",
    "shampoo_precondition",
    "kron_matvec",
    "kfac_solve",
    "nearest_kronecker_product",
    "InverseRootResult",
    "SymmetricEig",
    "KroneckerApproximation",
    # optimizer dynamics
    "adamw_weight_rms",
    "signsgdm_weight_rms",
    "adam_update_rms",
    "simulate_weight_rms",
    "WeightRMSSimulation",
    # quasi-Newton and curvature operators
    "lbfgs_inverse_hessian",
    "lbfgs_hessian",
    "LBFGSInverseHessian",
    "LBFGSHessian",
    "CurvatureConditionWarning",
    "bfgs_update",
    "dfp_update",
    "sr1_update",
    "QuasiNewtonUpdate",
    "gauss_newton_operator",
    "fisher_operator",
    "empirical_fisher_operator",
    "GaussNewtonOperator",
    # LoRA initialization
    "lora_ga_init",
    "LoraGAInit",
    # the top of the spectrum
    "top_singular_values",
    "spectrum_statistics",
    "power_law_alpha",
    "difference_norm",
    "TopSingularValuesResult",
    "SpectrumStatistics",
    # the optimizer lab (modules)
    "optim",
    "lab",
]
