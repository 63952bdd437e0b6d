"""Robustness report: hostile inputs and injected faults through the core API, the LangChain
wrapper and the CLI, each outcome classified.

Outcomes: ``typed error`` (a bad argument or setting refused up front with a SpecPrefillError,
or pydantic's ValidationError for a LangChain setting), ``pass-through`` (the input came back
whole, with a reason or a failure in the stats), ``compressed`` (shorter, every invariant holds),
``crash`` (any other exception) and ``corruption`` (an invariant broke: count, order, roles or
ids changed, a protected text changed, kept text not in order in the original, JSON no longer
JSON, an over-budget result not flagged, two runs differ).  The draft is a tiny random model
built in-process: robustness is about the code paths, not the weights.

    python -m benchmarks.bench_robustness [--cases 60] [--seed 0] [--out benchmarks/results/robustness_cpu]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_scoring import machine_info
from specprefill_agents import (CacheConfig, CompressionConfig, ScoringConfig, Segment, SpecPrefillCompressor,
                                SpecPrefillError, cli)
from specprefill_agents.testing import kept_in_order, tiny_draft

_GAP = re.compile(r" \[\.\.\.\] |\n# \[\.\.\.\]\n| \[\.\.\.\]|\[\.\.\.\] ")
_DRAFT = tiny_draft("qwen2", max_pos=512)
_CONFIG = CompressionConfig(min_tokens=8, scoring=ScoringConfig(lookahead=2, window_tokens=96))
_FAULTS = (RuntimeError, MemoryError, ValueError, IndexError, KeyError, TypeError, AssertionError, RecursionError,
           ZeroDivisionError)
_WORDS = ["the", "port", "is", "8080.", "ERROR", "x=1;", "2026-12-01T12:00:00Z", "value", "{}", "\t", "🙂", "\\"]


def _texts(rng: random.Random) -> list[tuple[str, str]]:
    """(name, text) pairs: every kind of hostile text, sizes drawn from ``rng``."""
    def unicode(n: int) -> str:
        return "".join(chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0xD800),
                                       rng.randrange(0xE000, 0x110000)])) for _ in range(n))

    prose = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(50, 800)))
    depth = rng.choice([500, 1000, 3000])
    return [("random unicode", unicode(rng.randrange(50, 3000))),
            ("control characters", "".join(chr(rng.randrange(0, 32)) for _ in range(rng.randrange(100, 2000)))),
            ("deep JSON", "[" * depth + "]" * depth),
            ("wide JSON", json.dumps({f"k{i}": [i, str(i)] for i in range(rng.randrange(50, 1500))})),
            ("huge line, no spaces", "x" * rng.randrange(5_000, 50_000)),
            ("emoji line", "🙂🚀 " * rng.randrange(100, 2000)),
            ("one line with a timestamp", prose.replace("\n", " ") + " at 2026-12-01T12:00:00Z x=1"),
            ("paragraph padded with newlines",
             "\n" * rng.randrange(1, 10_000) + prose + "\n" * rng.randrange(1, 10_000)),
            ("lone surrogates", prose + "\udcff\ud800"),
            ("whitespace only", " \n\t" * rng.randrange(0, 500)),
            ("empty", "")]


def _core_violation(segments: list[Segment], res: Any, counter: Callable[[str], int]) -> str | None:
    if [(s.role, s.id, s.kind) for s in res.segments] != [(s.role, s.id, s.kind) for s in segments]:
        return "segment count, order, roles or ids changed"
    for new, old in zip(res.segments, segments):
        if not old.may_compress and new.text != old.text:
            return "a protected segment changed"
        if new.text != old.text and not kept_in_order(new.text, old.text, _GAP):
            return "kept text is not in order in the original"
    used = sum(counter(n.text) for n, o in zip(res.segments, segments) if n.text != o.text)
    if res.stats.budget_tokens and used > res.stats.budget_tokens and not res.stats.budget_exceeded:
        return "over the budget without saying so"
    return None


def _run_core(segments: list[Segment], on_failure: str = "warn", **call: Any) -> str:
    comp = SpecPrefillCompressor(_DRAFT, _CONFIG, on_failure=on_failure)  # type: ignore[arg-type]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = comp.compress_segments(segments, **call)
            again = SpecPrefillCompressor(_DRAFT, _CONFIG, on_failure=on_failure,  # type: ignore[arg-type]
                                          cache=CacheConfig(kv_cache_bytes=0, score_cache_entries=0)
                                          ).compress_segments(segments, **call)
    except SpecPrefillError:
        return "typed error"
    except Exception as exc:  # the report counts it
        return f"crash: {type(exc).__name__}: {str(exc)[:80]}"
    if again.texts != res.texts:
        return "corruption: two runs differ"
    violation = _core_violation(segments, res, comp.counter()[0])
    if violation:
        return f"corruption: {violation}"
    return "pass-through" if res.texts == [s.text for s in segments] else "compressed"


def core_cases(rng: random.Random, n: int) -> list[tuple[str, str, Callable[[], str]]]:
    cases: list[tuple[str, str, Callable[[], str]]] = []
    for _ in range(n):
        texts = _texts(rng)
        name, text = rng.choice(texts)
        protected = rng.choice([None, texts[rng.randrange(len(texts))][1]])
        segments = [Segment(text, role=rng.choice(["tool", "context", "user"]), kind=rng.choice(["auto", "prose",
                                                                                                  "code"]))]
        if protected is not None:
            segments.insert(0, Segment(protected, role="system", protected=True))
        budget = rng.choice([{}, {"keep_ratio": rng.uniform(0.02, 0.6)}, {"max_tokens": rng.randrange(1, 400)}])
        query = rng.choice([None, "Which port?"])
        cases.append(("core input", name, lambda s=segments, b=budget, q=query: _run_core(s, query=q, **b)))
    bad: list[tuple[str, Callable[[], Any]]] = [
        ("context None", lambda: SpecPrefillCompressor(_DRAFT).compress(None)),  # type: ignore[arg-type]
        ("context bytes", lambda: SpecPrefillCompressor(_DRAFT).compress(b"bytes")),  # type: ignore[arg-type]
        ("segment role None", lambda: _run_core([Segment("x", role=None)], "raise")),  # type: ignore[arg-type]
        ("segment kind bogus", lambda: _run_core([Segment("x", kind="bogus")], "raise")),  # type: ignore[arg-type]
        ("protected 'yes'", lambda: _run_core([Segment("x", protected="yes")], "raise")),  # type: ignore[arg-type]
        ("query int", lambda: _run_core([Segment("x")], "raise", query=5)),
        *[(f"keep_ratio {v!r}", lambda v=v: _run_core([Segment("x")], "raise", keep_ratio=v))
          for v in (-1.0, 0.0, 2.0, "x", True, float("nan"))],
        *[(f"max_tokens {v!r}", lambda v=v: _run_core([Segment("x")], "raise", max_tokens=v))
          for v in (0, -1, 1.5, "x")],
        ("token_counter a string", lambda: _run_core([Segment("x")], "raise", token_counter="nope")),
        ("deadline_s -1", lambda: _run_core([Segment("x")], "raise", deadline_s=-1.0)),
    ]
    cases += [("bad argument", name, lambda f=f: _typed(f)) for name, f in bad]
    return cases


def _typed(call: Callable[[], Any]) -> str:
    try:
        outcome = call()
    except SpecPrefillError:
        return "typed error"
    except Exception as exc:
        return f"crash: {type(exc).__name__}: {str(exc)[:80]}"
    accepted = not isinstance(outcome, str) or outcome == "compressed"
    return "corruption: a bad argument was accepted" if accepted else outcome


def fault_cases(text: str) -> list[tuple[str, str, Callable[[], str]]]:
    def injected(error: type[BaseException]) -> str:
        comp = SpecPrefillCompressor(_DRAFT, _CONFIG, on_failure="warn")
        scorer = comp._ensure_scorer()

        def explode(*args: object, **kwargs: object) -> None:
            raise error("injected")

        scorer.score = explode  # type: ignore[method-assign]
        return _passes_through(lambda: comp.compress(text, query="port"), text)

    def counter_raises(text: str) -> int:
        raise ZeroDivisionError("counter")

    limited = SpecPrefillCompressor(_DRAFT, _CONFIG.replace(max_input_tokens=20), on_failure="warn")
    return [*[("injected fault", error.__name__, lambda e=error: injected(e)) for error in _FAULTS],
            ("injected fault", "token counter raises", lambda: _passes_through(
                lambda: SpecPrefillCompressor(_DRAFT, _CONFIG, on_failure="warn").compress(
                    text, query="port", token_counter=counter_raises), text)),
            ("injected fault", "deadline passed", lambda: _passes_through(
                lambda: SpecPrefillCompressor(_DRAFT, _CONFIG, on_failure="warn").compress(
                    text, query="port", deadline_s=1e-9), text)),
            ("injected fault", "over max_input_tokens", lambda: _passes_through(
                lambda: limited.compress(text, query="port"), text)),
            ("injected fault", "draft cannot load", lambda: _passes_through(
                lambda: SpecPrefillCompressor("/no/such/draft.gguf", on_failure="warn").compress(text), text))]


def _passes_through(call: Callable[[], Any], text: str) -> str:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = call()
    except Exception as exc:
        return f"crash: {type(exc).__name__}: {str(exc)[:80]}"
    if res.texts != [text] or not res.stats.failure or not caught:
        return "corruption: a fault did not pass the input through with a warning and a failure"
    return "pass-through"


def langchain_cases(rng: random.Random, n: int) -> list[tuple[str, str, Callable[[], str]]]:
    try:
        from benchmarks.robustness_langchain import run_conversation
    except ImportError:  # the LangChain integration is not installed
        return []
    cases = []
    for _ in range(n):
        name, text = rng.choice(_texts(rng))
        keep, calls = rng.choice([None, 0.1, 0.3]), rng.randrange(1, 3)
        cases.append(("LangChain wrapper", name,
                      lambda t=text, k=keep, c=calls: run_conversation(_DRAFT, _CONFIG, t, k, c)))
    return cases


def cli_cases(rng: random.Random, n: int, draft_dir: str) -> list[tuple[str, str, Callable[[], str]]]:
    def run(data: bytes, extra: list[str]) -> str:
        stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
        saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin, sys.stdout, sys.stderr = stdin, out, io.StringIO()
        try:
            code = cli.main(["compress", "--draft", draft_dir, *extra])
            err = sys.stderr.getvalue()  # type: ignore[attr-defined]
        except SystemExit as exc:
            code, err = int(exc.code or 0), ""
        except Exception as exc:
            return f"crash: {type(exc).__name__}: {str(exc)[:80]}"
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
        if "Traceback" in err or code not in (0, 1, 2):
            return f"crash: exit code {code}"
        return {0: "compressed", 1: "typed error", 2: "typed error"}[code]

    cases = []
    for _ in range(n):
        name, text = rng.choice(_texts(rng))
        data = rng.choice([text.encode("utf-8", "surrogatepass"), bytes(rng.randrange(256) for _ in range(500))])
        extra = rng.choice([[], ["--json"], ["--keep", "0.1"], ["--max-tokens", "0"], ["--unit", "bogus"]])
        cases.append(("CLI", name, lambda d=data, e=extra: run(d, e)))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=60, help="random cases per surface (core, LangChain, CLI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/robustness_cpu")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    import tempfile

    with tempfile.TemporaryDirectory() as draft_dir:
        _DRAFT.model.save_pretrained(draft_dir)
        _DRAFT.tokenizer.save_pretrained(draft_dir)
        cases = (core_cases(rng, args.cases) + fault_cases(" ".join(rng.choice(_WORDS) for _ in range(400)))
                 + langchain_cases(rng, args.cases) + cli_cases(rng, args.cases // 2, draft_dir))
        rows = [(surface, name, run()) for surface, name, run in cases]
    result = {"machine": machine_info(), "args": vars(args), "cases": [
        {"surface": s, "case": n, "outcome": o} for s, n, o in rows]}
    save(result, Path(args.out))
    print(markdown(result))
    return 0 if not any(o.startswith(("crash", "corruption")) for _, _, o in rows) else 1


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    rows = result["cases"]
    kinds = ["typed error", "pass-through", "compressed", "crash", "corruption"]
    by_surface: dict[str, Counter[str]] = {}
    for row in rows:
        by_surface.setdefault(row["surface"], Counter())[row["outcome"].split(":")[0]] += 1
    lines = [f"# Robustness: {len(rows)} hostile inputs and injected faults", "",
             f"Machine: {m['cpu_model']} ({m['cpu_count']} cores, load {m['load_avg_start'][0]:.1f}); "
             f"torch {m['torch']}, transformers {m['transformers']}; {m['date']}. "
             "Draft: a tiny random Qwen2 built in-process. `python -m benchmarks.bench_robustness "
             f"--cases {result['args']['cases']} --seed {result['args']['seed']}`",
             "", "| surface | cases | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for surface, counts in by_surface.items():
        lines.append(f"| {surface} | {sum(counts.values())} | " + " | ".join(str(counts[k]) for k in kinds) + " |")
    total = Counter(row["outcome"].split(":")[0] for row in rows)
    lines.append(f"| **all** | {len(rows)} | " + " | ".join(f"**{total[k]}**" for k in kinds) + " |")
    bad = [r for r in rows if r["outcome"].startswith(("crash", "corruption"))]
    lines += ["", "Crashes and corruptions:" if bad else "No crash, no corruption."]
    lines += [f"- {r['surface']} / {r['case']}: {r['outcome']}" for r in bad]
    return "\n".join(lines) + "\n"


def save(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
