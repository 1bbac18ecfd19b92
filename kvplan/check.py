"""Deployment rules for CI: every requirement of a deployment file, evaluated with `estimate`.

Rules (each a RuleResult with the numbers behind it; docs/check.md):

| rule | passes when |
|---|---|
| fits | weights fit and one request of max_model_len fits the KV budget (the engine would start) |
| max_model_len_supported | max_model_len <= the model's max_position_embeddings (vLLM refuses more) |
| min_concurrent_users | N requests of C tokens fit at once (`estimate` with batch N at context C) |
| min_context_tokens | the longest single request that fits, capped at max_model_len, is >= T |
| max_kv_budget_fraction | the load (N x KV per request at C, or one max_model_len request) <= f x budget |
| gpu_count | tp x pp GPUs <= the GPUs the manifest requests |

`headroom` is taken off the KV budget per GPU before any rule: every figure below is computed
with `Deployment.kv_cache_memory_bytes` = budget - headroom, the knob vLLM itself offers.
"""

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from .deploy.file import DeploymentEntry, load_deployments
from .errors import KvplanError
from .plan import Estimate, estimate
from .model import LoadedModel, load_model
from .units import fmt_gib


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    required: str  # human-readable target
    actual: str  # human-readable figure it was compared with
    message: str  # one line: why it passed or failed
    line: int  # where in the file the rule comes from
    numbers: dict  # the integers (bytes, tokens, users) behind it


@dataclass(frozen=True)
class DeploymentResult:
    entry: DeploymentEntry
    estimate: Estimate  # at max_model_len, batch 1, after headroom
    kv_budget_bytes_before_headroom: int
    headroom_bytes: int
    rules: list[RuleResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)


@dataclass(frozen=True)
class CheckReport:
    results: list[DeploymentResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def num_rules(self) -> int:
        return sum(len(r.rules) for r in self.results)

    @property
    def num_failed(self) -> int:
        return sum(not rule.passed for r in self.results for rule in r.rules)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def check_files(paths: list[str | Path]) -> CheckReport:
    """Load and evaluate every deployment; invalid input raises InputError (exit 2) before any rule runs."""
    entries = load_deployments(paths)
    models: dict[str, LoadedModel] = {}
    for e in entries:  # resolve every model first: a typo in the last file is still exit 2, not a half report
        if e.model not in models:
            try:
                models[e.model] = load_model(e.model)
            except KvplanError as exc:
                raise e.error("model", str(exc)) from None
    return CheckReport([evaluate(e, models[e.model]) for e in entries])


def evaluate(entry: DeploymentEntry, model: LoadedModel) -> DeploymentResult:
    req = entry.requirements
    base = _estimate(entry, model, entry.deployment)
    if base.kv_budget_bytes is None:
        raise entry.error(None, f"no KV budget can be computed ({'; '.join(base.notes) or base.verdict})")
    budget = base.kv_budget_bytes
    headroom = req.headroom_bytes + _ceil_fraction(req.headroom_fraction, max(budget, 0))
    dep = entry.deployment
    if headroom:
        dep = replace(dep, kv_cache_memory_bytes=max(budget - headroom, 0))
    at_max = _estimate(entry, model, dep) if headroom else base

    rules: list[RuleResult] = []
    if req.must_fit:
        rules.append(_fits(entry, base, at_max, headroom))
        if model.spec.max_position_embeddings:
            rules.append(_supported_len(entry, at_max, model.spec.max_position_embeddings))
    loads: list[tuple[int, str, int]] = []  # (bytes per GPU, what, line)
    for target in req.min_concurrent_users:
        rule, load = _users(entry, model, dep, at_max, target)
        rules.append(rule)
        if load is not None:
            loads.append(load)
    if req.min_context_tokens is not None:
        rules.append(_min_context(entry, at_max, req.min_context_tokens))
    if req.max_kv_budget_fraction is not None:
        if not loads:  # no user target (or none an engine accepts): the load is one max_model_len request
            loads.append((at_max.kv_bytes_per_request_per_gpu, f"1 x {at_max.max_model_len:,} tokens", entry.line))
        rules.append(_budget_fraction(entry, at_max, loads, req.max_kv_budget_fraction))
    if entry.gpu_count is not None:
        rules.append(_gpu_count(entry))
    return DeploymentResult(entry, at_max, budget, headroom, rules)


def _estimate(entry: DeploymentEntry, model: LoadedModel, dep) -> Estimate:
    try:
        return estimate(model, dep)
    except KvplanError as exc:  # e.g. tp not dividing the heads: name the field the flag came from
        text = str(exc)
        key = next((k for k in entry.lines if f"--{k.replace('_', '-')} " in text), None)
        raise entry.error(key, text) from None


def _ceil_fraction(fraction: float, n: int) -> int:
    """ceil(fraction x n) for the decimal the user wrote (0.05 is 1/20, not the nearest double)."""
    return math.ceil(Fraction(str(fraction)) * n)


def _fits(entry, base: Estimate, at_max: Estimate, headroom: int) -> RuleResult:
    users = at_max.max_concurrent_users or 0
    passed = bool(base.fits) and bool(at_max.fits)
    if not base.fits:
        message = base.verdict
    elif not at_max.fits:  # at_max's figures are after headroom: say so, with the budget before it
        message = (f"{at_max.verdict} (with {fmt_gib(headroom)} headroom the KV budget is "
                   f"{fmt_gib(at_max.kv_budget_bytes)} of the {fmt_gib(base.kv_budget_bytes)} the engine would have)")
    else:
        message = at_max.verdict
    return RuleResult(
        "fits", passed, f"1 request of {at_max.max_model_len:,} tokens", f"{users:,} fit", message,
        entry.requirements.lines.get("must_fit", entry.line),
        {"weights_bytes_per_gpu": base.weights_bytes_per_gpu, "gpu_memory_bytes": base.gpu_memory_bytes,
         "kv_budget_bytes": at_max.kv_budget_bytes, "headroom_bytes": headroom,
         "kv_bytes_per_request_per_gpu": at_max.kv_bytes_per_request_per_gpu,
         "max_concurrent_users": users, "max_context_tokens": at_max.max_context_tokens})


def _supported_len(entry, at_max: Estimate, model_max: int) -> RuleResult:
    passed = at_max.max_model_len <= model_max
    message = (f"max_model_len {at_max.max_model_len:,} is within the model's {model_max:,}" if passed else
               f"max_model_len {at_max.max_model_len:,} exceeds the model's max_position_embeddings {model_max:,}: "
               "vLLM refuses to start (unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)")
    return RuleResult("max_model_len_supported", passed, f"<= {model_max:,} tokens", f"{at_max.max_model_len:,}",
                      message, entry.line_of("max_model_len"),
                      {"max_model_len": at_max.max_model_len, "max_position_embeddings": model_max})


def _users(entry, model, dep, at_max: Estimate, target):
    context = target.context_tokens or at_max.max_model_len
    required = f">= {target.users:,} x {context:,} tokens"
    numbers = {"users": target.users, "context_tokens": context, "max_model_len": at_max.max_model_len}
    if context > at_max.max_model_len:
        return RuleResult("min_concurrent_users", False, required, f"max_model_len {at_max.max_model_len:,}",
                          f"requests of {context:,} tokens exceed max_model_len {at_max.max_model_len:,}: the engine "
                          "rejects them", target.line, numbers | {"max_concurrent_users": 0}), None
    est = _estimate(entry, model, replace(dep, context_tokens=context, batch=target.users))
    users = min(est.max_concurrent_users or 0, est.max_num_seqs)  # the engine never runs more at once
    per_request = est.kv_bytes_per_request_per_gpu
    passed = users >= target.users
    capped = f", capped by max_num_seqs {est.max_num_seqs:,}" if users == est.max_num_seqs else ""
    message = (f"{users:,} requests of {context:,} tokens fit ({fmt_gib(per_request)} KV each per GPU, "
               f"budget {fmt_gib(est.kv_budget_bytes)}{capped})")
    if not passed:
        message = f"only {message}; {target.users:,} required"
    numbers |= {"max_concurrent_users": users, "kv_bytes_per_request_per_gpu": per_request,
                "kv_budget_bytes": est.kv_budget_bytes}
    load = (target.users * per_request, f"{target.users:,} x {context:,} tokens", target.line)
    return RuleResult("min_concurrent_users", passed, required, f"{users:,}", message, target.line, numbers), load


def _min_context(entry, at_max: Estimate, tokens: int) -> RuleResult:
    longest = at_max.max_context_tokens or 0
    passed = longest >= tokens
    if passed:
        message = f"a single request of up to {longest:,} tokens fits"
    elif at_max.max_model_len < tokens:
        message = f"max_model_len {at_max.max_model_len:,} is below the required {tokens:,} tokens"
    else:
        message = f"only {longest:,} tokens fit in the KV budget {fmt_gib(at_max.kv_budget_bytes)} per GPU"
    return RuleResult("min_context_tokens", passed, f">= {tokens:,} tokens", f"{longest:,}", message,
                      entry.requirements.lines["min_context_tokens"],
                      {"min_context_tokens": tokens, "max_context_tokens": longest,
                       "max_model_len": at_max.max_model_len})


def _budget_fraction(entry, at_max: Estimate, loads, limit: float) -> RuleResult:
    budget = at_max.kv_budget_bytes or 0
    load_bytes, what, _ = max(loads, key=lambda x: x[0])
    fraction = load_bytes / budget if budget > 0 else float("inf")
    passed = fraction <= limit
    shown = f"{fraction:.1%}" if budget > 0 else "no KV budget"
    return RuleResult("max_kv_budget_fraction", passed, f"<= {limit:.1%} of the KV budget", shown,
                      f"{what} take {fmt_gib(load_bytes)} of {fmt_gib(budget)} per GPU ({shown})",
                      entry.requirements.lines["max_kv_budget_fraction"],
                      {"load_bytes_per_gpu": load_bytes, "kv_budget_bytes": budget,
                       "fraction": fraction if budget > 0 else None, "max_fraction": limit})


def _gpu_count(entry) -> RuleResult:
    dep = entry.deployment
    passed = dep.num_gpus <= entry.gpu_count
    message = (f"tp x pp = {dep.tp} x {dep.pp} = {dep.num_gpus} GPUs, {entry.gpu_count} requested" +
               ("" if passed else ": the engine cannot start its workers"))
    return RuleResult("gpu_count", passed, f"<= {entry.gpu_count} GPUs", f"{dep.num_gpus}", message,
                      entry.line_of("gpu"), {"gpus_needed": dep.num_gpus, "gpus_requested": entry.gpu_count})
