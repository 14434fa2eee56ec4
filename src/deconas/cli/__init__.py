"""The CLI layer: the only code that knows argparse.

``deconas COMMAND ...`` parses the command line (:mod:`deconas.cli.parser`), and the
command's handler (``deconas.cli.<group>.cmd_<command>``, imported only when it runs, so that
``deconas --help`` is instant) turns the parsed options into typed arguments, calls the domain
function and prints its result. A :class:`~deconas.errors.UserError` becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys

from deconas.cli.parser import build_parser
from deconas.errors import UserError, is_out_of_memory

__all__ = ["build_parser", "main"]


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may stand anywhere, also after options (argparse takes a positional
    # list only once).
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    module, func = args.handler.split(":")
    try:
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except UserError as e:
        print(f"deconas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deconas {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `deconas arch ... | head -1`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (MemoryError, RuntimeError) as e:
        # The last net under every command: memory that ran out (a memory limit, a huge input)
        # is one line, not a traceback. Other RuntimeErrors are bugs and keep their traceback.
        if not is_out_of_memory(e):
            raise
        text = " ".join(str(e).split())
        print(f"deconas {args.command}: error: out of memory ({text[:160] or 'MemoryError'}); "
              f"try smaller inputs, a smaller --tile or data.batch", file=sys.stderr)
        return 2
