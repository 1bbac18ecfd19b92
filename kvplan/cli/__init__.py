"""The `kvplan` command line: parse, call the library, render. No arithmetic here.

Each command lives in its own module exposing `register(app)`; COMMANDS lists them in help order.
"""

import importlib
import os
import sys

import typer

from ..errors import KvplanError

COMMANDS = ("estimate", "simulate", "profile", "check", "sweep", "models", "gpus", "explain_log")

app = typer.Typer(
    name="kvplan",
    help=("KV-cache capacity planner and live profiler for LLM serving.\n\n"
          "\b\nExamples:\n"
          "  kvplan estimate                       # Llama-3.1-8B on one H100 (defaults)\n"
          "  kvplan estimate qwen3-32b --gpu A100-80GB --tp 2 --context 32k --batch 16\n"
          "  kvplan estimate ./my-model/ --gpu L40S --kv-dtype fp8 --format json\n"
          "  kvplan estimate llama-3.1-8b --gpu H100 --engine vllm --max-model-len 32k\n"
          "  kvplan simulate llama-3.1-8b --gpu H100 --requests 1000 --shared-prefix 1000\n"
          "  kvplan profile llama-3.1-8b --random-weights      # on the attached GPU\n"
          "  kvplan check examples/passing.yaml --format junit\n"
          "  kvplan sweep -m llama-3.1-70b,qwen3-32b --gpu H100,L40S --tp 1,2,4 --fits-only\n"
          "  kvplan explain-log vllm-startup.log\n"
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


def main(argv: list[str] | None = None) -> int:
    """Console entry point: KvplanError -> one line on stderr and its exit code."""
    try:
        rc = app(args=argv, prog_name="kvplan", standalone_mode=False)
    except KvplanError as exc:
        # one line even when a library's message (YAML, JSON) spans several
        message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        print(f"kvplan: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kvplan: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except Exception as exc:  # click usage errors and genuine bugs
        # Typer may use click or its own vendored copy: recognise usage errors by shape.
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            print(f"kvplan: error: {exc.format_message()}{hint}", file=sys.stderr)
            return exc.exit_code
        if type(exc).__name__ == "Abort":
            print("kvplan: aborted", file=sys.stderr)
            return 130
        if os.environ.get("KVPLAN_DEBUG"):
            raise
        print(f"kvplan: internal error: {type(exc).__name__}: {exc} (set KVPLAN_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 70
    return rc if isinstance(rc, int) else 0


def run() -> None:
    sys.exit(main())
