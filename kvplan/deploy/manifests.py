"""Which kind of file a deployment YAML is, and the `vllm serve` launches of a manifest, read from the
file alone (no cluster, no shell, no environment): Kubernetes workloads in `kubernetes.py`,
docker-compose services in `compose.py`.
"""

from pathlib import Path

from ..errors import InputError
from ..yamlnodes import Y, display_path, read_yaml
from .compose import compose_launches
from .kubernetes import kubernetes_launches
from .launch import Launch


def is_manifest(docs: list[Y]) -> bool:
    return any(isinstance(d.value, dict) and (("apiVersion" in d.value and "kind" in d.value) or "services" in d.value)
               for d in docs)


def vllm_launches(path: Path, docs: list[Y]) -> list[Launch]:
    """Every container / service in the file that runs `vllm serve`."""
    shown = display_path(path)
    launches: list[Launch] = []
    for doc in docs:
        if not isinstance(doc.value, dict):
            continue
        if "services" in doc.value:
            launches += compose_launches(shown, doc.value["services"])
        elif "kind" in doc.value:
            launches += kubernetes_launches(shown, doc)
    if not launches:
        raise InputError(f"{shown}: no container or service in it runs `vllm serve`")
    return launches


def select_launch(path: Path, container: str | None, fail) -> Launch:
    """The launch a deployment entry points at; `fail(message)` builds the error to raise."""
    try:
        launches = vllm_launches(path, read_yaml(path))
    except InputError as exc:
        raise fail(str(exc)) from None
    if container is not None:
        chosen = [la for la in launches if container in (la.name, la.name.rsplit("/", 1)[-1])]
        if not chosen:
            raise fail(f"no `vllm serve` container named {container!r} in it "
                       f"(found: {', '.join(la.name for la in launches)})")
        launches = chosen
    if len(launches) > 1:
        raise fail(f"several `vllm serve` containers in it ({', '.join(la.name for la in launches)}): "
                   "add `container: NAME`")
    return launches[0]
