"""Bounded reads of input files, and the plausibility bounds on what they may say.

Every file kvplan reads (a config.json, a deployment YAML, a start-up log, a `--from` script, a
trace, a safetensors header, what an earlier Hub fetch left in the HF cache) is read here:

  * only from a regular file: a FIFO would block, /dev/zero never ends, a directory is no file;
    the type is checked before the file is opened and again on the open descriptor;
  * at most the bytes its kind allows (the table below), checked against the size before reading
    and again while reading, so a file that grows cannot get past it;
  * text as strict UTF-8; JSON no deeper than MAX_JSON_DEPTH (real configs nest 3 or 4 levels;
    deep nesting otherwise ends in a RecursionError far from the input) and no denser in objects
    and arrays than JSON_BYTES_PER_CONTAINER allows (each costs ~70 bytes once parsed);
  * logs and traces line by line, each line at most `max_line_bytes`.

A refusal is one InputError line (exit 2) that names the file and the limit, the name passed through
`printable` (a file name may hold an escape sequence). docs/reliability.md lists each limit with its
reason and its test.
"""

import itertools
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .errors import InputError

KiB = 1 << 10
MiB = 1 << 20


@dataclass(frozen=True)
class Limit:
    what: str  # the kind of input, as the error names it
    max_bytes: int | None  # None: streamed, any length
    max_line_bytes: int | None = None  # for inputs read line by line
    hint: str = ""  # what to do about a file over the limit


# Each is a multiple of the largest real input of its kind. Parsed, JSON within the density bound below
# takes at most ~12x its text (measured: 740 MiB peak for a 32 MiB header), so no read nears 2 GiB.
CONFIG_JSON = Limit("config.json", 4 * MiB)  # real ones: 1-60 KiB
SAFETENSORS_INDEX = Limit("safetensors index", 32 * MiB)  # a 140,000-tensor index is ~14 MiB
SAFETENSORS_HEADER = Limit("safetensors header", 32 * MiB)  # the format allows 100 MB; real shards: KiB to a few MiB
SAFETENSORS_FILE = Limit("safetensors file", None)  # only its header is read
HEADERS_SIDECAR = Limit("kvplan header sidecar", 64 * MiB)  # every header of one fetch (hub.fetch.HEADERS_MAX_BYTES)
DEPLOYMENT_YAML = Limit("deployment or manifest YAML", 4 * MiB)
USER_CONFIG_YAML = Limit("kvplan user config", 1 * MiB)
BUNDLED_SPEC_YAML = Limit("bundled model spec", 1 * MiB)
SERVE_SCRIPT = Limit("`vllm serve` script", 1 * MiB)
# One command line (continuations joined, `$VAR`s expanded): real ones are under 4 KiB. It bounds what
# variables can expand to (A=$B$B, B=$C$C, ... doubles per line) and keeps shlex, ~1 us a character, quick.
MAX_COMMAND_CHARS = 64 * KiB
# The start-up part of a log is under 1 MiB, its longest line (engine config, ServerArgs) ~10 KiB; parsing
# runs at ~4 MiB/s, so 16 MiB stays within seconds.
STARTUP_LOG = Limit("start-up log", 16 * MiB, max_line_bytes=64 * KiB,
                    hint="pass the start-up part of the log (the lines up to `Maximum concurrency`)")
TRACE = Limit("trace", None, max_line_bytes=16 * MiB)  # a 1M-token prompt as token ids is ~8 MiB
HF_CACHE_REF = Limit("HF cache ref", 1 * KiB)  # refs/{revision} holds one 40-hex commit
INTROSPECTION_RECORD = Limit("introspection record", 16 * MiB)  # kvplan's own cache; real ones: KiBs
CGROUP_CPU_FILE = Limit("cgroup CPU quota file", 1 * KiB)  # one line: "max 100000" or a number
PROC_CGROUP_FILE = Limit("process cgroup list", 64 * KiB)  # a line per v1 hierarchy, paths included

MAX_JSON_DEPTH = 64
# Memory: a parsed `{}` or `[]` costs ~70 bytes, so `[{},{},...]` grows 25-fold; real JSON has at most one
# per ~17 bytes (a short-named safetensors tensor), so one per 8 bytes caps the growth near 10-fold.
JSON_BYTES_PER_CONTAINER = 8
MAX_KVPLAN_HEADER_CHARS = 4 * KiB  # a start-up log's `# kvplan: FLAGS` line

# Plausibility bounds on values, checked before any work is sized by them.
MAX_LAYERS = 4096  # the deepest published LLMs have under 200 layers
MAX_TOKENS = 1 << 40  # any length or count of tokens


# What a terminal would act on rather than show: C0 and C1 controls and DEL (ESC starts ANSI sequences,
# CR and BS overwrite, NL forges lines), line and paragraph separators, and the bidirectional
# overrides and isolates that reorder what is shown ("Trojan Source").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match) -> str:
    char = m.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text) -> str:
    """`text` with every character a terminal would act on written as its escape (`\\x1b`, `\\u202e`)."""
    return _UNPRINTABLE.sub(_escape, str(text))


def _size_text(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n:,} bytes"


def too_large(where: str, limit: Limit, size: int | None = None) -> InputError:
    has = f"{size:,} bytes, " if size is not None else ""
    hint = f"; {limit.hint}" if limit.hint else ""
    return InputError(f"{printable(where)}: {has}over kvplan's {_size_text(limit.max_bytes)} limit for a {limit.what}{hint}")


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path, mode: int, limit: Limit) -> InputError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return InputError(f"{printable(path)}: is {kind}; kvplan reads a {limit.what} only from a regular file")


def open_regular(path: str | os.PathLike, limit: Limit) -> BinaryIO:
    """The file opened for binary reading, if it is a regular file within `limit.max_bytes`."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # before open(): opening a FIFO waits for a writer
            raise _not_regular(path, mode, limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"{printable(path)}: cannot read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)  # the file opened may not be the one stat() saw
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path, info.st_mode, limit)
        if limit.max_bytes is not None and info.st_size > limit.max_bytes:
            raise too_large(str(path), limit, info.st_size)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, limit: Limit) -> bytes:
    with open_regular(path, limit) as f:
        try:
            data = f.read(limit.max_bytes + 1)
        except OSError as exc:
            raise InputError(f"{printable(path)}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit.max_bytes:  # it grew after fstat, or reports no size (/proc)
        raise too_large(str(path), limit)
    return data


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{printable(where)}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start:,})") from None


def read_text(path: str | os.PathLike, limit: Limit) -> str:
    return decode_utf8(read_bytes(path, limit), str(path))


def parse_json(data: str | bytes, where: str):
    """JSON text -> value; malformed, non-UTF-8, too deeply nested or too dense input is one InputError naming `where`."""
    if isinstance(data, bytes):
        raw, data = data, decode_utf8(data, where)
    else:
        raw = data.encode("utf-8", "surrogatepass")
    containers = raw.count(b"[") + raw.count(b"{")  # brackets in strings count too: a bound, not a tally
    if containers > len(raw) // JSON_BYTES_PER_CONTAINER + MAX_JSON_DEPTH:
        raise InputError(f"{printable(where)}: JSON with more than one object or array per {JSON_BYTES_PER_CONTAINER} bytes "
                         f"({containers:,} in {len(raw):,} bytes); kvplan refuses it rather than build them all")
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise InputError(f"{printable(where)}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise InputError(f"{printable(where)}: not valid JSON ({exc})") from None
    except RecursionError:  # json's own guard against deep nesting
        raise InputError(f"{printable(where)}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if containers > MAX_JSON_DEPTH and _nesting(raw) > MAX_JSON_DEPTH:
        raise InputError(f"{printable(where)}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


# On the UTF-8 bytes, not the str: `"` and `\` never occur inside a multi-byte character, and bytes
# regexes and translate are C loops over bytes (32 MiB of `[]     ,` took 5 s as str, 0.1 s as bytes).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(range(0x100)).translate(None, b"[]{}")  # every byte value but the four


def _nesting(text: bytes) -> int:
    """How deep valid JSON text nests (past MAX_JSON_DEPTH: MAX_JSON_DEPTH + 1), in C-speed passes over the
    brackets alone: each pass removes the innermost pairs. Walking the parsed value instead costs seconds
    on millions of empty objects."""
    brackets = _JSON_STRING.sub(b"", text).translate(None, _NOT_BRACKETS).replace(b"{", b"[").replace(b"}", b"]")
    for depth in range(MAX_JSON_DEPTH + 1):
        if not brackets:
            return depth
        brackets = brackets.replace(b"[]", b"")
    return MAX_JSON_DEPTH + 1


def read_json(path: str | os.PathLike, limit: Limit):
    return parse_json(read_bytes(path, limit), str(path))


def read_lines(path: str | os.PathLike, limit: Limit, errors: str = "strict") -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, streamed; `errors="replace"` for logs, where a stray byte is noise."""
    with open_regular(path, limit) as f:
        total = 0
        for lineno in itertools.count(1):
            try:
                raw = f.readline(limit.max_line_bytes + 1)
            except OSError as exc:
                raise InputError(f"{printable(path)}: cannot read ({exc.strerror or exc})") from None
            if not raw:
                return
            total += len(raw)
            if len(raw) > limit.max_line_bytes:
                raise InputError(f"{printable(path)}:{lineno}: line longer than kvplan's {_size_text(limit.max_line_bytes)} "
                                 f"limit for a line of a {limit.what}")
            if limit.max_bytes is not None and total > limit.max_bytes:
                raise too_large(str(path), limit)
            if errors == "strict":
                yield lineno, decode_utf8(raw, f"{path}:{lineno}")
            else:
                yield lineno, raw.decode("utf-8", errors)


def expand(pattern: re.Pattern, value_of: Callable[[re.Match], str], text: str, where: str) -> str:
    """`pattern.sub(value_of, text)`, refused as soon as the result outgrows MAX_COMMAND_CHARS."""
    grown = len(check_command(text, where))

    def sub(m: re.Match) -> str:
        nonlocal grown
        value = value_of(m)
        grown += len(value) - len(m.group(0))
        if grown > MAX_COMMAND_CHARS:
            raise InputError(f"{printable(where)}: {text[:40]!r} expands past kvplan's {MAX_COMMAND_CHARS:,}-character limit "
                             "for a command line")
        return value

    return pattern.sub(sub, text)


def check_command(text: str, where: str, max_chars: int = MAX_COMMAND_CHARS) -> str:
    if len(text) > max_chars:
        raise InputError(f"{printable(where)}: a command line of {len(text):,} characters is over kvplan's "
                         f"{max_chars:,}-character limit")
    return text


def check_layers(layers: int, what: str) -> int:
    """A layer count, before anything is built per layer (a per-layer list of 2**31 is minutes and GiBs)."""
    if layers > MAX_LAYERS:
        raise InputError(f"{what}={layers:,} is above kvplan's limit of {MAX_LAYERS:,} layers "
                         "(the deepest published LLMs have under 200)")
    return layers
