"""dask arrays behind the adapter: one pass over the row blocks of A per Gram product.

Imported only when a dask array arrives (``is_dask_array`` looks at the type's module, without
importing dask). Each product with the Gram operator B^T B (B = A, or A^T for a wide A) is one task
per row block, ``B_i^T (B_i x)`` by the numba one-pass kernel on that block, and the partial sums
reduce pairwise (a tree) inside the same graph: one ``dask.compute`` per product, whatever the
number of blocks, on whichever scheduler is active (threads by default, a ``dask.distributed``
client when one is set up). The solver stays on the client and only sees numpy vectors.
"""

import importlib.util
import math
import sys

import numba
import numpy as np

from . import _kernels, _operators, _threads, _validate, config


def is_dask_array(A):
    """True for a ``dask.array.Array`` (checked by type, so dask is not imported for other input)."""
    return type(A).__module__.split(".")[:2] == ["dask", "array"] and hasattr(A, "dask") and hasattr(A, "chunks")


def require_finite(name, A):
    """Raise the ValueError naming ``name`` if the dask array A holds NaN or Inf (one pass)."""
    import dask.array as da

    if not bool(da.isfinite(A).all().compute()):
        raise ValueError(f"`{name}` must be finite, its entries hold NaN or Inf")


def checked_product(name, A):
    """X -> A @ X as numpy; a product that is not finite is traced to NaN/Inf in A by name."""

    def product(X):
        with np.errstate(all="ignore"):
            out = np.asarray(A @ X)
        if not np.isfinite(out).all():
            require_finite(name, A)
        return out

    return product


def from_rows_of(A, M):
    """The numpy array M (rows matching A's) as a dask array whose rows are chunked like A's."""
    import dask.array as da

    return da.from_array(M, chunks=(A.chunks[0], -1))


def thin_svd(name, A):
    """(U, s, Vt) of a 2-D dask array by dask's tall-and-skinny QR SVD; U stays a dask array.

    The long side is chunked as A is and the short side is put in one chunk (the layout the TSQR
    needs); a wide A is decomposed through its transpose. s and Vt (short side) are computed.
    """
    import dask
    import dask.array as da

    _validate.float_dtype(name, A.dtype)
    if A.ndim != 2 or min(A.shape) == 0:
        raise ValueError(f"`{name}` must be a non-empty 2-D dask array, got shape {A.shape}")
    wide = A.shape[0] < A.shape[1]
    B = (A.T if wide else A).rechunk({1: -1})
    U, s, Vt = da.linalg.svd(B)
    try:
        with np.errstate(all="ignore"):  # NaN or Inf in A: named below
            s, Vt = dask.compute(s, Vt)
    except np.linalg.LinAlgError:
        s = None
    if s is None or not np.isfinite(s).all():
        require_finite(name, A)
        raise ValueError(f"`{name}`: the SVD failed although its entries are finite (overflow?); scale it down")
    if wide:  # A^T = U s Vt, so A = Vt^T s U^T: the distributed factor is on the right
        return Vt.T, s, U.T
    return U, s, Vt


def max_min_sumsq(A):
    """(max A, min A, ||A||_F^2 summed in float64) of a dask array, in one read of its blocks.

    One task per block (`_block_max_min_sumsq`); a NaN in A shows as NaN in the maximum or minimum.
    """
    import dask

    parts = np.array(dask.compute(*[dask.delayed(_block_max_min_sumsq)(b) for b in A.to_delayed().ravel()]))
    return float(np.max(parts[:, 0])), float(np.min(parts[:, 1])), math.fsum(parts[:, 2])


def _block_max_min_sumsq(block):
    """(max, min, float64 sum of squares) of one block, a chunk of 2 MB at a time.

    Each chunk is read from memory once and stays in cache for the three reductions (dask's
    ``max``, ``min`` and ``sum`` of the squares are three passes and a squared copy of the
    block); the squares are added as `_scaling.sum_of_squares` adds them.
    """
    from ._scaling import float64_chunks

    his, los, sums = [-math.inf], [math.inf], []
    with np.errstate(all="ignore"):
        for chunk in float64_chunks(np.asarray(block)):
            if chunk.size:
                his.append(chunk.max())
                los.append(chunk.min())
                sums.append(float(np.dot(chunk, chunk)))
    return float(np.max(his)), float(np.min(los)), math.fsum(sums)  # np.max: a NaN stays NaN


def _block_gram(block, x, ys, zs):
    """(y_i, z_i) = (ys B_i x, ys B_i^T (zs y_i)) for one row block, by the single-threaded one-pass kernel.

    ys and zs are the powers of two of `_operators.scale_factors` (1 for ordinary scales).
    """
    block = np.ascontiguousarray(block)
    y = np.empty(block.shape[0])
    z = np.empty(block.shape[1])
    _kernels.gram_matvec_serial(block, x, y, z, ys, zs)
    return y, z


def _add(a, b):
    # an overflow shows as inf in the sum, which the caller checks and rescales for; numpy's
    # warning would be raised in a scheduler thread, outside the caller's errstate
    with np.errstate(all="ignore"):
        return a + b


def _tree_sum(parts):
    """Pairwise sums of delayed arrays: depth log2(len(parts)), so no single task adds them all."""
    import dask

    add = dask.delayed(_add, pure=True)
    while len(parts) > 1:
        parts = [add(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def _memory_available():
    """Bytes of memory the active scheduler can hold: the workers' limits of a distributed client, else RAM."""
    try:
        from distributed import default_client

        info = default_client().scheduler_info()
        return sum(w.get("memory_limit", 0) or 0 for w in info["workers"].values())
    except (ImportError, ValueError):
        return _operators.physical_memory()


def _worker_gram(x, ys, zs, *blocks):
    """The Gram products of consecutive row blocks on one worker: ([y_i], sum_i z_i), one task per product.

    The blocks are summed in their order, so the partial sum depends only on the grouping.
    """
    zsum = None
    ys_out = []
    for block in blocks:
        y, z = _block_gram(block, x, ys, zs)
        ys_out.append(y)
        zsum = z if zsum is None else _add(zsum, z)
    return ys_out, zsum


def _client_of(collection):
    """The ``dask.distributed`` Client that computing ``collection`` would use now, or None."""
    if "distributed" not in sys.modules:  # no client can exist without distributed imported
        return None
    from dask.base import get_scheduler
    from distributed import Client

    owner = getattr(get_scheduler(collections=[collection]), "__self__", None)
    return owner if isinstance(owner, Client) else None


class _LocalBlocks:
    """Products over row blocks held in this process (persisted on a local scheduler).

    No graph and no task per block: with at least as many blocks as threads, each thread runs
    the single-threaded one-pass kernel over a run of consecutive blocks (``_worker_gram``, as a
    worker does); with fewer, the parallel kernel runs on each block in turn. Partial sums are
    added in a fixed order, so the answer does not depend on thread timing.
    """

    def __init__(self, blocks):
        self.blocks = [np.ascontiguousarray(b) for b in blocks]
        self.offsets = np.cumsum([0] + [b.shape[0] for b in self.blocks])
        self.n_threads = max(1, numba.get_num_threads())
        k, t = len(self.blocks), self.n_threads
        self.runs = [list(range((i * k) // t, ((i + 1) * k) // t)) for i in range(t)] if k >= t else None
        self.scratch = None if self.runs else np.empty((t, self.blocks[0].shape[1]))

    def __call__(self, x, ys, zs):
        y = np.empty(self.offsets[-1])
        if self.runs is None:
            z = np.zeros(x.shape[0])
            part = np.empty(x.shape[0])
            with np.errstate(all="ignore"):  # overflow shows as inf: the caller rescales
                for block, lo, hi in zip(self.blocks, self.offsets[:-1], self.offsets[1:], strict=True):
                    _kernels.gram_matvec(block, x, y[lo:hi], part, self.scratch, ys, zs)
                    z += part
            return y, z
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.runs)) as pool:  # the kernel releases the GIL
            results = list(pool.map(lambda run: _worker_gram(x, ys, zs, *[self.blocks[i] for i in run]), self.runs))
        z = None
        for run, (y_parts, zpart) in zip(self.runs, results, strict=True):
            for i, yi in zip(run, y_parts, strict=True):
                y[self.offsets[i] : self.offsets[i + 1]] = yi
            z = zpart if z is None else _add(z, zpart)
        return y, z


class _WorkerBlocks:
    """Products over row blocks persisted on the workers of a ``dask.distributed`` client.

    Each worker thread runs the one-pass kernel over the blocks that worker already holds
    (consecutive blocks grouped, so a product is a handful of calls whatever the number of
    blocks, never a graph of one task per block); blocks gathered on a few workers are first
    spread over all of them (`_balanced_groups`, ``config.DASK_BALANCE_FACTOR``). On workers of
    one thread the calls go to an actor per worker (`_BlockHolder`, which keeps its blocks),
    straight from this process to the worker and back without the scheduler in between: a
    product costs two messages per worker. Otherwise, and from the first failure of an actor on
    (a lost worker), each group is a task submitted as a future, pinned to its worker and allowed
    to move: dask recomputes a lost block from its lineage.
    """

    def __init__(self, client, B):
        self.client = client
        self.futures, self.groups, nthreads = _placement(client, B)
        futures = self.futures
        self.sizes = [int(s) for s in B.chunks[0]]
        self.actors = None
        single = all(w is not None and nthreads.get(w, 1) == 1 for (w, _), _ in self.groups)
        if single:
            try:
                holders = [  # the blocks as arguments: dask brings any the worker lacks, the actor keeps them
                    client.submit(_BlockHolder, *[futures[i] for i in part], workers=[w], actor=True, pure=False)
                    for (w, _), part in self.groups
                ]
                self.actors = [h.result() for h in holders]
                self._actor_futures = holders  # the actors, and the blocks they keep, live as long as these
            except Exception:  # an actor could not start (a worker left): the task path serves
                self.actors = None

    def __call__(self, x, ys, zs):
        results = None
        if self.actors is not None:
            try:
                calls = [actor.gram(x, ys, zs) for actor in self.actors]
                results = [call.result() for call in calls]
            except Exception:  # a worker lost or a block moved: tasks from now on (they can follow data)
                self.actors = None
        if results is None:
            results = self._by_tasks(x, ys, zs)
        y = np.empty(sum(self.sizes))
        offsets = np.cumsum([0] + self.sizes)
        z = None
        for ((_, _), part), (ys_parts, zpart) in zip(self.groups, results, strict=True):
            for i, yi in zip(part, ys_parts, strict=True):
                y[offsets[i] : offsets[i + 1]] = yi
            z = zpart if z is None else _add(z, zpart)
        return y, z

    def _by_tasks(self, x, ys, zs):
        tasks = []
        for (worker, _), part in self.groups:
            tasks.append(
                self.client.submit(
                    _worker_gram,
                    x,
                    ys,
                    zs,
                    *[self.futures[i] for i in part],
                    workers=None if worker is None else [worker],
                    allow_other_workers=True,
                    pure=False,
                )
            )
        return self.client.gather(tasks)


def _placement(client, B):
    """(futures, groups, nthreads) of B's persisted row blocks: who multiplies which blocks.

    ``groups`` is ``[((worker, thread slot), block indices), ...]`` in block order, so sums of
    partial products do not depend on dict order; consecutive blocks held by one worker go together.
    """
    from distributed import futures_of, wait

    by_key = {f.key: f for f in futures_of(B)}
    futures = [by_key[k] for k in _flat_keys(B)]
    wait(futures)
    holders = client.who_has(futures)
    nthreads = client.nthreads()
    groups = _groups_where_held(futures, holders, nthreads)
    if _unbalanced(groups, len(futures), nthreads):
        # the blocks sit on fewer workers than could share the products (a compute() gathered
        # them, and dask's memory manager dropped the other copies): each product would run at
        # those workers' speed for the whole solve, so move contiguous runs to every worker once
        groups = _balanced_groups(futures, holders, nthreads)
    return futures, sorted(groups.items(), key=lambda item: item[1][0]), nthreads


class _BlockHolder:
    """A dask actor on one worker: the products of the row blocks it was given (kept in its memory)."""

    def __init__(self, *blocks):
        self.blocks = blocks

    def gram(self, x, ys, zs):
        return _worker_gram(x, ys, zs, *self.blocks)


def _groups_where_held(futures, holders, nthreads):
    """{(worker, thread slot): block indices}: each worker's blocks, consecutive ones together, over its threads.

    A block held by several workers (a computation copied it) goes to the one with the fewest
    blocks per thread so far, its sole holders' blocks counted first.
    """
    owner = {i: holders[f.key][0] for i, f in enumerate(futures) if len(holders.get(f.key, ())) == 1}
    load = {}
    for w in owner.values():
        load[w] = load.get(w, 0) + 1
    for i, f in enumerate(futures):
        if len(holders.get(f.key, ())) > 1:
            w = min(sorted(holders[f.key]), key=lambda w: load.get(w, 0) / max(1, nthreads.get(w, 1)))
            owner[i] = w
            load[w] = load.get(w, 0) + 1
    groups = {}
    for worker in sorted(set(owner.values())):
        mine = [i for i in range(len(futures)) if owner.get(i) == worker]
        slots = max(1, min(nthreads.get(worker, 1), len(mine)))
        for s in range(slots):
            part = mine[(s * len(mine)) // slots : ((s + 1) * len(mine)) // slots]
            if part:
                groups[(worker, s)] = part
    placed = {i for part in groups.values() for i in part}
    orphans = [i for i in range(len(futures)) if i not in placed]  # no holder reported: any worker
    if orphans:
        groups[(None, 0)] = orphans
    return groups


def _unbalanced(groups, n_blocks, nthreads):
    """Whether some thread would multiply more than ``config.DASK_BALANCE_FACTOR`` times its fair share of blocks."""
    slots = min(sum(nthreads.values()), n_blocks)
    if slots <= 1:
        return False
    largest = max(len(part) for part in groups.values())
    return largest > config.DASK_BALANCE_FACTOR * math.ceil(n_blocks / slots)


def _balanced_groups(futures, holders, nthreads):
    """{(worker, thread slot): block indices}: one contiguous run per worker thread, of equal size.

    Each run goes to the worker (with a thread left) that holds most of its blocks, so as little
    moves as possible; the others are copied there once, when the actors start.
    """
    slots = [(w, s) for w in sorted(nthreads) for s in range(max(1, nthreads[w]))]
    k = len(futures)
    slots = slots[: max(1, min(len(slots), k))]
    runs = [list(range((i * k) // len(slots), ((i + 1) * k) // len(slots))) for i in range(len(slots))]
    free = list(slots)
    groups = {}
    for run in runs:
        held = [sum(w in holders.get(futures[i].key, ()) for i in run) for w, _ in free]
        slot = free.pop(int(np.argmax(held)))  # ties: the first free slot in worker order
        groups[slot] = run
    return groups


class _GraphBlocks:
    """Products through one dask graph each: a task per row block and a tree of sums.

    The path for blocks that are not persisted (read again from their source on every pass, as
    out-of-core data is) on whichever scheduler is active.
    """

    def __init__(self, B):
        self.blocks = list(B.to_delayed().ravel())

    def __call__(self, x, ys, zs):
        import dask

        task = dask.delayed(_block_gram, nout=2, pure=True)
        xd = dask.delayed(x)
        parts = [task(block, xd, ys, zs) for block in self.blocks]
        y_parts, z = dask.compute([p[0] for p in parts], _tree_sum([p[1] for p in parts]))
        return np.concatenate(y_parts), np.asarray(z)


class RowBasis:
    """The range finder's products on a ``dask.distributed`` cluster: A's row blocks and Q stay on the workers.

    `randomized_svd` asks for an orthonormal basis Q of range(A X) and for Z = A^T Q. Through
    numpy products each such step would bring the tall A X to the client and send Q back (two
    transfers of M x l floats and a QR on the client). Here each group of row blocks (`_placement`)
    is a task on the worker holding it: A_g X and its QR there (a tall-skinny QR over the groups,
    as `dask.array.linalg.tsqr` does: only the small R factors come to the client), then
    Q_g = Q1_g Q2_g and A_g^T Q_g. Only X, the R factors, Q2's rows and Z travel. Q stays on the
    workers until a product with a small matrix asks for its rows (``Q @ M``).
    """

    def __init__(self, client, B):
        self.client = client
        futures, groups, _ = _placement(client, B)
        self.dtype = np.dtype(B.dtype)
        self.workers = [w for (w, _), _ in groups]
        self.blocks = [part for _, part in groups]  # a worker's blocks need not be consecutive
        self.offsets = np.cumsum([0] + [int(c) for c in B.chunks[0]])
        # each task gets its group's block futures: where the blocks are held, nothing moves. (A task
        # returning them as one object would keep moved blocks for good, but dask would count the
        # blocks already held twice against the worker's memory limit and start spilling.)
        self.held = [[futures[i] for i in part] for part in self.blocks]
        self.parts = None  # futures of (Q_g, A_g^T Q_g) after a step

    @classmethod
    def on_cluster(cls, A):
        """A RowBasis of the dask array A, or None when no distributed client runs it or A does not fit."""
        client = _client_of(A)
        if client is None:
            return None
        B = A.rechunk({1: -1})
        if B.nbytes > config.DASK_PERSIST_FRACTION * _memory_available():
            return None  # re-read from its source each pass: dask's graph of products does that
        threads = sum(client.nthreads().values())
        if B.numblocks[0] < threads <= B.shape[0]:  # chunked by columns only: a row block per thread
            B = B.rechunk({0: -(-B.shape[0] // threads)})
        return cls(client, B.persist())

    def _on(self, fn, *args, worker):
        return self.client.submit(
            fn, *args, workers=None if worker is None else [worker], allow_other_workers=True, pure=False
        )

    def range_basis(self, X):
        """(self, Z): self is Q, an orthonormal basis of range(A X) kept on the workers; Z = A^T Q.

        (None, None) if A X is not finite (the caller names why).
        """
        import scipy.linalg

        Xf = self.client.scatter(X, broadcast=True) if X.nbytes > 1 << 20 else X
        parts = [self._on(_range_qr, Xf, *held, worker=w) for held, w in zip(self.held, self.workers, strict=True)]
        Rs = self.client.gather([self._on(_second, p, worker=w) for p, w in zip(parts, self.workers, strict=True)])
        if not all(np.isfinite(R).all() for R in Rs):
            return None, None
        stacked = np.vstack(Rs)
        with _threads.blas_single_thread():
            Q2 = scipy.linalg.qr(stacked, mode="economic", check_finite=False)[0]
        bounds = np.cumsum([0] + [R.shape[0] for R in Rs])
        self.parts = [
            self._on(_corange, p, Q2[lo:hi], *held, worker=w)
            for p, lo, hi, held, w in zip(parts, bounds[:-1], bounds[1:], self.held, self.workers, strict=True)
        ]
        Zs = self.client.gather([self._on(_second, p, worker=w) for p, w in zip(self.parts, self.workers, strict=True)])
        Z = Zs[0]
        for z in Zs[1:]:  # in block order: the sum does not depend on which worker answered first
            Z = _add(Z, z)
        return self, Z

    def __matmul__(self, M):
        """Q @ M for a small M, as a numpy array (the rows come from the workers)."""
        rows = [self._on(_first_times, p, M, worker=w) for p, w in zip(self.parts, self.workers, strict=True)]
        out = np.empty((self.offsets[-1], M.shape[1]), dtype=np.result_type(M.dtype, self.dtype))
        for part, QM in zip(self.blocks, self.client.gather(rows), strict=True):
            lo = 0
            for i in part:  # the group's rows are its blocks' rows, in its order
                hi = lo + self.offsets[i + 1] - self.offsets[i]
                out[self.offsets[i] : self.offsets[i + 1]] = QM[lo:hi]
                lo = hi
        return out


def _second(pair):
    return pair[1]


def _first_times(pair, M):
    return pair[0] @ M


def _range_qr(X, *blocks):
    """(Q1, R): the QR of this group's rows of A X; R is NaN when A X is not finite (the client names why)."""
    import scipy.linalg

    with np.errstate(all="ignore"):
        # (X^T b^T)^T: OpenBLAS multiplies a row block by a skinny X twice as fast this way round
        # (25000 x 1000 by 1000 x 30: 35 ms against 69 ms, AVX-512)
        Y = np.vstack([(X.T @ b.T).T for b in blocks])
    if not np.isfinite(Y).all():
        return None, np.full((1, X.shape[1]), np.nan, dtype=Y.dtype)
    return scipy.linalg.qr(Y, mode="economic", check_finite=False, overwrite_a=True)


def _corange(part, Q2, *blocks):
    """(Q_g, A_g^T Q_g): this group's rows of the basis and their share of A^T Q."""
    Q = part[0] @ Q2
    Z, lo = None, 0
    with np.errstate(all="ignore"):  # an overflow shows as inf in Z, which the client checks
        for b in blocks:
            hi = lo + b.shape[0]
            z = (Q[lo:hi].T @ b).T  # as in _range_qr: 32 ms against 62 ms for b^T Q
            Z = z if Z is None else Z + z
            lo = hi
    return Q, Z


def _flat_keys(B):
    keys = B.__dask_keys__()
    while keys and isinstance(keys[0], list):
        keys = [k for sub in keys for k in sub]
    return keys


class DaskGram(_operators._GramBase):
    """Gram products of a 2-D dask array, one pass over its row blocks each (see the module docstring).

    ``persist``: keep the (rechunked) blocks in the scheduler's memory between products; "auto"
    persists when A takes at most ``config.DASK_PERSIST_FRACTION`` of the memory available.
    Persisted blocks are multiplied where they live: in this process by the numba kernels on a
    local scheduler, by one task per worker thread on a ``dask.distributed`` client; blocks that
    are not persisted go through one graph per product (read again from their source each pass).
    Scale as every Gram operator (`_operators._GramBase`): products of 2^-e A, e read off max|A|
    only when a first product leaves the safe range.
    """

    passes_per_gram = 1  # one read of every block per Gram product

    def __init__(self, name, A, *, persist="auto"):
        import dask

        _validate.float_dtype(name, A.dtype)
        if A.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D dask array, got {A.ndim}-D with shape {A.shape}")
        if min(A.shape) == 0 or any(np.isnan(s) for s in A.shape):
            raise ValueError(f"`{name}` must be a non-empty dask array of known shape, got shape {A.shape}")
        m, n = (int(s) for s in A.shape)
        super().__init__(name, (m, n), np.dtype(A.dtype), 1)
        self.left = m < n  # iterate on the smaller side: the Gram operator is A A^T
        B = A.T if self.left else A
        # one chunk across the vector side, so each block's share of the product needs no other block
        B = B.rechunk({1: -1})
        if persist == "auto":
            persist = B.nbytes <= config.DASK_PERSIST_FRACTION * _memory_available()
        client = _client_of(B)
        if persist:
            B = B.persist()
            if client is not None:
                self._products = _WorkerBlocks(client, B)
            else:  # a local scheduler persists into this process: take the blocks as they are
                self._products = _LocalBlocks(dask.compute(*B.to_delayed().ravel()))
        elif client is None and B.name in _FILE_SOURCES:  # a file read by this process: stream it
            self._products = _FileBlocks(*_FILE_SOURCES[B.name])
        else:
            self._products = _GraphBlocks(B)
        self.n_products = 0  # products with A plus with A^T: tests read them to count passes
        self.n_passes = 0
        self._source = A
        self._B = B

    def gram(self, X, active):
        """Return (Y, Z), Y[0] = B' x and Z[0] = B'^T B' x for x = X[0], B' = 2^-e B, in one pass."""
        c1, c2 = float(self.c1[0]), float(self.c2[0])
        x = np.ascontiguousarray(X[0] * c1, dtype=np.float64)
        y, z = self._products(x, c2, c1)
        Y, Z = y[None, :], z[None, :]
        self.n_products += 2
        self.n_passes += 1
        self._check(Y, Z, np.arange(1))
        return Y, Z

    def matvec_start(self, V0):
        """A' v0 as a numpy row (a start vector on the u side from a right one)."""
        while True:
            c1, c2 = float(self.c1[0]), float(self.c2[0])
            with np.errstate(all="ignore"):  # out of range: rescaled below; NaN named by fail()
                y = np.asarray((self._source @ (V0[0] * c1).astype(self.dtype)).compute(), dtype=np.float64) * c2
            if np.isfinite(y).all():
                return y[None, :]
            if self.scaled:
                self.fail()
            self.rescale()

    def rescale(self):
        """Choose the exponent from max|A| (one pass on the workers; only after a product showed the need)."""
        hi, lo, _ = max_min_sumsq(self._B)
        amax = max(hi, -lo)
        if not np.isfinite(amax):
            self.fail()
        self.set_exponent(_operators.exponent_of(np.array([amax])))
        self.scaled = True

    def fail(self):
        """Raise the right error for a product that is not finite: NaN/Inf in A, or overflow."""
        require_finite(self.name, self._source)
        raise ValueError(f"`{self.name}`: products overflowed although its entries are finite")

    def check_finite(self, *products):
        if not all(np.isfinite(P).all() for P in products):
            self.fail()

    def outer(self, u, v, factor):
        """factor u v^T as a dask array chunked like A: as large as the input, so it stays distributed."""
        import dask.array as da

        left = da.from_array(np.asarray(u * factor, dtype=u.dtype), chunks=(self._source.chunks[0],))
        right = da.from_array(np.asarray(v, dtype=u.dtype), chunks=(self._source.chunks[1],))
        return left[:, None] * right[None, :]


def msign_factor(A, sched, scaling, diagnostics):
    """Newton-Schulz steps of `polar.msign` on a 2-D dask array: (Q, orthogonality, scale, zero).

    The same iteration as in memory, on the wide orientation X (short side first): each step
    computes the small Gram matrix G_t = X_t X_t^T in one pass (a tree reduction on the workers),
    forms q(G_t) in memory and keeps X_{t+1} = q(G_t) X_t distributed (persisted, so the next
    Gram matrix does not recompute the chain). Q keeps A's chunks along the long side.
    """
    import dask
    import dask.array as da

    _validate.float_dtype("A", A.dtype)
    if A.ndim != 2 or min(A.shape) == 0:
        raise ValueError(f"`A` must be a non-empty 2-D dask array, got shape {A.shape}")
    dtype = np.dtype(A.dtype).type
    tall = A.shape[0] > A.shape[1]
    X = (A.T if tall else A).rechunk({0: -1})  # the short side in one chunk: q(G) X block by block
    with np.errstate(all="ignore"):  # NaN or Inf: named below
        lo, hi = dask.compute(X.min(), X.max())
    amax = max(float(hi), -float(lo))
    if not np.isfinite(amax):
        raise ValueError("`A` must be finite, its entries hold NaN or Inf")
    if amax == 0.0:
        return da.zeros(A.shape, dtype=A.dtype, chunks=A.chunks), math.sqrt(min(A.shape)), 0.0
    e = math.frexp(amax)[1]
    X = (X * dtype(math.ldexp(1.0, -e)) if -e >= np.finfo(dtype).minexp else da.ldexp(X, -e).astype(dtype)).persist()
    from .polar import _normalized_gram  # polar imports this module: import here

    f, G, scale = _normalized_gram(np.asarray((X @ X.T).compute()), e, scaling)
    diag = np.diag_indices_from(G)
    for t, (a, b, c) in enumerate(sched):
        if t > 0:
            G = np.asarray((X @ X.T).compute())
        q = dtype(b) * G + dtype(c) * (G @ G.T)
        q[diag] += dtype(a)
        if t == 0:
            q /= dtype(f)
        X = (da.from_array(q, chunks=(X.chunks[0], X.chunks[0])) @ X).persist()
    orth = float("nan")
    if diagnostics:  # as polar._orthogonality_bound, with the Gram product and sum on the workers
        X64 = X.astype(np.float64)
        E, sq = dask.compute(X64 @ X64.T, (X64 * X64).sum())
        E = np.asarray(E)
        E[np.diag_indices_from(E)] -= 1.0
        orth = float(np.linalg.norm(E) + (X.shape[1] + 2) * np.finfo(np.float64).eps * float(sq))
    Q = X.T if tall else X
    return Q.rechunk(A.chunks), orth, scale


def _read_rows(path, offset, dtype, n_cols, lo, hi):
    """Rows lo..hi of a C-ordered matrix stored raw at ``offset`` in ``path``, read (not mapped).

    A read copies into memory this process owns and frees after use, so the resident memory of
    an out-of-core pass is the blocks in flight, whatever the size of the file.
    """
    itemsize = np.dtype(dtype).itemsize
    with open(path, "rb") as f:
        f.seek(offset + lo * n_cols * itemsize)
        block = np.fromfile(f, dtype=dtype, count=(hi - lo) * n_cols)
    if block.size != (hi - lo) * n_cols:
        raise ValueError(f"`A`: {path} is shorter than its header says (rows {lo}..{hi} missing)")
    return block.reshape(hi - lo, n_cols)


#: dask name -> (path, offset, dtype, n_cols, row bounds) of the arrays made by `from_memmap`, so
#: that a Gram operator over one streams the file itself (`_FileBlocks`); a few entries, the newest kept
_FILE_SOURCES = {}
_FILE_SOURCES_KEPT = 16


def from_memmap(mm, rows_per_block):
    """A C-ordered 2-D ``numpy.memmap`` as a dask array whose blocks are read from its file, not mapped."""
    import dask
    import dask.array as da

    m, n = mm.shape
    offset = _operators.memmap_file_offset(mm)
    bounds = [(lo, min(lo + rows_per_block, m)) for lo in range(0, m, rows_per_block)]
    blocks = []
    for lo, hi in bounds:
        part = dask.delayed(_read_rows, pure=True)(mm.filename, offset, mm.dtype, n, lo, hi)
        blocks.append(da.from_delayed(part, shape=(hi - lo, n), dtype=mm.dtype))
    A = da.concatenate(blocks, axis=0)
    _FILE_SOURCES[A.name] = (mm.filename, offset, np.dtype(mm.dtype), n, bounds)
    while len(_FILE_SOURCES) > _FILE_SOURCES_KEPT:
        del _FILE_SOURCES[next(iter(_FILE_SOURCES))]
    return A


class _FileBlocks:
    """Products streamed from a raw row-major file: every pass reads it front to back once.

    One thread per numba thread takes every T-th block (so the threads together read the file
    nearly in order), reads it into a buffer of its own, reused from block to block and pass to
    pass (no fresh pages to fault in), and runs the single-threaded one-pass kernel on it while
    the other threads read: reading and arithmetic overlap. Resident memory: T block buffers.
    Partial sums are added in a fixed order (thread by thread), so the answer does not depend on
    thread timing.
    """

    def __init__(self, path, offset, dtype, n_cols, bounds):
        self.path, self.offset, self.dtype, self.n_cols, self.bounds = path, offset, dtype, n_cols, bounds
        self.n_threads = max(1, min(numba.get_num_threads(), len(bounds)))
        self.rows = max(hi - lo for lo, hi in bounds)
        self.buffers = [np.empty((self.rows, n_cols), dtype=dtype) for _ in range(self.n_threads)]
        self.total = bounds[-1][1]

    def _stream(self, t, x, ys, zs, y):
        buf = self.buffers[t]
        z = np.zeros(self.n_cols)
        part = np.empty(self.n_cols)
        row_bytes = self.n_cols * self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as f:
            for lo, hi in self.bounds[t :: self.n_threads]:
                block = buf[: hi - lo]
                view = memoryview(block.reshape(-1).view(np.uint8))
                f.seek(self.offset + lo * row_bytes)
                got = 0
                while got < len(view):  # a raw read may return less than asked
                    k = f.readinto(view[got:])
                    if not k:
                        raise ValueError(f"`A`: {self.path} is shorter than its header says (rows {lo}..{hi})")
                    got += k
                _kernels.gram_matvec_serial(block, x, y[lo:hi], part, ys, zs)
                z += part
        return z

    def __call__(self, x, ys, zs):
        from concurrent.futures import ThreadPoolExecutor

        y = np.empty(self.total)
        with np.errstate(all="ignore"), ThreadPoolExecutor(self.n_threads) as pool:  # overflow: the caller rescales
            parts = list(pool.map(lambda t: self._stream(t, x, ys, zs, y), range(self.n_threads)))
        z = parts[0]
        for part in parts[1:]:
            z = _add(z, part)
        return y, z


def is_out_of_core(A):
    """`_operators.memmap_too_large_to_hold` for the active scheduler's memory, with dask installed."""
    return (
        isinstance(A, np.memmap)
        and importlib.util.find_spec("dask") is not None  # without dask the file is mapped whole
        and _operators.memmap_too_large_to_hold(A, _memory_available)
    )
