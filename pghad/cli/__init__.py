"""The `pghad` command line: the parser in parser.py, the commands beside it."""

from pghad.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
