"""Real text nobody on the team wrote: the installed Python standard library.

* :func:`prose_paragraphs` — docstring paragraphs of a fixed list of modules (the haystack
  for needle, two-hop and variable-tracking tasks);
* :func:`source_files` — the source of a fixed list of pure-Python modules (the tool
  outputs of the agentic code-QA task).

Both are deterministic for a given Python version (the version is recorded with results).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Iterator

__all__ = ["PROSE_MODULES", "SOURCE_MODULES", "prose_paragraphs", "source_files"]

PROSE_MODULES = (
    "argparse", "asyncio", "collections", "concurrent.futures", "contextlib", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "email.message", "enum", "fractions", "functools", "gettext",
    "heapq", "http.client", "inspect", "ipaddress", "itertools", "json", "logging", "mailbox",
    "multiprocessing", "os", "pathlib", "pickle", "pprint", "queue", "random", "re", "sched",
    "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "tokenize", "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)

SOURCE_MODULES = (
    "textwrap", "shlex", "fnmatch", "glob", "heapq", "bisect", "base64", "calendar", "csv", "gettext",
    "difflib", "filecmp", "getopt", "netrc", "pprint", "quopri", "sched", "statistics", "tabnanny",
    "zipapp", "string", "numbers", "operator", "secrets", "colorsys", "configparser", "ftplib",
    "smtplib", "mailbox", "plistlib", "wave", "tarfile", "zipfile", "shutil", "tempfile", "locale",
)

_MIN_WORDS = 12
_WORD = re.compile(r"[A-Za-z]{2,}")


def _docstrings(module: object) -> Iterator[str]:
    seen: set[int] = set()
    doc = inspect.getdoc(module)
    if doc:
        yield doc
    for _, member in sorted(vars(module).items()):
        if getattr(member, "__module__", None) != getattr(module, "__name__", None) or id(member) in seen:
            continue
        seen.add(id(member))
        if not (inspect.isclass(member) or inspect.isfunction(member)):
            continue
        if doc := inspect.getdoc(member):
            yield doc
        if inspect.isclass(member):
            for _, attr in sorted(vars(member).items()):
                if inspect.isfunction(attr) and (doc := inspect.getdoc(attr)):
                    yield doc


def _is_prose(paragraph: str) -> bool:
    """Mostly words, no doctest / code lines: a paragraph a reader would call text."""
    if ">>>" in paragraph or "::" in paragraph or paragraph.lstrip().startswith(("-", "*", "|")):
        return False
    words = paragraph.split()
    if len(words) < _MIN_WORDS:
        return False
    return len(_WORD.findall(paragraph)) >= 0.7 * len(words)


@functools.lru_cache(maxsize=1)
def prose_paragraphs() -> tuple[str, ...]:
    """Unique prose paragraphs (lines re-joined) from the docstrings of :data:`PROSE_MODULES`."""
    out: dict[str, None] = {}
    for name in PROSE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for doc in _docstrings(module):
            for block in re.split(r"\n\s*\n", doc):
                paragraph = " ".join(block.split())
                if _is_prose(paragraph):
                    out.setdefault(paragraph, None)
    return tuple(out)


@functools.lru_cache(maxsize=1)
def source_files() -> tuple[tuple[str, str], ...]:
    """``(module name, source text)`` of every importable module in :data:`SOURCE_MODULES`."""
    files = []
    for name in SOURCE_MODULES:
        try:
            files.append((name, inspect.getsource(importlib.import_module(name))))
        except (ImportError, OSError, TypeError):
            continue
    return tuple(files)
