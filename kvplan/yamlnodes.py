"""The one way kvplan reads YAML: deployment files, manifests, the user config, bundled specs.

Nodes are composed with the safe loader and each value keeps its line. Only plain scalars are
ever constructed (the safe constructor's str/int/float/bool/null/...), so a tag like
`!!python/object` is refused, exactly as `yaml.safe_load` would refuse it. Merge keys
(`<<: *anchor`, common in docker-compose files) are honoured; a key written twice in one mapping
is an error rather than silently the last one.

Aliases: a value used through an alias counts its whole size again each time, so the count of
nodes is what `Y.plain()` or `str()` would materialise ("billion laughs" through lists *or*
mappings), and it is refused past MAX_NODES before anything is expanded. Nesting stops at
MAX_DEPTH, and the file is read through kvplan.inputs (regular file, size limit, UTF-8).
"""

from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor

from .errors import InputError
from .inputs import DEPLOYMENT_YAML, Limit, printable, read_text

try:  # libyaml when present
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

_PLAIN_COLLECTIONS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
MAX_NODES = 200_000  # expanded: aliases can make a small file exponentially large
MAX_DEPTH = 100  # real files nest under 20 levels; the walk recurses once per level


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
    """Relative to the working directory when under it (what CI annotations expect), fit to print."""
    try:
        return printable(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):  # not under it; a cwd gone; a symlink loop (RuntimeError)
        return printable(path)


def read_yaml(path: Path, limit: Limit = DEPLOYMENT_YAML) -> list[Y]:
    """Every document of a YAML file, with lines. Raises InputError naming file:line."""
    shown = display_path(path)
    try:
        text = read_text(path, limit)
    except InputError as exc:
        raise InputError(str(exc).replace(printable(path), shown, 1)) from None
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


def load_yaml(path: Path, limit: Limit) -> list:
    """Every document of a YAML file as plain values (what yaml.safe_load_all gives), within the same bounds."""
    return [doc.plain() for doc in read_yaml(path, limit)]


class _Walker:
    def __init__(self, shown: str):
        self.shown = shown
        self.constructor = SafeConstructor()
        self.count = 0  # nodes as expanded: a mapping reached again through an alias counts its size again
        self.open: set[int] = set()  # nodes on the current path: a recursive alias would never end
        self.walked: dict[int, tuple[dict | list, int]] = {}  # each collection walked once: value, expanded size

    def fail(self, node, message: str) -> InputError:
        return InputError(f"{self.shown}:{node.start_mark.line + 1}: {message}")

    def _counted(self, node, nodes: int) -> None:
        self.count += nodes
        if self.count > MAX_NODES:
            raise self.fail(node, f"more than {MAX_NODES:,} YAML nodes once aliases are expanded "
                                  "(each use of an alias counts its whole value): refusing")

    def walk(self, node, line: int | None = None) -> Y:
        self._counted(node, 1)
        line = line if line is not None else node.start_mark.line + 1
        if id(node) in self.open:
            raise self.fail(node, "recursive YAML alias")
        if len(self.open) >= MAX_DEPTH:
            raise self.fail(node, f"YAML nested deeper than {MAX_DEPTH} levels")
        self.open.add(id(node))
        try:
            if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_COLLECTIONS:
                raise self.fail(node, f"unsupported YAML value (tag {node.tag!r})")
            if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
                return Y(self._scalar(node), line)
            # Once per node (a mapping's flattening of merge keys mutates it); used again through an
            # alias, its value is shared and its expanded size counted again.
            if id(node) in self.walked:
                value, size = self.walked[id(node)]
                self._counted(node, size)
            else:
                before = self.count
                value = self._mapping(node) if isinstance(node, yaml.MappingNode) else [self.walk(i) for i in node.value]
                self.walked[id(node)] = (value, self.count - before)
            return Y(value, line)
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
        value = self._scalar(node)
        return value if isinstance(value, str) else str(value)

    def _scalar(self, node):
        # ValueError: scalars that match a tag's pattern but not its range (2001-13-45, 5,000-digit ints, 0x)
        try:
            return self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise self.fail(node, f"unsupported YAML value ({getattr(exc, 'problem', None) or exc})") from None
