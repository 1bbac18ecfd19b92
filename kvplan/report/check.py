"""Render a CheckReport: rich table, JSON (docs/check.md), JUnit XML, markdown, GitHub annotations."""

import json
import xml.etree.ElementTree as ET

from ..check import CheckReport, DeploymentResult
from ..units import fmt_gib
from .common import check_format, console, md_table

CHECK_FORMATS = ("table", "json", "junit", "markdown", "github")
JSON_VERSION = 1


def render_check(report: CheckReport, fmt: str = "table") -> str | None:
    """The report as text in a document format, or None after printing the rich table."""
    fmt = check_format(fmt, CHECK_FORMATS)
    if fmt == "table":
        _rich(report)
        return None
    if fmt == "json":
        return json.dumps(to_json(report), indent=2, allow_nan=False) + "\n"
    if fmt == "junit":
        return junit(report)
    if fmt == "markdown":
        return markdown(report) + "\n"
    return github(report)


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


def junit(report: CheckReport) -> str:
    """One testsuite per deployment, one testcase per rule, a <failure> for each failed rule."""
    root = ET.Element("testsuites", name="kvplan check", tests=str(report.num_rules),
                      failures=str(report.num_failed), errors="0", skipped="0", time="0")
    for r in report.results:
        e = r.entry
        failed = sum(not x.passed for x in r.rules)
        suite = ET.SubElement(root, "testsuite", name=f"{e.file}:{e.name}", tests=str(len(r.rules)),
                              failures=str(failed), errors="0", skipped="0", time="0", file=e.file)
        props = ET.SubElement(suite, "properties")
        for key, value in (("model", r.estimate.model), ("gpu", r.estimate.gpu),
                           ("tp", r.estimate.deployment["tp"]), ("pp", r.estimate.deployment["pp"]),
                           ("max_model_len", r.estimate.max_model_len), ("kv_dtype", r.estimate.kv_dtype),
                           ("engine", r.estimate.engine), ("kv_budget_bytes", r.estimate.kv_budget_bytes)):
            ET.SubElement(props, "property", name=key, value=str(value))
        for x in r.rules:
            case = ET.SubElement(suite, "testcase", name=x.rule, classname=f"kvplan.check.{e.name}",
                                 file=e.file, line=str(x.line), time="0")
            if not x.passed:
                failure = ET.SubElement(case, "failure", message=x.message, type="kvplan.rule")
                failure.text = "\n".join([f"required: {x.required}", f"actual: {x.actual}"] +
                                         [f"{k}: {v}" for k, v in x.numbers.items()])
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def markdown(report: CheckReport) -> str:
    status = "passed" if report.passed else "FAILED"
    s = _summary(report)
    lines = [f"## kvplan check: {status}", "",
             f"{s['deployments']} deployment(s), {s['rules']} rule(s), {s['failed']} failed.", ""]
    rows = []
    for r in report.results:
        for x in r.rules:
            rows.append([f"`{r.entry.name}`", x.rule, "pass" if x.passed else "**FAIL**", x.required, x.actual,
                         x.message.replace("|", "\\|")])
    lines.append(md_table(["deployment", "rule", "result", "required", "actual", "why"], rows))
    lines += ["", md_table(["deployment", "file", "model", "GPU", "tp x pp", "max_model_len", "KV budget / GPU",
                            "headroom", "users @ max_model_len"],
                           [[f"`{r.entry.name}`", f"{r.entry.file}:{r.entry.line}", r.estimate.model,
                             r.estimate.gpu, f"{r.estimate.deployment['tp']} x {r.estimate.deployment['pp']}",
                             f"{r.estimate.max_model_len:,}", fmt_gib(r.estimate.kv_budget_bytes),
                             fmt_gib(r.headroom_bytes), f"{r.estimate.max_concurrent_users or 0:,}"]
                            for r in report.results])]
    for r in report.results:
        if r.entry.ignored_flags:
            lines.append(f"\n> `{r.entry.name}`: vllm flags not modelled: {' '.join(r.entry.ignored_flags)}")
    lines.append("\nGiB = 2^30 bytes.")
    return "\n".join(lines)


def github(report: CheckReport) -> str:
    """Workflow commands: an error annotation per failed rule, then one summary line."""
    out = []
    for r in report.results:
        for x in r.rules:
            if not x.passed:
                title = _escape_property(f"kvplan check: {r.entry.name}: {x.rule}")
                out.append(f"::error file={_escape_property(r.entry.file)},line={x.line},title={title}::"
                           f"{_escape_data(f'{x.message} (required {x.required}, actual {x.actual})')}")
    s = _summary(report)
    out.append(f"kvplan check: {'passed' if report.passed else 'FAILED'}: {s['deployments']} deployment(s), "
               f"{s['rules']} rule(s), {s['failed']} failed")
    return "\n".join(out) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _rich(report: CheckReport) -> None:
    from rich.table import Table

    out = console()
    t = Table(title="kvplan check", title_justify="left")
    for col in ("deployment", "rule", "result", "required", "actual"):
        t.add_column(col, no_wrap=col in ("rule", "result"), overflow="fold")
    t.add_column("why", ratio=1, overflow="fold")
    for r in report.results:
        for i, x in enumerate(r.rules):
            result = "[green]pass[/green]" if x.passed else "[bold red]FAIL[/bold red]"
            t.add_row(f"{r.entry.name}\n[dim]{r.entry.file}:{r.entry.line}[/dim]" if i == 0 else "", x.rule, result,
                      x.required, x.actual, x.message, end_section=i == len(r.rules) - 1)
    out.print(t)
    for r in report.results:
        e = r.estimate
        out.print(f"[cyan]{r.entry.name}[/cyan]: {e.model} on {e.gpu} (tp={e.deployment['tp']}, "
                  f"pp={e.deployment['pp']}, engine {e.engine}), KV budget {fmt_gib(e.kv_budget_bytes)} per GPU"
                  + (f" after {fmt_gib(r.headroom_bytes)} headroom" if r.headroom_bytes else ""))
        if r.entry.ignored_flags:
            out.print(f"[dim]  vllm flags not modelled: {' '.join(r.entry.ignored_flags)}[/dim]")
    s = _summary(report)
    style = "bold green" if report.passed else "bold red"
    out.print(f"[{style}]{'passed' if report.passed else 'FAILED'}[/{style}]: {s['deployments']} deployment(s), "
              f"{s['rules']} rule(s), {s['failed']} failed")
    out.print("[dim]GiB = 2^30 bytes[/dim]")
