"""A CheckReport as a Report: a row per rule, a row per deployment, a suite of cases per deployment
(JUnit, GitHub annotations); JSON as docs/check.md documents it."""

from dataclasses import dataclass

from ..check import CheckReport, DeploymentResult
from ..units import fmt_gib
from .document import ID, TEXT, Case, Line, Report, Suite, Table, col
from .formats import emit, render_text

CHECK_FORMATS = ("table", "json", "junit", "markdown", "github")
JSON_VERSION = 1


def _result_style(passed: bool) -> str:
    return "ok" if passed else "fail"


@dataclass(frozen=True)
class RuleRow:
    deployment: str = col("deployment", kind=ID, code=True)
    rule: str = col("rule", kind=ID)
    passed: bool = col("result", kind=ID, show=lambda p: "pass" if p else "FAIL", style=_result_style)
    required: str = col("required", kind=TEXT, drop=1)  # `why` says both again
    actual: str = col("actual", kind=TEXT, drop=1)
    why: str = col("why", kind=TEXT)


@dataclass(frozen=True)
class DeploymentRow:
    deployment: str = col("deployment", kind=ID, code=True)
    where: str = col("file", kind=ID, drop=3)
    model: str = col("model", kind=ID)
    gpu: str = col("GPU", kind=ID)
    gpus: str = col("tp x pp", kind=ID)
    max_model_len: int = col("max_model_len", drop=2)
    kv_budget_bytes: int | None = col("KV budget / GPU", show=fmt_gib)
    headroom_bytes: int = col("headroom", show=fmt_gib, drop=1)
    max_concurrent_users: int | None = col("users @ max_model_len", show=lambda n: f"{n or 0:,}")


def render_check(report: CheckReport, fmt: str = "table") -> str | None:
    """The report as text in a document format, or None after printing the rich table."""
    if fmt == "table":
        emit(check_report(report), fmt)
        return None
    return render_text(check_report(report), fmt)


def markdown(report: CheckReport) -> str:
    """The markdown report without its final newline (what GitHub step summaries receive)."""
    return render_text(check_report(report), "markdown").rstrip("\n")


def check_report(report: CheckReport) -> Report:
    s = _summary(report)
    status = "passed" if report.passed else "FAILED"
    counts = f"{s['deployments']} deployment(s), {s['rules']} rule(s), {s['failed']} failed"
    rules = [RuleRow(r.entry.name, x.rule, x.passed, x.required, x.actual, x.message)
             for r in report.results for x in r.rules]
    deployments = [DeploymentRow(r.entry.name, f"{r.entry.file}:{r.entry.line}", r.estimate.model, r.estimate.gpu,
                                 f"{r.estimate.deployment['tp']} x {r.estimate.deployment['pp']}",
                                 r.estimate.max_model_len, r.estimate.kv_budget_bytes, r.headroom_bytes,
                                 r.estimate.max_concurrent_users) for r in report.results]
    blocks = [Line(f"kvplan check: {status}", "title"),
              Table(RuleRow, rules, group="deployment"), Table(DeploymentRow, deployments)]
    blocks += [Line(f"{r.entry.name}: vllm flags not modelled: {' '.join(r.entry.ignored_flags)}", "note")
               for r in report.results if r.entry.ignored_flags]
    blocks += [Line(counts + ".", _result_style(report.passed), label=f"{status}:"),
               Line("GiB = 2^30 bytes", "dim")]
    return Report("kvplan check", CHECK_FORMATS, blocks, data=to_json(report), suites=tuple(_suite(r) for r in report.results),
                  summary=f"kvplan check: {status}: {counts}")


def to_json(report: CheckReport) -> dict:
    return {
        "kvplan_check_version": JSON_VERSION,
        "passed": report.passed,
        "summary": _summary(report),
        "deployments": [_deployment_json(r) for r in report.results],
    }


def _summary(report: CheckReport) -> dict:
    return {"deployments": len(report.results), "rules": report.num_rules, "failed": report.num_failed,
            "deployments_failed": sum(not r.passed for r in report.results)}


def _deployment_json(r: DeploymentResult) -> dict:
    e, est = r.entry, r.estimate
    dep = est.deployment
    return {
        "name": e.name, "file": e.file, "line": e.line, "passed": r.passed,
        "model": est.model, "gpu": est.gpu, "gpu_memory_bytes": est.gpu_memory_bytes, "tp": dep["tp"],
        "pp": dep["pp"], "engine": est.engine, "engine_version": est.engine_version,
        "weights_dtype": est.weights_dtype, "kv_dtype": est.kv_dtype, "max_model_len": est.max_model_len,
        "block_size": est.block_size, "gpu_memory_utilization": dep["gpu_memory_utilization"],
        "weights_bytes_per_gpu": est.weights_bytes_per_gpu,
        "kv_budget_bytes_before_headroom": r.kv_budget_bytes_before_headroom, "headroom_bytes": r.headroom_bytes,
        "kv_budget_bytes": est.kv_budget_bytes, "num_blocks": est.num_blocks, "kv_cache_tokens": est.kv_cache_tokens,
        "kv_bytes_per_token_per_gpu": est.kv_bytes_per_token_per_gpu,
        "kv_bytes_per_request_per_gpu": est.kv_bytes_per_request_per_gpu,
        "max_concurrent_users": est.max_concurrent_users, "max_context_tokens": est.max_context_tokens,
        "gpu_count": e.gpu_count, "ignored_flags": list(e.ignored_flags), "notes": list(est.notes),
        "rules": [{"rule": x.rule, "passed": x.passed, "required": x.required, "actual": x.actual,
                   "message": x.message, "line": x.line, "numbers": x.numbers} for x in r.rules],
    }


def _suite(r: DeploymentResult) -> Suite:
    e, est = r.entry, r.estimate
    properties = (("model", est.model), ("gpu", est.gpu), ("tp", est.deployment["tp"]), ("pp", est.deployment["pp"]),
                  ("max_model_len", est.max_model_len), ("kv_dtype", est.kv_dtype), ("engine", est.engine),
                  ("kv_budget_bytes", est.kv_budget_bytes))
    cases = tuple(Case(x.rule, f"kvplan.check.{e.name}", e.file, x.line, x.passed, x.message,
                       details=(f"required: {x.required}", f"actual: {x.actual}",
                                *(f"{k}: {v}" for k, v in x.numbers.items())),
                       title=f"kvplan check: {e.name}: {x.rule}", context=f"required {x.required}, actual {x.actual}")
                  for x in r.rules)
    return Suite(f"{e.file}:{e.name}", e.file, properties, cases)
