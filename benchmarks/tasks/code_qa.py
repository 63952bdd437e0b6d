"""Agentic code QA: an agent read several real stdlib source files through a tool.

Segments: a (protected) system prompt, then per file a short assistant tool call
``read_file(path, start_line, end_line)`` and the tool output (a window of about
``n_tokens / n_files`` tokens of the file; the asked function's window puts its ``def`` at
a random depth).  The question
asks the default value of a parameter of a function defined in one of them; the evidence
is that function's ``def`` line (one line, unique in the whole context).
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass

from .base import Counter, TaskInstance
from .corpus import source_files

__all__ = ["SYSTEM_PROMPT", "code_qa", "defaults_in"]

SYSTEM_PROMPT = ("You are a coding agent. You can call read_file(path) to read source files. "
                 "Answer the user's question from the files you have read.")


@dataclass(frozen=True)
class Default:
    function: str
    parameter: str
    value: str  # the literal as written in the source
    def_line: str  # stripped, as it appears in the source


def _window(lines: list[str], first: int, n_tokens: int, counter: Counter) -> tuple[int, int]:
    """Lines ``[first, last)`` holding about ``n_tokens`` tokens; moved back from the end of the file."""
    total, last = 0, first
    while last < len(lines) and total < n_tokens:
        total += counter(lines[last])
        last += 1
    while first > 0 and total < n_tokens:
        first -= 1
        total += counter(lines[first])
    return first, last


def _start_for(lines: list[str], target_line: int, n_tokens: int, counter: Counter, depth: float) -> int:
    """A first line such that ``target_line`` sits about ``depth`` of the way into the window."""
    before, first = 0, target_line
    while first > 0 and before < depth * n_tokens:
        first -= 1
        before += counter(lines[first])
    return first


def _constant_defaults(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, ast.Constant]]:
    args = node.args
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    return [(a.arg, d) for a, d in pairs if isinstance(d, ast.Constant)]


def defaults_in(source: str) -> list[Default]:
    """Functions whose whole signature is on one line and that have a constant default."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a file cut in the middle of a statement: drop the last lines
        return defaults_in(source.rsplit("\n", 1)[0]) if "\n" in source else []
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
            continue
        if node.body[0].lineno == node.lineno:  # one-liner: def and body on one line
            continue
        line = lines[node.lineno - 1].strip()
        if not line.startswith(("def ", "async def ")) or not line.endswith(":"):
            continue
        found.extend(Default(node.name, name, ast.get_source_segment(source, const) or repr(const.value), line)
                     for name, const in _constant_defaults(node))
    return found


def code_qa(n_tokens: int, seed: int, counter: Counter, n_files: int = 4) -> TaskInstance:
    rng = random.Random(f"code_qa/{seed}/{n_tokens}")
    files = list(source_files())
    rng.shuffle(files)
    per_file = n_tokens // n_files
    chosen = [(name, text) for name, text in files if counter(text) >= 2 * per_file][:n_files]
    everything = "\n".join(text for _, text in chosen)
    usable = {k: [d for d in defaults_in(text) if not d.function.startswith("_")
                  and everything.count(f"def {d.function}(") == 1] for k, (_, text) in enumerate(chosen)}
    usable = {k: v for k, v in usable.items() if v}
    if not usable:
        raise RuntimeError(f"no usable function with a default in {[n for n, _ in chosen]}")
    target_file = rng.choice(sorted(usable))
    name, source = chosen[target_file]
    lines = source.splitlines(keepends=True)
    candidates = usable[target_file]
    target = rng.choice(sorted(candidates, key=lambda d: (d.def_line, d.parameter)))
    target_line = next(i for i, line in enumerate(lines) if line.strip() == target.def_line)
    windows = []
    for k, (_, text) in enumerate(chosen):
        file_lines = text.splitlines(keepends=True)
        if k == target_file:
            first = _start_for(file_lines, target_line, per_file, counter, rng.uniform(0.05, 0.95))
        else:
            first = rng.randrange(max(1, len(file_lines) // 2))
        windows.append(_window(file_lines, first, per_file, counter))
    outputs = ["".join(text.splitlines(keepends=True)[a:b]).rstrip("\n") for (_, text), (a, b) in zip(chosen, windows)]
    context = "\n".join(outputs)
    if context.count(target.def_line) != 1 or context.count(f"def {target.function}(") != 1:
        raise RuntimeError(f"{target.def_line!r} is not unique in the context; use another seed")
    segments: list[tuple[str, str]] = [("system", SYSTEM_PROMPT)]
    for (mod, _), (a, b), text in zip(chosen, windows, outputs):
        path = f"Lib/{mod.replace('.', '/')}.py"
        segments += [("assistant", f'read_file(path="{path}", start_line={a + 1}, end_line={b})'), ("tool", text)]
    question = (f"In {name}.py, what is the default value of the `{target.parameter}` parameter "
                f"of `{target.function}`?")
    return TaskInstance("code_qa", seed, tuple(segments), question, (target.def_line,), target.value,
                        sum(counter(text) for text in outputs),
                        {"files": [mod for mod, _ in chosen], "module": name, "windows": windows})
