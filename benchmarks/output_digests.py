"""Digests of compressed texts and token scores on a fixed set of inputs: a behaviour fingerprint.

Runs the compressor on tiny in-process drafts (Llama, Qwen2, Gemma3 with sliding layers; a
short and a long draft context, so that windows also form groups), with windows of 1024 and
128 tokens, without and with the KV prefix cache, over a 4-step agent loop and a query call.
Each case records a digest of the compressed texts, a digest of the exact token-score bytes,
and the draft tokens forwarded and reused.  Run it on two versions of the code and compare:
a refactor that claims to change no behaviour must give the same file.

    python benchmarks/output_digests.py --out benchmarks/results/output_digests_tiny.json
    python benchmarks/output_digests.py --out /tmp/new.json --compare benchmarks/results/output_digests_tiny.json
"""

from __future__ import annotations

import argparse
import argparse as _argparse_module
import collections
import hashlib
import inspect
import json
import platform
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch
import transformers

from specprefill_agents import CacheConfig, CompressionConfig, ScoringConfig, Segment, SpecPrefillCompressor
from specprefill_agents.testing import ARCHS, tiny_draft

DOCS = [inspect.getsource(m) for m in (textwrap, _argparse_module, collections)]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def digests() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arch in ARCHS:
        for max_pos in (512, 4096):
            draft = tiny_draft(arch, max_pos=max_pos)
            for window in (1024, 128):
                config = CompressionConfig(keep_ratio=0.2, scoring=ScoringConfig(lookahead=3, window_tokens=window))
                for cache in ("none", "exact"):
                    caches = CacheConfig(kv_cache_bytes=0, score_cache_entries=0) if cache == "none" else CacheConfig()
                    comp = SpecPrefillCompressor(draft, config, on_failure="raise", cache=caches)
                    case = f"{arch}/{max_pos}/{window}/{cache}"
                    segments = [Segment("You answer questions.", role="system", protected=True)]
                    for step in range(4):
                        text = DOCS[step % 3][step * 2500:step * 2500 + 1800 + 600 * step]
                        segments = [*segments, Segment(text, role="tool"),
                                    Segment(f"what does function number {step} do?", role="user",
                                            protected=step == 3)]
                        res = comp.compress_segments(segments)
                        scores = comp.score_segments(segments)
                        out[f"{case}/{step}"] = [_digest("\0".join(res.texts).encode()),
                                                 _digest(b"".join(s.scores.tobytes() for s in scores.segments)),
                                                 res.stats.draft_tokens_forwarded, res.stats.draft_tokens_reused,
                                                 res.stats.windows]
                    out[f"{case}/q"] = _digest(comp.compress(DOCS[0][:5000], query="dedent").text.encode())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to write the digests (JSON)")
    parser.add_argument("--compare", help="a digests file from another version of the code")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (float sums, hence digests, depend on it: compare like with like)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = digests()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    machine = {"cpu": cpu, "torch": torch.__version__, "transformers": transformers.__version__,
               "threads": args.threads}
    Path(args.out).write_text(json.dumps({"machine": machine, "cases": result}, indent=0, sort_keys=True) + "\n",
                              encoding="utf-8")
    print(f"{len(result)} cases written to {args.out} ({cpu}; digests of float bytes can differ between CPU kinds)")
    if args.compare:
        other = json.loads(Path(args.compare).read_text(encoding="utf-8"))["cases"]
        differ = sorted(k for k in other.keys() | result.keys() if other.get(k) != result.get(k))
        print(f"{len(differ)} of {len(result)} cases differ from {args.compare}" + "".join(f"\n  {k}" for k in differ))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
