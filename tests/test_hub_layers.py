"""The hub package: one mechanism per module, no import cycle with the loaders, nothing online loaded offline."""

import ast
import subprocess
import sys
from pathlib import Path

HUB = Path(__file__).resolve().parents[1] / "kvplan" / "model" / "hub"


def test_the_hub_imports_nothing_that_imports_it():
    for path in HUB.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = "." * node.level + (node.module or "")
                assert target not in ("..", "..loaders", "...model", "kvplan.model", "kvplan.model.loaders"), \
                    f"{path.name} imports {target}: the loaders import the hub, not the other way"


def test_offline_lookups_load_no_http():
    code = ("import sys; import kvplan.model.hub as hub; hub.cached_snapshot('acme/x'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('huggingface_hub', 'httpx', 'httpx2') "
            "or m in ('concurrent.futures', 'kvplan.model.hub.client', 'kvplan.model.hub.fetch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
