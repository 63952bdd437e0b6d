"""The GPU suite's CPU dry run: ``bash benchmarks/gpu_suite.sh --dry-run OUTDIR`` (tiny models and lengths),
then the structure and invariants of the result it writes. No timing thresholds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.gpu_suite import DRY, TARGET_CONFIGS

pytestmark = pytest.mark.integration  # one subprocess, ~10 s on a 2-core CPU

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("gpu_suite")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--dry-run", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_suite_cpu-dry-run.json", "gpu_suite_cpu-dry-run.md"]
    result = json.loads((out / files[0]).read_text(encoding="utf-8"))
    return result, (out / files[1]).read_text(encoding="utf-8")


def _positive(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


def test_device_named_and_every_section_present(dry_run: tuple[dict[str, Any], str]) -> None:
    result, md = dry_run
    device = result["device"]
    assert device["name"] == "cpu" and device["dry_run"] is True
    assert device["torch"] and device["transformers"]
    assert {"scoring", "agent_loop", "ttft"} <= set(result)
    assert any("random" in note for note in result["notes"])
    assert [t["target"] for t in result["ttft"]] == list(TARGET_CONFIGS)
    for heading in ("## 1.", "## 2.", *(f"target {name}" for name in TARGET_CONFIGS)):
        assert heading in md
    assert "Weights are random" in md and device["transformers"] in md
    assert result["encoder"]["name"] in md and "with the semantic prior" in md
    assert _positive(*result["seconds"].values())


def test_scoring_rows(dry_run: tuple[dict[str, Any], str]) -> None:
    rows = dry_run[0]["scoring"]
    assert [r["context_tokens"] for r in rows] == list(DRY.lengths)
    for r in rows:
        assert _positive(r["plain_forward_s"], r["scoring_s"], r["scoring_over_plain"], r["windows"])
        assert r["lookahead_tokens"] == DRY.lookahead  # the fixed count: EOS never stops it
        assert r["draft_tokens_forwarded"] >= r["context_tokens"] + r["query_tokens"] + DRY.lookahead
        assert set(r["phases_s"]) >= {"prefill", "query", "lookahead", "score"}
    assert rows[-1]["windows"] > 1  # the dry run reaches the multi-window path too


def test_loop_cache_forwards_fewer_draft_tokens(dry_run: tuple[dict[str, Any], str]) -> None:
    loop = dry_run[0]["agent_loop"]
    off, on = loop["totals"]["cache_off"], loop["totals"]["cache_on"]
    assert loop["steps"] == len(loop["per_step"]) == DRY.loop_steps
    assert 0 < on["draft_tokens_forwarded"] < off["draft_tokens_forwarded"]
    assert _positive(off["seconds"], on["seconds"], loop["final_context_tokens"])
    assert all(step["cache_off"]["draft_tokens_reused"] == 0 for step in loop["per_step"])
    assert sum(step["cache_on"]["draft_tokens_reused"] for step in loop["per_step"]) > 0
    contexts = [step["cache_off"]["context_tokens"] for step in loop["per_step"]]
    assert contexts == sorted(contexts) and len(set(contexts)) == len(contexts)  # the context grows


def test_ttft_compressed_lengths_are_the_given_ratios(dry_run: tuple[dict[str, Any], str]) -> None:
    for target in dry_run[0]["ttft"]:
        assert [r["context_tokens"] for r in target["rows"]] == list(DRY.lengths)
        for row in target["rows"]:
            assert _positive(row["full_prefill_s"], row["query_tokens"])
            assert [c["keep_ratio"] for c in row["compressed"]] == list(DRY.ratios)
            for c in row["compressed"]:
                assert c["context_tokens"] == round(c["keep_ratio"] * row["context_tokens"])
                assert _positive(c["compress_s"], c["prefill_s"], c["ttft_s"], c["ttft_over_full"],
                                 c["compress_with_prior_s"], c["prior_over_no_prior"])
                assert c["ttft_s"] == pytest.approx(c["compress_s"] + c["prefill_s"])
                before, after = c["compressor_draft_tokens"]
                assert 0 < after < before


def test_a_failed_section_is_recorded_and_the_run_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One section's error lands in both files, the other sections still run, and the exit is non-zero."""
    from benchmarks import gpu_suite

    def broken(*args: Any) -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    ran: list[str] = []
    monkeypatch.setattr(gpu_suite.torch, "set_num_threads", lambda n: None)  # this process's threads stay
    monkeypatch.setattr(gpu_suite, "bench_scoring", broken)
    monkeypatch.setattr(gpu_suite, "bench_loop", lambda *a: ran.append("loop") or broken())
    monkeypatch.setattr(gpu_suite, "_ttft", lambda *a: ran.append("ttft") or broken())
    with pytest.raises(SystemExit, match="failed sections"):
        gpu_suite.run(DRY, tmp_path, None)
    assert ran == ["loop", "ttft"]
    result = json.loads((tmp_path / "gpu_suite_cpu-dry-run.json").read_text(encoding="utf-8"))
    assert result["scoring"] == {"error": "RuntimeError: CUDA out of memory (simulated)"}
    assert "## scoring: FAILED" in (tmp_path / "gpu_suite_cpu-dry-run.md").read_text(encoding="utf-8")
