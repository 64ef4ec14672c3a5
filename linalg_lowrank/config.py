"""Library-wide thresholds and defaults, in one place (not as literals scattered inline)."""

#: Default relative residual tolerance of the top singular triplet.
POWER_TOL = 1e-10
#: Floor of the maximum number of Gram products when ``maxiter`` is not given.
POWER_MAXITER_FLOOR = 1000
#: Steps of plain power iteration that ``method="auto"`` takes before it judges the rate.
AUTO_PILOT_STEPS = 6
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
#: Failure probability of the probabilistic upper bound on sigma1.
UPPER_BOUND_FAILURE_PROB = 1e-6
#: Steps of the fixed-count power iteration inside ``spectral_weight_decay``.
WEIGHT_DECAY_POWER_STEPS = 2
#: Below this many entries the one-pass kernel runs on one thread (thread start-up dominates).
PARALLEL_MIN_ENTRIES = 1 << 18
#: Matrices with at most this many entries are solved whole by one numba thread each (in cache).
SMALL_MATRIX_ENTRIES = 1 << 18
#: A single dense matrix with at most this many entries is solved entirely inside numba (above it,
#: a product costs so much more than the Python between iterations that the driver is numpy).
NUMBA_SOLVE_MAX_ENTRIES = 1 << 25
