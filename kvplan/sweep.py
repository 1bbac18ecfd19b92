"""`sweep`: `estimate` over a grid of deployments, as one pandas DataFrame (one row per configuration).

Row = `estimate(model, grid.deployment(gpu, tp, pp, dtype, kv_dtype, context))` (max_model_len =
context, batch 1) reduced to COLUMNS; `kv_budget_bytes` is null where weights and overhead leave no
memory for KV (the estimate's budget is negative there). For the generic engine the rows are
computed vectorized, model by model, from the estimate's own pieces:
  - per (tp, pp, weight dtype): weights, overhead terms and the parallelism checks from one
    `estimate` probe of a 1-token deployment; per GPU the policy's `kv_budget` and
    `weights_limit_bytes`; stages from `pipeline_stages`, KV formats from `dtype_plan`;
  - per (stage, KV dtype, context): KV bytes per request from the spec's own per-group constants
    (`bytes_per_token_per_layer`, `peak_blocks`, `state_bytes`), summed exactly in integers: the
    one vectorized formula, `ModelSpec.bytes_per_request` over an array of contexts;
  - per (stage, GPU, dtype, KV dtype): the pool, from `paged_pool` (the generic policy's, on arrays);
  - per row, with numpy: users = min over stages of pool bytes // request bytes, the bottleneck
    stage's blocks and tokens, fits (the estimate's verdict for batch 1 at max_model_len).
Other engines' figures depend on the context in their own ways (vLLM's start-up refusal, its
block groups), so their rows come from `estimate` itself, one by one.
tests/test_sweep.py checks the vectorized rows against `estimate` on random samples.
"""

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

from .dtypes import kv_format, weight_format
from .plan.dtype_plan import dtype_plan
from .errors import InputError, KvplanError
from .extras import require_extra
from .hardware import GPU
from .plan import Deployment, Estimate, estimate
from .plan.deployment import SETTINGS
from .plan.estimate import TABLE_CONTEXTS, pipeline_stages, settings_used, within_model_max
from .model import LoadedModel, ModelSpec, load_model
from .units import GiB, fmt_gib

COLUMNS = ("model", "gpu", "tp", "pp", "weights_dtype", "kv_dtype", "context_tokens", "weights_bytes_per_gpu",
           "kv_budget_bytes", "kv_bytes_per_request", "kv_bytes_per_request_per_gpu", "num_blocks",
           "kv_cache_tokens", "max_concurrent_users", "fits", "within_model_max")
_TEXT = ("model", "gpu", "weights_dtype", "kv_dtype")
# Measured peak while building: the final frame (~100 B/row) plus per-model work arrays and the concat copy.
BYTES_PER_ROW = 320
DEFAULT_MAX_MEMORY_BYTES = 2 * GiB


@dataclass(frozen=True)
class SweepGrid:
    models: tuple[str, ...]
    gpus: tuple[GPU, ...]
    tp: tuple[int, ...] = (SETTINGS["tp"].default,)
    pp: tuple[int, ...] = (SETTINGS["pp"].default,)
    dtypes: tuple[str | None, ...] = (None,)  # None: the checkpoint's own format
    kv_dtypes: tuple[str, ...] = (SETTINGS["kv_dtype"].default,)
    contexts: tuple[int, ...] = TABLE_CONTEXTS
    gpu_memory_utilization: float = SETTINGS["gpu_memory_utilization"].default
    block_size: int | None = None  # None: the engine's default
    engine: str = SETTINGS["engine"].default

    def __post_init__(self):
        for name in ("models", "gpus", "tp", "pp", "dtypes", "kv_dtypes", "contexts"):
            values = getattr(self, name)
            if not values:
                raise InputError(f"sweep: no {name} given")
            if len(set(values)) != len(values):
                raise InputError(f"sweep: {name} lists a value twice")
        for name in ("tp", "pp", "contexts"):
            for v in getattr(self, name):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise InputError(f"sweep: {name} must be positive integers, got {v!r}")
        for d in self.dtypes:
            if d is not None:
                weight_format(d)
        for k in self.kv_dtypes:
            kv_format(k)

    @property
    def size(self) -> int:
        return math.prod(len(getattr(self, n)) for n in ("models", "gpus", "tp", "pp", "dtypes", "kv_dtypes", "contexts"))

    def deployment(self, gpu: GPU, tp: int, pp: int, dtype: str | None, kv_dtype: str, context: int) -> Deployment:
        """The deployment one row stands for."""
        return Deployment(gpu=gpu, tp=tp, pp=pp, weight_dtype=dtype, kv_dtype=kv_dtype, max_model_len=context,
                          context_tokens=context, batch=1, gpu_memory_utilization=self.gpu_memory_utilization,
                          block_size=self.block_size, engine=self.engine)


@dataclass(frozen=True)
class SweepResult:
    frame: object  # pandas.DataFrame with COLUMNS
    skipped: tuple[str, ...]  # combinations estimate() refuses, with the reason (one line each)
    vectorized: bool
    grid: SweepGrid
    model_max_tokens: dict  # each model's max_position_embeddings (None: unknown), by the frame's model name


def check_memory(grid: SweepGrid, max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES) -> None:
    """Refuse a grid whose frame would not fit `max_memory_bytes`, before building anything."""
    need = grid.size * BYTES_PER_ROW
    if need > max_memory_bytes:
        raise InputError(f"sweep: {grid.size:,} configurations need about {fmt_gib(need)} "
                         f"(~{BYTES_PER_ROW} B each), over the {fmt_gib(max_memory_bytes)} limit: narrow a dimension "
                         "or raise --max-memory")


def run_sweep(grid: SweepGrid, max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES, progress=None,
              vectorize: bool | None = None) -> SweepResult:
    """Every configuration of the grid. `progress(done_models, total_models)` is called after each model.

    `vectorize`: None picks the vectorized path for the generic engine and the per-row loop otherwise;
    False forces the per-row loop (the reference, and the benchmark's baseline)."""
    check_memory(grid, max_memory_bytes)
    require_extra("report", "pandas", "numpy", what="kvplan sweep")
    import numpy as np
    import pandas as pd

    from .plan.policies import get_policy
    from .plan.policies.generic import GenericPolicy

    models = [load_model(m) for m in grid.models]
    vectorized = type(get_policy(grid.engine)) is GenericPolicy
    if vectorize is not None:
        if vectorize and not vectorized:
            raise InputError(f"sweep: the vectorized path models the generic engine only, not {grid.engine!r}")
        vectorized = vectorize
    categories: dict[str, dict[str, int]] = {c: {} for c in _TEXT}
    skipped: dict[str, None] = {}
    parts = []
    for i, model in enumerate(models):
        build = _vector_rows if vectorized else _estimate_rows
        parts.append(build(model, grid, categories, skipped))
        if progress:
            progress(i + 1, len(models))
    columns = {}
    for c in COLUMNS:
        data = np.concatenate([p[c] for p in parts]) if parts else np.empty(0, dtype=np.int64)
        if c in _TEXT:
            names = list(categories[c])
            columns[c] = pd.Categorical.from_codes(data.astype(np.int32), categories=names) if names else \
                pd.Categorical([])
        elif c == "kv_budget_bytes":
            columns[c] = pd.array(data, dtype="Int64")
            columns[c][_no_budget(data)] = pd.NA
        else:
            columns[c] = data
    frame = pd.DataFrame(columns)
    model_max = {m.spec.name: m.spec.max_position_embeddings for m in models}
    return SweepResult(frame, tuple(skipped), vectorized, grid, model_max)


def estimate_row(model: LoadedModel, grid: SweepGrid, gpu: GPU, tp: int, pp: int, dtype: str | None,
                 kv_dtype: str, context: int) -> dict:
    """One row the plain way: `estimate` on the row's deployment (the reference the vectorized rows equal)."""
    row = _raw_row(estimate(model, grid.deployment(gpu, tp, pp, dtype, kv_dtype, context)), model.spec)
    if row["kv_budget_bytes"] is not None and _no_budget(row["kv_budget_bytes"]):
        row["kv_budget_bytes"] = None
    return row


def _raw_row(est: Estimate, spec: ModelSpec) -> dict:
    """The estimate reduced to COLUMNS, its budget as computed (negative when nothing is left for KV)."""
    return {
        "model": est.model, "gpu": est.gpu, "tp": est.deployment["tp"], "pp": est.deployment["pp"],
        "weights_dtype": est.weights_dtype, "kv_dtype": est.kv_dtype, "context_tokens": est.context_tokens,
        "weights_bytes_per_gpu": est.weights_bytes_per_gpu, "kv_budget_bytes": est.kv_budget_bytes,
        "kv_bytes_per_request": est.kv_bytes_per_request,
        "kv_bytes_per_request_per_gpu": est.kv_bytes_per_request_per_gpu, "num_blocks": est.num_blocks,
        "kv_cache_tokens": est.kv_cache_tokens, "max_concurrent_users": est.max_concurrent_users,
        "fits": bool(est.fits), "within_model_max": within_model_max(spec, est.context_tokens),
    }


def _no_budget(budget_bytes):
    """Where the budget is null: weights and overhead exceed the engine's memory share (int or array)."""
    return budget_bytes < 0


def _code(categories: dict[str, dict[str, int]], column: str, value: str) -> int:
    return categories[column].setdefault(value, len(categories[column]))


class _Block:
    """Column arrays of one model over the grid's axes (gpu, tp, pp, dtype, kv, context), masked at the end."""

    def __init__(self, grid: SweepGrid):
        import numpy as np

        self.shape = (len(grid.gpus), len(grid.tp), len(grid.pp), len(grid.dtypes), len(grid.kv_dtypes),
                      len(grid.contexts))
        self.cols = {c: np.zeros(self.shape, dtype=np.int64) for c in COLUMNS if c not in ("fits", "within_model_max")}
        self.cols["fits"] = np.zeros(self.shape, dtype=bool)
        self.cols["within_model_max"] = np.zeros(self.shape, dtype=bool)
        self.valid = np.zeros(self.shape, dtype=bool)

    def finish(self) -> dict:
        return {c: a[self.valid] for c, a in self.cols.items()}


def _estimate_rows(model: LoadedModel, grid: SweepGrid, categories, skipped) -> dict:
    """The plain loop: one `estimate` per row (engines whose figures the vectorized path does not model)."""
    block = _Block(grid)
    for index in itertools.product(*(range(n) for n in block.shape)):
        g, t, p, d, k, c = index
        try:
            est = estimate(model, grid.deployment(grid.gpus[g], grid.tp[t], grid.pp[p], grid.dtypes[d],
                                                  grid.kv_dtypes[k], grid.contexts[c]))
        except KvplanError as exc:
            skipped.setdefault(f"{model.spec.name} tp={grid.tp[t]} pp={grid.pp[p]}: {exc}")
            continue
        if est.kv_budget_bytes is None:
            skipped.setdefault(f"{model.spec.name}: no KV budget (weights unknown)")
            continue
        for col, value in _raw_row(est, model.spec).items():
            block.cols[col][index] = _code(categories, col, value) if col in _TEXT else value
        block.valid[index] = True
    return block.finish()


def _vector_rows(model: LoadedModel, grid: SweepGrid, categories, skipped) -> dict:
    import numpy as np

    from .plan.overhead import Term
    from .plan.policies import get_policy
    from .plan.policies.generic import paged_pool

    spec = model.spec
    block = _Block(grid)
    cols = block.cols
    contexts = np.asarray(grid.contexts, dtype=np.int64)
    cols["within_model_max"][...] = np.asarray([within_model_max(spec, int(c)) for c in contexts])
    cols["context_tokens"][...] = contexts
    cols["model"][...] = _code(categories, "model", spec.name)
    for g, gpu in enumerate(grid.gpus):
        cols["gpu"][g] = _code(categories, "gpu", gpu.name)
    policy = get_policy(grid.engine).bind(spec)
    peak_cache: dict = {}
    for (p, pp), (t, tp), (d, dtype) in _product(grid.pp, grid.tp, grid.dtypes):
        try:  # weights, overhead and parallelism checks exactly as estimate() does them
            probe = estimate(model, grid.deployment(grid.gpus[0], tp, pp, dtype, grid.kv_dtypes[0], 1))
        except KvplanError as exc:
            skipped.setdefault(f"{spec.name} tp={tp} pp={pp}: {exc}")
            continue
        if probe.kv_budget_bytes is None:
            skipped.setdefault(f"{spec.name} dtype={probe.weights_dtype}: no KV budget ({'; '.join(probe.notes)})")
            continue
        terms = [Term(**x) for x in probe.overhead]
        weights = probe.weights_bytes_per_gpu
        # the generic engine's defaults do not depend on the GPU: the probe's settings hold for every one
        deployments = [settings_used(grid.deployment(gpu, tp, pp, dtype, grid.kv_dtypes[0], 1), probe)
                       for gpu in grid.gpus]
        budgets = np.asarray([policy.kv_budget(gpu.memory_bytes, weights, terms, dep)
                              for gpu, dep in zip(grid.gpus, deployments)], dtype=np.int64)
        # the estimate's first verdict: the weights must stay under what the engine can load
        weights_fit = np.asarray([weights < policy.weights_limit_bytes(gpu.memory_bytes, dep)
                                  for gpu, dep in zip(grid.gpus, deployments)])
        stages = pipeline_stages(spec, pp)
        dtypes = dtype_plan(spec, dtype)
        block_size = probe.block_size
        chunk = probe.max_num_batched_tokens
        for k, kv_name in enumerate(grid.kv_dtypes):
            kv = dtypes.kv(kv_name)
            try:
                pools = [paged_pool(s, kv, tp, block_size, budgets)[1:] for s in stages]
            except KvplanError as exc:
                skipped.setdefault(f"{spec.name} tp={tp} pp={pp} kv={kv.name}: {exc}")
                continue
            per_stage = np.stack([request_bytes(s, kv, tp, block_size, contexts, peak_cache, chunk) for s in stages])
            usable = np.stack([pl[0] for pl in pools])  # (S, G)
            users = _users(usable, per_stage)  # (G, C)
            neck = np.argmax(per_stage, axis=0)  # the first stage with the largest request, as max() picks
            at = (slice(None), t, p, d, k)
            cols["tp"][at], cols["pp"][at] = tp, pp
            cols["weights_dtype"][at] = _code(categories, "weights_dtype", probe.weights_dtype)
            cols["kv_dtype"][at] = _code(categories, "kv_dtype", kv.name)
            cols["weights_bytes_per_gpu"][at] = weights
            cols["kv_budget_bytes"][at] = budgets[:, None]
            cols["kv_bytes_per_request"][at] = request_bytes(spec, kv, 1, block_size, contexts, peak_cache, chunk)
            cols["kv_bytes_per_request_per_gpu"][at] = per_stage.max(axis=0)
            cols["num_blocks"][at] = np.stack([pl[1] for pl in pools])[neck].T
            cols["kv_cache_tokens"][at] = np.stack([pl[2] for pl in pools])[neck].T
            cols["max_concurrent_users"][at] = users
            cols["fits"][at] = (weights_fit & ~_no_budget(budgets))[:, None] & (users >= 1)
            block.valid[at] = True
    return block.finish()


def _product(*axes):
    return itertools.product(*(list(enumerate(a)) for a in axes))


def _users(usable, per_stage):
    """min over stages of usable // request bytes (0 where a request holds nothing), shape (G, C)."""
    import numpy as np

    safe = np.where(per_stage > 0, per_stage, 1)
    per = usable[:, :, None] // safe[:, None, :]
    per = np.where(per_stage[:, None, :] > 0, per, 0)
    return per.min(axis=0)


def request_bytes(stage: ModelSpec, kv, tp: int, block_size: int, contexts, peak_cache: dict | None = None,
                  chunk_tokens: int = 1):
    """`stage.bytes_per_request(c, kv, tp, block_size, chunk_tokens)` for every c in `contexts`, exactly, as int64.

    Per group the constant is bytes per token per layer x layers x block size (a Fraction from the
    spec itself); `peak_blocks` is asked once per group and context. Scaling every constant by the
    common denominator keeps the sum in integers, so the one rounding up matches the spec's.
    """
    import numpy as np

    peak_cache = {} if peak_cache is None else peak_cache
    terms = []
    for g in stage.groups:
        coef = Fraction(g.bytes_per_token_per_layer(kv, tp)) * g.num_layers * block_size
        if coef:
            key = (g, block_size, chunk_tokens)
            if key not in peak_cache:
                peak_cache[key] = np.asarray([g.peak_blocks(int(c), block_size, chunk_tokens) for c in contexts],
                                             dtype=np.int64)
            terms.append((coef, peak_cache[key]))
    state = stage.state_bytes(kv, tp)
    if not terms:
        return np.full(len(contexts), state, dtype=np.int64)
    denom = math.lcm(*(c.denominator for c, _ in terms))
    scaled = [(c.numerator * (denom // c.denominator), blocks) for c, blocks in terms]
    if sum(s * int(b.max(initial=0)) for s, b in scaled) + state * denom >= 1 << 62:
        raise InputError(f"sweep: {stage.name} at {int(max(contexts)):,} tokens needs more KV bytes per request "
                         "than 64-bit integers hold: use smaller contexts")
    total = np.zeros(len(contexts), dtype=np.int64)
    for s, blocks in scaled:
        total += s * blocks
    return -(-total // denom) + state


def select(frame, fits_only: bool = False, min_users: int | None = None):
    """Rows that fit (and whose context the model supports), or that hold at least `min_users`."""
    mask = None
    if fits_only:
        mask = frame["fits"] & frame["within_model_max"]
    if min_users is not None:
        more = frame["max_concurrent_users"] >= min_users
        mask = more if mask is None else mask & more
    return frame if mask is None else frame[mask].reset_index(drop=True)
