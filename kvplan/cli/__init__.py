"""The `kvplan` command line: parse, call the library, render. No arithmetic here.

Each command lives in its own module exposing `register(app)`; COMMANDS lists them in help order.
"""

import errno
import importlib
import os
import sys

import typer

from ..errors import KvplanError
from ..inputs import printable
from ..model.hub.client import one_deadline

COMMANDS = ("estimate", "simulate", "profile", "check", "sweep", "models", "gpus", "explain_log")

app = typer.Typer(
    name="kvplan",
    help=("KV-cache capacity planner and live profiler for LLM serving.\n\n"
          "\b\nExamples:\n"
          "  kvplan estimate                       # Llama-3.1-8B on one H100 (defaults)\n"
          "  kvplan estimate qwen3-32b --gpu A100-80GB --tp 2 --context 32k --batch 16\n"
          "  kvplan estimate examples/qwen3-0.6b/ --gpu L40S --kv-dtype fp8 --format json\n"
          "  kvplan estimate llama-3.1-8b --gpu H100 --engine vllm --max-model-len 32k\n"
          "  kvplan simulate llama-3.1-8b --gpu H100 --requests 1000 --shared-prefix 1000\n"
          "  kvplan profile llama-3.1-8b --random-weights      # on the attached GPU\n"
          "  kvplan check examples/passing.yaml --format junit\n"
          "  kvplan sweep -m llama-3.1-70b,qwen3-32b --gpu H100,L40S --tp 1,2,4 --fits-only\n"
          "  kvplan explain-log examples/vllm-startup.log\n"
          "  kvplan models\n"
          "  kvplan gpus"),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for _name in COMMANDS:
    importlib.import_module(f"{__name__}.{_name}").register(app)


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EFBIG, errno.EDQUOT}  # a full disk, a closed pipe


def _one_line(message: str) -> str:
    """One line even when a library's message (YAML, JSON) spans several; no character a terminal would
    act on (a file name, a key or a Hub header may carry an escape sequence)."""
    return printable(" ".join(part.strip() for part in message.split("\n") if part.strip()))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: KvplanError -> one line on stderr and its exit code."""
    try:
        with one_deadline():  # all the Hub requests of one command share one deadline
            rc = app(args=argv, prog_name="kvplan", standalone_mode=False)
    except KvplanError as exc:
        print(f"kvplan: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kvplan: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except OSError as exc:  # the system refused: a path too long or unsearchable, a full disk, a closed pipe
        if os.environ.get("KVPLAN_DEBUG"):
            raise
        where = (f"{exc.filename}: " if exc.filename is not None
                 else "writing the output: " if exc.errno in _OUTPUT_ERRNOS else "")
        print(f"kvplan: error: {_one_line(where + (exc.strerror or str(exc)))}", file=sys.stderr)
        return 2
    except Exception as exc:  # click usage errors and genuine bugs
        # Typer may use click or its own vendored copy: recognise usage errors by shape.
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            print(f"kvplan: error: {_one_line(exc.format_message())}{hint}", file=sys.stderr)
            return exc.exit_code
        if type(exc).__name__ == "Abort":
            print("kvplan: aborted", file=sys.stderr)
            return 130
        if os.environ.get("KVPLAN_DEBUG"):
            raise
        print(f"kvplan: internal error: {type(exc).__name__}: {_one_line(str(exc))} (set KVPLAN_DEBUG=1 for a "
              "traceback)", file=sys.stderr)
        return 70
    return rc if isinstance(rc, int) else 0


def run() -> None:
    sys.exit(main())
