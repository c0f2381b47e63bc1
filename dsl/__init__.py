"""The .chronos spec language: a lark grammar and a parser to ``chronos.spec.ProblemSpec``."""

from .parser import parse, parse_file

__all__ = ["parse", "parse_file"]
