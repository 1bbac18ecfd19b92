"""The `vllm serve` containers of a Kubernetes workload (Deployment, StatefulSet, Job, CronJob, Pod).

`$(VAR)` resolves from the container's literal `env` values only (no cluster is consulted). The GPU
type comes from the annotation `kvplan.dev/gpu` or the node selector `nvidia.com/gpu.product` (GPU
feature discovery labels); the GPU count from the container's `nvidia.com/gpu` limits or requests.
"""

import re

from ..errors import InputError
from ..hardware import GPU, find_gpu
from ..inputs import expand
from ..yamlnodes import Y
from .launch import (GPU_ANNOTATION, CommandWords, Launch, annotated_gpu, dig, launch_settings, mappings,
                     server_args, strings)

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
_VAR = re.compile(r"\$?\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_POD_PATHS = (("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec"), ("spec",))


def kubernetes_launches(shown: str, doc: Y) -> list[Launch]:
    """Every container of one manifest document that runs `vllm serve`."""
    workload = dig(doc, ("metadata", "name"))
    workload_name = str(workload.value) if workload is not None else str(doc.value["kind"].value)
    pod = next((p for path in _POD_PATHS if (p := dig(doc, path)) is not None and p.get("containers")), None)
    if pod is None:
        return []
    gpu, gpu_line = _gpu(shown, doc, pod)
    containers = pod.get("containers")
    launches = []
    for c in containers.value if isinstance(containers.value, list) else []:
        if not isinstance(c.value, dict):
            continue
        name = c.get("name")
        cname = f"{workload_name}/{name.value if name is not None else '?'}"
        env = {str(e.get("name").value): str(e.get("value").value) for e in mappings(c.get("env"))
               if e.get("name") is not None and e.get("value") is not None}
        words, line = CommandWords(), c.line
        for key in ("command", "args"):
            y = c.get(key)
            if y is not None:
                for v in strings(shown, y, key):
                    words.add(_expand(shown, v, env), f"{shown}:{v.line}")
                line = y.line
        args = server_args(words, env, c.get("image"), entrypoint=c.get("command"))
        if args is None:
            continue
        launches.append(Launch("container", cname, line, launch_settings(shown, line, args), gpu, gpu_line,
                               _gpu_count(shown, c)))
    return launches


def gpu_from_product(label: str) -> GPU | None:
    """A GPU feature discovery product label (NVIDIA-H100-80GB-HBM3) -> catalog GPU, exact or None."""
    key = label.strip().lower().replace("_", "-").replace(" ", "-")
    for prefix in ("nvidia-", "tesla-"):
        key = key.removeprefix(prefix)
    for candidate in (key, re.sub(r"-(hbm3e?|hbm2e?)$", "", key)):
        try:
            return find_gpu(candidate)
        except InputError:
            continue
    return None


def _gpu(shown: str, doc: Y, pod: Y) -> tuple[GPU | None, int]:
    for meta in (dig(doc, ("metadata", "annotations")), dig(doc, ("spec", "template", "metadata", "annotations"))):
        y = meta.get(GPU_ANNOTATION) if meta is not None else None
        if y is not None:
            return annotated_gpu(shown, str(y.value), y.line), y.line
    product = dig(pod, ("nodeSelector", GPU_PRODUCT_LABEL))
    if product is not None:
        gpu = gpu_from_product(str(product.value))
        if gpu is None:
            raise InputError(f"{shown}:{product.line}: {GPU_PRODUCT_LABEL} {product.value!r} is not in the GPU "
                             f"catalog: add the annotation {GPU_ANNOTATION}: NAME (or gpu_memory in a kvplan file)")
        return gpu, product.line
    return None, 0


def _gpu_count(shown: str, container: Y) -> int | None:
    for section in ("limits", "requests"):
        y = dig(container, ("resources", section, GPU_RESOURCE))
        if y is not None:
            try:
                count = int(str(y.value))
            except ValueError:
                raise InputError(f"{shown}:{y.line}: {GPU_RESOURCE}: expected a GPU count, got {y.value!r}") from None
            return count
    return None


def _expand(shown: str, y: Y, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        if m.group(1) not in env:
            raise InputError(f"{shown}:{y.line}: cannot resolve $({m.group(1)}) from the manifest "
                             "(only literal `env` values are read): write the value")
        return env[m.group(1)]

    return expand(_VAR, sub, str(y.value), f"{shown}:{y.line}")
