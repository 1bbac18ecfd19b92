"""A container or service that runs `vllm serve`, as a manifest says it (`Launch`), and the pieces the
Kubernetes and docker-compose readers share to build one: the bounded word list of its command, the
`kvplan.dev/gpu` annotation, and walks over YAML nodes that keep their lines."""

from dataclasses import dataclass

from ..errors import InputError
from ..hardware import GPU, find_gpu
from ..inputs import MAX_COMMAND_CHARS
from ..yamlnodes import Y
from .serve_command import Settings, is_vllm_server_image, serve_args, settings_from_argv

GPU_ANNOTATION = "kvplan.dev/gpu"


@dataclass(frozen=True)
class Launch:
    kind: str  # "container" (Kubernetes) or "service" (compose)
    name: str  # workload/container, or the service name
    line: int
    settings: Settings
    gpu: GPU | None
    gpu_line: int
    gpu_count: int | None


class CommandWords(list):
    """A command's words, refused as soon as they outgrow one command line (an alias can repeat a long one)."""

    chars = 0

    def add(self, word: str, where: str) -> None:
        self.chars += len(word) + 1
        if self.chars > MAX_COMMAND_CHARS:
            raise InputError(f"{where}: the command's words come to over kvplan's {MAX_COMMAND_CHARS:,}-character "
                             "limit for a command line")
        self.append(word)


def server_args(words: CommandWords, env: dict[str, str], image: Y | None, entrypoint: Y | None) -> list[str] | None:
    """The `vllm serve` arguments of a container: from its command, or, where it keeps the image's
    entrypoint and the image is vLLM's server, its words are that server's arguments."""
    args = serve_args(words, env)
    if args is None and entrypoint is None and image is not None and is_vllm_server_image(str(image.value)):
        return words
    return args


def launch_settings(shown: str, line: int, args: list[str]) -> Settings:
    try:
        return settings_from_argv(args)
    except InputError as exc:
        raise InputError(f"{shown}:{line}: {exc}") from None


def annotated_gpu(shown: str, value: str, line: int) -> GPU:
    """The GPU a `kvplan.dev/gpu` annotation or label names."""
    try:
        return find_gpu(value)
    except InputError as exc:
        raise InputError(f"{shown}:{line}: {GPU_ANNOTATION}: {str(exc).split(' (known:')[0]}") from None


def dig(y: Y | None, path: tuple[str, ...]) -> Y | None:
    for key in path:
        if y is None:
            return None
        y = y.get(key)
    return y


def mappings(y: Y | None) -> list[Y]:
    """The mappings in a YAML list (other items, and anything not a list, give none)."""
    return [i for i in y.value if isinstance(i.value, dict)] if y is not None and isinstance(y.value, list) else []


def strings(shown: str, y: Y, key: str) -> list[Y]:
    """A string or a list of strings; anything else is refused naming its line."""
    items = y.value if isinstance(y.value, list) else [y]
    for item in items:
        if isinstance(item.value, (dict, list)) or item.value is None:
            raise InputError(f"{shown}:{item.line}: {key}: expected strings")
    return items
