"""One place per idea (issue 14): a deployment default is written once, and an import names the module that
defines the name. Both read the source, as tests/test_kinds_everywhere.py does for kind names."""

import ast
import io
import tokenize
from pathlib import Path

from kvplan.plan.deployment import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kvplan"

# Values that are deployment or engine defaults somewhere: the memory fraction, sequences, batched tokens.
DEFAULT_VALUES = {0.9, 256, 2048, 8192, 16384}
# Where they may stand, by file: a fragment of the line, and why it is the one place (or not a default at all).
ALLOWED = {
    "kvplan/plan/deployment.py": {"_setting(0.9,": "Deployment's default, declared once",
                                  "maximum=1 << 16": "a bound, not a default"},
    "kvplan/plan/policies/base.py": {"default_block_size = 16": "the engine-default table of policies without one",
                                     "default_max_num_batched_tokens = 8192": "the same table",
                                     "default_max_num_seqs = 256": "the same table"},
    "kvplan/plan/policies/vllm_defaults.py": {"": "vLLM's published defaults, by release and GPU"},
    "kvplan/plan/policies/transformers.py": {"PAGE_SIZE = 256": "transformers' own default table",
                                             "max_batch_tokens: int = 8192": "the same table"},
    "kvplan/plan/policies/vllm_overhead.py": {"256 * MiB": "bytes, not tokens",
                                              "range(8, 256, 8)": "vLLM's CUDA-graph capture sizes"},
    "kvplan/plan/overhead.py": {"256 * MiB": "bytes, not tokens"},
    "kvplan/plan/estimate.py": {"TABLE_CONTEXTS = (": "the contexts estimate's table shows"},
    "kvplan/model/normalize.py": {'"head_dim": 256': "model config defaults, not deployment ones"},
    "kvplan/model/kinds.py": {"window_tokens: int = 8192": "a chunked-local chunk, a model dimension"},
    "kvplan/simulation/metrics.py": {"max_points: int = 2048": "points kept for a plot"},
    "kvplan/simulation/trace_formats.py": {"_DATES_REMEMBERED = 256": "a parse cache's size, not a setting"},
}
# Literal defaults of a parameter, field or keyword named like a Deployment field, and why each may stay.
SETTING_NAMES = set(SETTINGS)
ALLOWED_LITERALS = {
    "kvplan/model/grouping.py": {"tp: int = 1": "the whole model's layout unless a split is asked for"},
    "kvplan/model/kinds.py": {"tp: int = 1": "the same"},
    "kvplan/model/spec.py": {"tp: int = 1": "the same",
                             'weight_dtype: str = "bf16"': "a checkpoint's storage when its config names none"},
    "kvplan/runtime/kv_pool.py": {"tp: int = 1": "the same"},
    "kvplan/plan/estimate.py": {"replace(dep, tp=1, pp=1)": "one request's bytes on the whole model",
                                "gpu_memory_utilization=1.0": "the budget at the whole GPU, for a note"},
    "kvplan/sweep.py": {"batch=1": "a sweep row is one user"},
    "kvplan/runtime/engine.py": {'kv_dtype: str = "auto"': "the runtime's word for the model's dtype",
                                 "context_tokens: int = 0": "a step's counter"},
}


def sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path.read_text()


def allowed(name: str, text: str, *tables) -> bool:
    return any(fragment in text for table in tables for fragment in table.get(name, {}))


def test_default_values_stand_only_where_they_are_declared():
    found = []
    for name, source in sources():
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):  # numbers in code, not in prose
            if tok.type != tokenize.NUMBER:
                continue
            value = float(tok.string.replace("_", "")) if tok.string[:2].lower() not in ("0x", "0o", "0b") else None
            block = value == 16 and ("block" in tok.line or "page" in tok.line)
            if (value in DEFAULT_VALUES or block) and not allowed(name, tok.line, ALLOWED):
                found.append(f"{name}:{tok.start[0]}: {tok.line.strip()}")
    assert found == [], "a default written a second time: take it from its one place (or allow it, saying why)"


def test_no_literal_default_for_a_deployment_setting():
    found = []
    for name, source in sources():
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            for arg, value in _named_values(node):
                if arg in SETTING_NAMES and isinstance(value, ast.Constant) and value.value is not None:
                    line = lines[value.lineno - 1]
                    if not allowed(name, line, ALLOWED_LITERALS):
                        found.append(f"{name}:{value.lineno}: {line.strip()}")
    assert found == []


def test_every_allowance_is_still_needed():
    """An allowance that matches nothing any more is removed, so the lists stay the exact exceptions."""
    texts = dict(sources())
    for table in (ALLOWED, ALLOWED_LITERALS):
        for name, fragments in table.items():
            for fragment in fragments:
                assert fragment in texts[name], f"{name}: {fragment!r} is gone: drop it from the list"


def _named_values(node):
    """(name, default or value) of a function's parameters, a class's fields and a call's keywords."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = node.args
        positional = a.posonlyargs + a.args
        yield from ((p.arg, d) for p, d in zip(positional[len(positional) - len(a.defaults):], a.defaults))
        yield from ((p.arg, d) for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None)
    elif isinstance(node, ast.ClassDef):
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                yield stmt.target.id, stmt.value
    elif isinstance(node, ast.Call):
        yield from ((k.arg, k.value) for k in node.keywords if k.arg)


def test_imports_name_the_module_that_defines_the_name():
    """`from .a import x` where `a` only imported `x` itself hides where `x` lives; packages' `__init__` re-exports
    (the public API) are the exception."""
    found = []
    for name, source in sources():
        package = Path(name).parent.as_posix().split("/")
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            module = ROOT.joinpath(*base).with_suffix(".py")
            if not module.is_file():  # a package: its __init__ may re-export
                continue
            defined, imported = _top_level_names(module.read_text())
            found += [f"{name}:{node.lineno}: {alias.name} from {'.'.join(base)}" for alias in node.names
                      if alias.name in imported and alias.name not in defined]
    assert found == []


def _top_level_names(source: str) -> tuple[set[str], set[str]]:
    defined, imported = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.update(a.asname or a.name for a in node.names)
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return defined, imported
