"""YAML with line numbers: compose nodes with the safe loader and keep each value's line.

Only plain scalars are ever constructed (the safe constructor's str/int/float/bool/null/...),
so a tag like `!!python/object` is refused, exactly as `yaml.safe_load` would refuse it.
Merge keys (`<<: *anchor`, common in docker-compose files) are honoured; a key written twice
in one mapping is an error rather than silently the last one.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor

from .errors import InputError

try:  # libyaml when present
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

_PLAIN_COLLECTIONS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
MAX_NODES = 200_000  # aliases can expand a small file exponentially ("billion laughs")


@dataclass(frozen=True)
class Y:
    """A YAML value with the 1-based line it starts on (a mapping value: the line of its key)."""

    value: object  # dict[str, Y] | list[Y] | str | int | float | bool | None
    line: int

    def get(self, key: str) -> "Y | None":
        return self.value.get(key) if isinstance(self.value, dict) else None

    def plain(self):
        """The value without lines, as yaml.safe_load would return it."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


def display_path(path: Path) -> str:
    """Relative to the working directory when under it (what CI annotations expect)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_yaml(path: Path) -> list[Y]:
    """Every document of a YAML file, with lines. Raises InputError naming file:line."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{shown}: not UTF-8 text") from None
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{shown}{line}: malformed YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{shown}: malformed YAML: {exc}") from None
    walker = _Walker(shown)
    return [walker.walk(n) for n in nodes if n is not None]


class _Walker:
    def __init__(self, shown: str):
        self.shown = shown
        self.constructor = SafeConstructor()
        self.count = 0
        self.open: set[int] = set()  # nodes on the current path: a recursive alias would never end
        self.mappings: dict[int, dict] = {}  # an aliased mapping is walked once (flattening mutates it)

    def fail(self, node, message: str) -> InputError:
        return InputError(f"{self.shown}:{node.start_mark.line + 1}: {message}")

    def walk(self, node, line: int | None = None) -> Y:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, f"more than {MAX_NODES:,} YAML nodes (alias expansion?): refusing")
        line = line if line is not None else node.start_mark.line + 1
        if id(node) in self.open:
            raise self.fail(node, "recursive YAML alias")
        self.open.add(id(node))
        try:
            if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_COLLECTIONS:
                raise self.fail(node, f"unsupported YAML value (tag {node.tag!r})")
            if isinstance(node, yaml.MappingNode):
                if id(node) not in self.mappings:
                    self.mappings[id(node)] = self._mapping(node)
                return Y(self.mappings[id(node)], line)
            if isinstance(node, yaml.SequenceNode):
                return Y([self.walk(item) for item in node.value], line)
            try:
                return Y(self.constructor.construct_object(node), line)
            except yaml.YAMLError as exc:
                raise self.fail(node, f"unsupported YAML value ({getattr(exc, 'problem', None) or exc})") from None
        finally:
            self.open.discard(id(node))

    def _mapping(self, node) -> dict:
        own: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._key(key_node)
            if key in own:
                raise self.fail(key_node, f"key {key!r} given twice (first on line {own[key]})")
            own[key] = key_node.start_mark.line + 1
        try:
            self.constructor.flatten_mapping(node)  # merged keys first, own keys after: own ones win
        except yaml.YAMLError as exc:
            raise self.fail(node, f"bad merge key ({getattr(exc, 'problem', None) or exc})") from None
        out: dict[str, Y] = {}
        for key_node, value_node in node.value:
            out[self._key(key_node)] = self.walk(value_node, key_node.start_mark.line + 1)
        return out

    def _key(self, node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, "a mapping key must be a plain scalar")
        value = self.constructor.construct_object(node)
        return value if isinstance(value, str) else str(value)
