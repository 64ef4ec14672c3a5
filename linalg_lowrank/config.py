"""Library-wide thresholds and defaults, in one place (not as literals scattered inline)."""

import numpy as np

# --- power iteration, Lanczos and the spectral norm (spectral.py, _topsv.py, _operators.py)
#: Default relative residual tolerance of the top singular triplet.
POWER_TOL = 1e-10
#: Floor of the maximum number of Gram products when ``maxiter`` is not given.
POWER_MAXITER_FLOOR = 1000
#: ``method="auto"`` keeps plain power iteration only if it predicts at most this many more steps.
AUTO_MAX_POWER_STEPS = 12
#: Largest Krylov basis kept by the Lanczos solver before a thick restart.
LANCZOS_MAX_BASIS = 96
#: Ritz vectors kept across a thick restart.
LANCZOS_KEEP = 24
#: Lanczos steps between the first convergence checks (the small eigensolve is not free);
#: later checks are scheduled from the observed rate, at most LANCZOS_MAX_CHECK_GAP apart.
LANCZOS_CHECK_EVERY = 4
LANCZOS_MAX_CHECK_GAP = 16
#: History entries kept per problem: a single matrix, and each matrix of a stack.
HISTORY_CAP = 1024
HISTORY_CAP_STACK = 512
#: Default ``rtol`` of `spectral_norm`: the estimated relative error of the returned sigma1.
#: 1e-10 sits three orders above the rounding of a float64 Rayleigh quotient (~ n eps); the stop is
#: the residual bound r / theta <= 2 rtol until the Krylov resolution rules out a hidden pair.
SPECTRAL_NORM_RTOL = 1e-10
#: After d Lanczos products an eigenvalue within (KRYLOV_RESOLUTION / d)^2, relative, of lambda1 may
#: hide in the top Ritz vector (Chebyshev): the value stop of `spectral_norm` uses Kato-Temple only once
#: that floor is below rtol (see _krylov._value_error and docs/theory/spectral.rst).
KRYLOV_RESOLUTION = 1.0
#: Failure probability of the probabilistic upper bound on sigma1.
UPPER_BOUND_FAILURE_PROB = 1e-6
#: Below this many entries the one-pass kernel runs on one thread (thread start-up dominates).
PARALLEL_MIN_ENTRIES = 1 << 18
#: A single dense matrix below this many entries is solved with its products on the calling thread;
#: at or above it on numba's pool. A solve synchronizes the pool once per product (tens of times),
#: and every synchronization waits for a thread that may be off its core (the other half of a
#: 2-core machine is often busy: BLAS workers spinning after a numpy call, other processes), so
#: the pool pays only on larger matrices (measurements and the trade-off in ``_threads``).
PARALLEL_SOLVE_MIN_ENTRIES = 1 << 20
#: Matrices with at most this many entries are solved whole by one numba thread each (in cache).
SMALL_MATRIX_ENTRIES = 1 << 18
#: A single dense matrix with at most this many entries is solved entirely inside numba (above it,
#: a product costs so much more than the Python between iterations that the driver is numpy).
NUMBA_SOLVE_MAX_ENTRIES = 1 << 25
#: The Gram products square the scale of A (and residual sums of squares raise it to the fourth
#: power), so they stay in the float64 range only for ordinary scales. A solve runs unscaled if
#: max|A x| of its first product lies within 2^-SCALE_SAFE_LOG2 ... 2^SCALE_SAFE_LOG2 (then even
#: sigma1^4 of a matrix 2^40 times larger stays far inside the range); otherwise, or when a
#: product overflows, it starts again on 2^-e A with 2^e about max|A| (exact: a power of two).
SCALE_SAFE_LOG2 = 140
#: The factor 2^-e is split into 2^-e1 applied to the vector before a product and 2^-(e - e1)
#: applied to the dot products, |e1| <= SCALE_SPLIT_LOG2, so neither leaves the normal range.
SCALE_SPLIT_LOG2 = 960
#: Operators have no max|A|: their scale is probed by ||A (2^-k x)|| for these k, in order,
#: until a product is finite and normal.
SCALE_PROBE_LOG2 = (0, 256, -256, 512, -512, 768, -768, 960, -960)
#: A vector norm computed as sqrt(sum x_i^2) inside this range had no square under- or overflow
#: that matters; outside it the vector is first scaled by a power of two.
UNIT_ROWS_SAFE_NORMS = (2.0**-500, 2.0**500)

# --- roots and Kronecker factors (roots.py, kronecker.py)
#: Eigenvalues below -PSD_NEG_ROUNDOFF * n * eps * ||A||_2 prove that A is not positive
#: semidefinite; above it a negative eigenvalue may be rounding of a semidefinite A.
PSD_NEG_ROUNDOFF = 10.0
#: With no ridge, A + ridge I counts as singular when its smallest eigenvalue is at most
#: PSD_SINGULAR_ROUNDOFF * n * eps * ||A||_2 (eps of the dtype A came in): its inverse roots would
#: then be rounding amplified by at least 1 / (n eps).
PSD_SINGULAR_ROUNDOFF = 1.0
#: The one symmetry rule (`_operators.symmetry_tolerance`): a square A counts as symmetric when
#: ||A - A^T|| <= SYM_ROUNDOFF * n * eps(dtype of A) * ||A||, in the norm its one-pass check computes
#: (largest entry for the trace/diagonal estimators and sparse input, Frobenius in the roots family);
#: a Gram matrix G G^T formed by BLAS is symmetric only up to its rounding.
SYM_ROUNDOFF = 100.0
#: Default relative ridge of `shampoo_precondition` (epsilon * lambda_max(L) added to L).
SHAMPOO_RIDGE = 1e-6
#: Largest denominator of a fractional p accepted by the coupled Newton path (p = a / b).
ROOTS_NEWTON_MAX_DENOMINATOR = 64
#: Default cap on coupled Newton iterations; kappa = 1e12 needs about 40.
ROOTS_NEWTON_MAXITER = 100
#: ||M_k - I||_F below which coupled Newton is in its quadratic phase (stagnation is checked).
ROOTS_NEWTON_TERMINAL = 1e-4
#: Random probe vectors of the a-posteriori eigendecomposition residual of the eigh path.
ROOTS_RESIDUAL_PROBES = 4
#: Below this many blocks a stack is decomposed with numpy's gufunc loop, not the numba kernel.
ROOTS_STACK_PARALLEL_MIN_BLOCKS = 4
#: Relative residual tolerance of the power iteration behind the rank-1 nearest Kronecker product.
NKP_TOL = 1e-12

# --- optimizer dynamics (dynamics.py)
#: Coordinates per parallel work item of the simulator (results do not depend on it, only the
#: rounding of the RMS sums does, and only through this fixed value: never on the thread count).
SIM_CHUNK = 256
#: Records the simulator keeps when ``record_every`` is not given.
SIM_RECORDS = 1000
#: Lags of the sign autocovariance are summed until beta1^d drops below this.
DYNAMICS_LAG_TOL = 1e-17
#: Cap on the number of summed lags (beta1 > 0.9998); a geometric tail accounts for the rest.
DYNAMICS_MAX_LAGS = 200_000
#: Gauss–Legendre nodes of the bivariate-normal orthant integral (the integrand is smooth).
DYNAMICS_QUAD_NODES = 24

# --- low-rank approximation (lowrank.py)
#: Gaussian probe vectors of the a-posteriori error estimates (randomized SVD, ID).
LOWRANK_N_PROBES = 20
#: Failure probability of ``error_bound`` (chi-square lower quantile of the probe estimate).
LOWRANK_ERROR_BOUND_FAILURE = 1e-3
#: ``n_power_iter="auto"``: stop once a power step lowers the rank-r error by less than this.
LOWRANK_AUTO_POWER_RTOL = 5e-3
#: ``n_power_iter="auto"``: most power steps taken.
LOWRANK_AUTO_POWER_MAX = 8
#: Fixed rank: the part of ||A||_F^2 the sketch missed is taken as ||A||_F^2 - ||Q^T A||_F^2 (exact,
#: no probe product) when it is at least this many times its rounding allowance
#: ((l + 2 sqrt(l)) max(M, N) eps + 2^18 eps64) ||A||_F^2; the probes estimate it otherwise.
LOWRANK_EXACT_RESIDUAL_MARGIN = 100.0
#: Power steps per block of the adaptive (``tol``) range finder when ``n_power_iter="auto"``.
LOWRANK_ADAPTIVE_POWER_ITER = 2
#: Columns added per block by the adaptive range finder (at least; grows with the rank).
LOWRANK_ADAPTIVE_BLOCK = 16
#: A product A w (||w|| = 1) is taken as exact to LOWRANK_ROUNDING_FACTOR * sqrt(max(M, N)) * eps
#: * ||A||_F (the probabilistic rounding of a length-N dot product is about sqrt(N) eps, with a
#: margin for the projections): directions of the adaptive range finder below it are rounding,
#: and its probe estimate of the error is resolved only to about that size.
LOWRANK_ROUNDING_FACTOR = 2.0
#: The ID/CUR sketch has this many rows per selected column: with one power step, pivoted QR on a
#: 2k-row sketch picks columns as well as pivoted QR on all of A (within 0.5% either way on 1/i,
#: 1/sqrt(i), exponential and Gaussian spectra; 1-2% worse on low rank plus noise).
ID_SKETCH_FACTOR = 2
#: A float64 matrix is sketched in float32 (half the cost) when the k-th pivot of the sketch is at
#: least this fraction of the first: the float32 rounding (~1e-6 relative) then cannot change
#: which column a pivot picks. Below it the sketch is redone in float64.
ID_FLOAT32_PIVOT_MARGIN = 1e-3
#: Relative cut-offs eps^x (x listed; None = no cut-off) tried for the singular values of C and R in
#: the CUR core; the core with the smallest measured ||A - C U R||_F is kept. Keeping every direction
#: leaves rounding of size eps * cond(C) cond(R) in U; dropping those below eps^(1/2) bounds both.
CUR_CORE_CUTOFF_EXPONENTS = (None, 0.75, 0.5)

# --- polar factor (polar.py)
#: Safety factor of Polar Express (Amsel et al. 2025): each tabulated polynomial is evaluated at
#: x / 1.01 so that rounding cannot push a singular value past the interval it was designed for;
#: the limit quintic used beyond the table is not rescaled.
POLAR_EXPRESS_SAFETY = 1.01
#: Input scaling of `msign`: X0 = A / (MSIGN_NORM_SAFETY * ||A||), ||A|| >= sigma_1 the Schatten-4
#: (or Frobenius) norm, so every singular value is below 1 / 1.01; the margin guards against the
#: rounding of the computed norm.
MSIGN_NORM_SAFETY = 1.01

# --- diagonal and trace estimation (hutchinson.py)
#: Products used when ``n_matvecs`` is not given.
HUTCH_DEFAULT_N_MATVECS = 100
#: Directions of a sketch whose singular value is below this times the largest are treated as
#: zero: the matrix has (numerically) lower rank than the sketch, which then captures it exactly.
HUTCH_SKETCH_RANK_RTOL = 1e-10
#: Unit vectors per product block when a budget of n_matvecs >= n buys the exact diagonal or trace.
HUTCH_EXACT_BLOCK = 256
#: Probes drawn per step of adaptive stopping (``rtol``).
HUTCH_ADAPTIVE_BLOCK = 8
#: ``"auto"`` deflates only if the predicted variance of the sketched estimate, times this
#: margin, is below that of plain Hutchinson with the whole budget.
HUTCH_AUTO_MARGIN = 2.0
#: The z-value of the confidence bound used by adaptive stopping (about 95% two-sided).
HUTCH_CONFIDENCE_Z = 2.0
#: Relative step of the central differences in `hessian_operator`: eps^(1/3) balances the
#: O(h^2) truncation error against the O(eps / h) rounding error.
HESSIAN_EPS = float(np.finfo(np.float64).eps) ** (1.0 / 3.0)
#: Cholesky QR (two passes) replaces the SVD of a sketch only when the sketch's condition number
#: is below this: then both passes are accurate to rounding and no direction is dropped.
HUTCH_CHOLQR_MAX_COND = 1e6
#: The standard errors of XTrace / XDiag need the leave-one-out estimates with a second probe
#: deleted; their closed forms are used while no two dual directions are nearly parallel (1 / sin^2
#: of the angle below this); rounding then stays below this times eps. Beyond it, they fall back
#: to one QR per deleted probe.
HUTCH_STDERR_MAX_AMPLIFICATION = 1e6
#: Entries per row block of the XDiag standard error: its n x k temporaries then stay in cache
#: (measured at n = 4000, k = 100: 12 ms in blocks of 256 to 512 rows, 19 ms unblocked).
HUTCH_STDERR_BLOCK_ENTRIES = 1 << 15
#: Tile edge of the one-pass symmetry check of a dense matrix: a tile and its mirror stay in cache.
HUTCH_SYMMETRY_TILE = 128
#: Below this many entries the numba kernels are not used: whole-array numpy is as fast there,
#: and a first call then does not pay numba's start-up (about 0.25 s per process, cache warm).
HUTCH_NUMBA_MIN_ENTRIES = 1 << 16

# --- dask arrays (_dask.py)
#: ``persist="auto"`` keeps a dask array in the scheduler's memory between products when it takes
#: at most this fraction of the memory available (the workers' limits, or this machine's RAM).
DASK_PERSIST_FRACTION = 0.5
#: Products over persisted blocks run where the blocks live. When one worker thread would multiply
#: more than this many times its fair share (the blocks gathered on few workers, as after a
#: ``compute()``), the blocks are spread in equal contiguous runs over every worker thread first:
#: one copy of a part of A, against every product at the speed of the few (measured on a 2-process
#: LocalCluster, 16384^2 float32 with every block on one worker: 101 ms a product, 62 ms spread).
DASK_BALANCE_FACTOR = 1.5
#: A C-ordered ``numpy.memmap`` larger than this fraction of the memory is read in row blocks of
#: OUT_OF_CORE_BLOCK_BYTES through the dask path (peak memory: the blocks in flight, about two
#: per scheduler thread) instead of being mapped whole (file pages would fill the memory).
OUT_OF_CORE_FRACTION = 0.25
OUT_OF_CORE_BLOCK_BYTES = 64 << 20
#: ``method="auto"`` of power_iteration / spectral_norm reads such a file by block Lanczos only when
#: the page cache cannot hold it either: larger than this fraction of the memory available to the
#: cache (Linux MemAvailable). Then every pass reads the disk, and a block pass (about 32 times the
#: arithmetic of a single-vector pass, hidden under the read) saves passes. A file the cache holds
#: is read from memory after the first pass, where a single-vector pass costs several times less
#: (8 GiB float32 file, 2-core VM with 23 GB of RAM: 1.0 s a single-vector pass, 4.4 s a block
#: pass, 1.3 s a cached sequential read, 6.3 s a cold one; bench/results/dask_ooc_audit_full.json).
BLOCK_KRYLOV_PAGE_CACHE_FRACTION = 0.5

# --- quasi-Newton and curvature operators (curvature.py)
#: A pair (s, y) enters L-BFGS (and a dense BFGS or DFP update) only if s^T y > tol ||s|| ||y||: its
#: cosine must be clearly above the rounding of a dot product, or rho = 1 / s^T y is noise and H_k
#: loses positive definiteness.
#: Given for float64; float32 uses it times sqrt(eps32 / eps64) (about 2.3e-4).
LBFGS_CURVATURE_RTOL = 1e-8
#: SR1 updates only when |s^T (y - B s)| >= r ||s|| ||y - B s|| (Nocedal & Wright, eq. 6.26, r = 1e-8):
#: a smaller denominator makes the rank-1 correction arbitrarily large. Given for float64; float32
#: uses it times sqrt(eps32 / eps64) (about 2.3e-4), as LBFGS_CURVATURE_RTOL.
SR1_SKIP_RTOL = 1e-8
#: Powell's damping (Nocedal & Wright, Procedure 18.2): y is replaced by theta y + (1 - theta) B s
#: when s^T y < BFGS_DAMPING * s^T B s, with theta chosen so that s^T r = BFGS_DAMPING * s^T B s.
BFGS_DAMPING = 0.2
#: Rows of `probs` given to `fisher_operator` must sum to 1 within this many C * eps(dtype) (softmax
#: output rounded in its dtype); entries within this many eps of [0, 1] are accepted.
FISHER_PROBS_ROUNDOFF = 10.0

# --- LoRA initialization (lora.py)
#: gamma of LoRA-GA's scale-stable initialization, c = M^(1/4) / sqrt(gamma) (Wang et al. 2024 use 16).
LORA_GA_STABLE_GAMMA = 16.0
#: ``method="auto"`` of `lora_ga_init` takes the full SVD up to this min(M, N): below it a LAPACK SVD
#: costs little more than the randomized sketch and is exact.
LORA_GA_EXACT_MAX_DIM = 256

# --- reference optimizer steps (optim.py)
#: Relative residual to which AdamW's spectral decay computes its first top singular vector;
#: every later step refines the warm start by one power step, so more accuracy is wasted (and a
#: near-tie sigma1 ~ sigma2 of a freshly initialized layer would need thousands of steps).
OPTIM_SPECTRAL_V1_TOL = 1e-6

# --- checkpoint readers of the audit (_readers.py, _torch_reader.py)
#: Default cap, in bytes, on one tensor (or zip member) the audit reads into memory: larger ones
#: are refused (``--max-bytes`` / ``max_bytes`` change it); the memory available when a file is
#: opened lowers it further. It also bounds what one compressed member may decompress to, so a
#: zip bomb costs at most this much memory.
AUDIT_MAX_BYTES = 16 << 30
#: Largest safetensors JSON header accepted (the reference implementation's limit).
AUDIT_SAFETENSORS_MAX_HEADER = 100_000_000
#: Deepest nesting of ``[`` / ``{`` accepted in a safetensors JSON header (the format needs 3).
AUDIT_JSON_MAX_DEPTH = 32
#: Longest integer literal accepted in a safetensors JSON header (2**64 has 20 digits).
AUDIT_JSON_MAX_INT_DIGITS = 20
#: Largest pickle (``data.pkl``) of a PyTorch checkpoint read; large models need a few MB.
AUDIT_MAX_PICKLE_BYTES = 256 << 20
#: Deepest nesting of dicts / lists / tuples walked in a PyTorch checkpoint's pickle.
AUDIT_MAX_NESTING = 64
#: Most containers and values walked in a PyTorch checkpoint's pickle.
AUDIT_MAX_OBJECTS = 10_000_000

#: top_singular_values: default relative tolerance on each singular value's residual bound, by dtype.
SPECTRUM_TOL = {"float32": 1e-4, "float64": 1e-8}
#: Residuals of Ritz values below this fraction of sigma1^2 are measured against sigma1^2 instead of their
#: own value (rank-deficient matrices: a zero singular value has no relative accuracy to reach).
SPECTRUM_RESIDUAL_FLOOR = 1e-6
#: Fewest tail eigenvalues in a power-law fit (the Clauset-Shalizi-Newman xmin scan stops before fewer remain).
SPECTRUM_ALPHA_MIN_TAIL = 5
#: A Lanczos vector shorter than this many ulps of ||T|| times sqrt(q) is rounding noise: the Krylov space is
#: invariant (top_singular_values then continues from a fresh random direction).
SPECTRUM_BREAKDOWN_ULPS = 64

#: top_singular_values, block Lanczos (``_block_krylov``): columns per block, k plus the larger of
#: BLOCK_OVERSAMPLE_MIN and (BLOCK_OVERSAMPLE_FACTOR - 1) k: the Ritz values converge at a rate set by
#: sigma_k / sigma_(b+1), so the oversampling buys the gap that a flat spectrum lacks.
BLOCK_OVERSAMPLE_MIN = 16
BLOCK_OVERSAMPLE_FACTOR = 1.5
#: Largest block Lanczos basis, in blocks, before a thick restart.
BLOCK_MAX_BASIS_BLOCKS = 6
#: The certificate takes N^T u_i from the Gram product N^T N V (one pass) unless s_i / s_1 is below
#: sqrt(BLOCK_RESIDUAL_ROUNDING sqrt(p) eps / tol): dividing by s_i would magnify the rounding of the
#: product beyond 1/BLOCK_RESIDUAL_ROUNDING of the tolerance; those columns get one more product.
BLOCK_RESIDUAL_ROUNDING = 100
#: Most block products between two Rayleigh-Ritz checks of block Lanczos (the schedule aims at half the
#: predicted distance to the tolerance; an eigensolve of the projected matrix costs O(basis^3)).
BLOCK_MAX_CHECK_GAP = 4
#: Block Lanczos stops when a check finds the largest residual (over its target) above this fraction of the
#: previous check's while every residual is at the products' rounding level (SPECTRUM_BREAKDOWN_ULPS sqrt(p)
#: eps sigma_1^2): the float64 certificate then reports what was reached.
BLOCK_STAGNATION = 0.9
#: top_singular_values(method="auto") on a dense matrix: the Gram method (G = N^T N by syrk, its top
#: eigenvectors by LAPACK) up to this small side, block Lanczos beyond (measured: the Gram method was
#: fastest on every dense shape up to 2048 on the small side, Gaussian and power-law spectra).
BLOCK_GRAM_MAX_DIM = 2048
#: Default cap on block products of block Lanczos in top_singular_values (a Gaussian 4096 x 2048 matrix,
#: the flattest top spectrum measured, took 53 at k = 8 in float64).
BLOCK_MAXITER = 300
#: The float64 certificate of a float32 matrix converts it this many bytes (of float64) at a time.
BLOCK_CONVERT_BYTES = 4 << 20
#: Fewest columns per block product for a matrix read from disk (see _block_krylov.out_of_core_block_size).
BLOCK_OUT_OF_CORE_MIN = 32
#: Certificate products of a file (`_block_krylov.RowBlocks.gram64`) with at most this many columns
#: run on one BLAS thread: matrix-vector products are memory-bound, and on a loaded 2-core machine
#: the pool made the one-column certificate of a 256 MiB file 2.5-14x slower (0.9-2.7 s vs 0.2-0.36 s).
BLOCK_GEMV_MAX_COLUMNS = 4
