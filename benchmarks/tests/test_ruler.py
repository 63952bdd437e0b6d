"""The RULER driver's evidence checks, the plain BM25 sentence baseline and the score store."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import pytest

from benchmarks import baselines as bl
from benchmarks import ruler
from benchmarks.score_store import StoredScoresCompressor
from specprefill_agents import CacheConfig, CompressionConfig, Segment, SpecPrefillCompressor
from specprefill_agents.testing import ANSWER_SENTENCE, PASSAGES_QUESTION, retrieved_passages, tiny_draft


def _instance(task: str, context: str, outputs: tuple[str, ...], evidence: tuple[str, ...] = (),
              support: tuple[str, ...] = ()) -> ruler.RulerInstance:
    return ruler.RulerInstance(task, 4096, 0, 1, (("user", "Read."), ("document", context), ("user", "Q?")),
                               "Q?", outputs, evidence or outputs, support)


def test_a_needle_counts_only_whole() -> None:
    needle = "One of the special magic numbers for low-leopard is: 4633934."
    inst = _instance("niah_single_2", f"Essay text. {needle} More text.", ("4633934",), (needle,))
    assert ruler.evidence_kept(inst, f"x {needle} y") == (True, 1)
    assert ruler.evidence_kept(inst, "numbers for low-leopard is: 4633934. [...]") == (False, 0)


def test_a_chain_needs_every_link() -> None:
    links = ("VAR AAAAA = 12345", "VAR BBBBB = VAR AAAAA", "VAR CCCCC = VAR BBBBB")
    inst = _instance("vt", " noise ".join(links), ("AAAAA", "BBBBB", "CCCCC"), links)
    assert ruler.evidence_kept(inst, " [...] ".join(links)) == (True, 3)
    assert ruler.evidence_kept(inst, "VAR AAAAA = 12345 [...] VAR CCCCC = VAR BBBBB") == (False, 2)


def test_common_words_must_stay_the_most_frequent() -> None:
    gold = ("apple", "pear")
    inst = _instance("cwe", "", gold)
    ranked = "1. apple 2. pear 3. apple 4. pear 5. fig"
    assert ruler.evidence_kept(inst, ranked) == (True, 2)
    assert ruler.evidence_kept(inst, "1. apple 2. apple 3. pear 4. fig") == (False, 1)  # fig ties pear
    cut = "1. [...] pear 3. [...] apple 5. [...] pear 7. [...] 9. apple 10. fig"
    assert ruler.evidence_kept(inst, cut) == (True, 2)  # the marker is no word; a word cut from its number counts
    capital = _instance("cwe", "", ("Early", "pear"))  # RULER's word lists hold a few capitalised words
    assert ruler.evidence_kept(capital, "1. Early 2. pear 3. Early 4. pear 5. fig") == (True, 2)
    assert ruler.evidence_kept(capital, "1. Early 2. pear 3. fig 4. pear") == (False, 1)  # Early ties fig
    coded = _instance("fwe", "", ("abcdef",))
    assert ruler.evidence_kept(coded, "abcdef abcdef .... qwerty") == (True, 1)


def test_qa_answer_is_case_insensitive_and_support_needs_most_trigrams() -> None:
    inst = _instance("qa_2", "", ("the Big 12 Conference",))
    assert ruler.evidence_kept(inst, "it competes in The Big 12 Conference.") == (True, 1)
    sentence = "The program is classified in the NCAA's Division I and the team competes in the Big 12 Conference."
    assert ruler.support_kept(sentence, f"Doc 3: {sentence}")
    assert not ruler.support_kept(sentence, "The program is classified in the NCAA's [...] Big 12 Conference.")
    assert ruler._asked("Only the answer.\n\nQuestion:  Who is it? Answer:") == "Who is it?"


def test_bm25_sentences_keeps_whole_best_sentences_in_order_within_the_budget() -> None:
    words = lambda text: len(text.split())  # noqa: E731
    filler = " ".join(f"Filler sentence number {i} says nothing." for i in range(40))
    text = f"The vault code is 4411. {filler} The vault is in Oslo."
    out = bl.BM25Sentences(words, min_tokens=10).compress([Segment(text)], "Where is the vault and its code?", 15)
    assert out.texts[0] == "The vault code is 4411.\nThe vault is in Oslo."
    assert out.tokens <= out.budget == 15
    protected = Segment(text, protected=True)
    assert bl.BM25Sentences(words).compress([protected], "vault", 0.1).texts[0] == text


def test_the_score_store_gives_the_same_compression_without_scoring_again(tmp_path: Path) -> None:
    draft = tiny_draft("llama")
    text = " ".join(f"Fact {i}: the code of room {i} is {1000 + 7 * i}." for i in range(40))
    segments, query = [Segment(text, role="document")], "What is the code of room 17?"
    cache = CacheConfig(kv_cache_bytes=0, score_cache_entries=0)
    plain = SpecPrefillCompressor(draft, cache=cache, on_failure="raise").compress_segments(segments, query)
    first = StoredScoresCompressor(draft, cache=cache, on_failure="raise", store=tmp_path)
    assert first.compress_segments(segments, query).texts == plain.texts
    assert len(list(tmp_path.glob("*.npz"))) == 1 and first.scored_seconds > 0
    other = CompressionConfig(unit="word")
    again = StoredScoresCompressor(draft, other, cache=cache, on_failure="raise", store=tmp_path)
    reference = SpecPrefillCompressor(draft, other, cache=cache, on_failure="raise")
    result = again.compress_segments(segments, query)
    assert result.texts == reference.compress_segments(segments, query).texts
    assert result.stats.draft_tokens_forwarded == plain.stats.draft_tokens_forwarded
    assert len(list(tmp_path.glob("*.npz"))) == 1 and again.scored_seconds == first.scored_seconds
    np.testing.assert_array_equal(again.score_segments(segments, query).segments[0].scores,
                                  reference.score_segments(segments, query).segments[0].scores)
    half = tiny_draft("llama")
    half.model.to(torch.bfloat16)  # the same weights in another dtype: scores of their own
    StoredScoresCompressor(half, cache=cache, on_failure="raise", store=tmp_path).compress_segments(segments, query)
    assert len(list(tmp_path.glob("*.npz"))) == 2


@pytest.mark.skipif(importlib.util.find_spec("long_context_eval") is None,
                    reason="RULER's generators: bash scripts/install_benchmarks.sh")
def test_rulers_own_generator_makes_a_variable_tracking_instance(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))  # one token per word: quick to count
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    (inst,) = ruler.generate("vt", 2048, 1, 3, str(tmp_path / "tok"), tmp_path / "cache")
    assert len(inst.evidence) == 5 and all(e in inst.context for e in inst.evidence)
    assert ruler.evidence_kept(inst, inst.context) == (True, 5)
    assert "Find all variables that are assigned the value" in inst.question
    assert 1000 < len(inst.context.split()) < 2048
    assert ruler.generate("vt", 2048, 1, 3, str(tmp_path / "tok"), tmp_path / "cache") == [inst]  # cached


def test_runs_that_split_the_methods_merge_into_one_result(tmp_path: Path) -> None:
    from benchmarks import bench_ruler

    def run(method: str, retained: bool) -> Path:
        row = {"task": "vt", "length": 4096, "method": method, "budget": 0.25, "retained": retained,
               "support_kept": None, "support_strict": None, "seconds": 1.0, "tokens_out": 5, "budget_tokens": 9}
        path = tmp_path / f"{method}.json"
        path.write_text(json.dumps({"machine": {"cpu_model": "x"}, "args": {"methods": [method]}, "rows": [row],
                                    "method_names": [method], "total_seconds": 2.0}))
        return path

    result = bench_ruler.merged([str(run("ours", True)), str(run("bm25", False))])
    assert result["method_names"] == ["ours", "bm25"] and result["args"]["methods"] == ["ours", "bm25"]
    assert result["summary"]["ours|vt|4096|0.25"]["retention"] == 1.0
    assert result["summary"]["bm25|all|4096|0.25"]["retention"] == 0.0


def test_rulers_score_takes_any_qa_answer_and_every_other_output() -> None:
    from benchmarks.bench_ruler import ruler_score

    assert ruler_score("qa_1", ("France", "the French"), "It is in france.") == 1.0  # any alternative, any case
    assert ruler_score("qa_2", ("France",), "Normandy") == 0.0
    assert ruler_score("niah_multivalue", ("123", "456", "789", "000"), "123, 456 and 000") == 0.75  # share named
    assert ruler_score("vt", ("AB", "CD"), "AB CD") == 1.0


def test_target_scores_are_summarised_and_tabled_against_the_full_context() -> None:
    from benchmarks import bench_ruler

    rows = [{"task": "qa_1", "length": 4096, "method": "ours", "budget": 0.1, "retained": True, "support_kept": True,
             "support_strict": True, "seconds": 1.0, "tokens_out": 5, "budget_tokens": 9, "score": s}
            for s in (1.0, 0.0, 1.0, 1.0)]
    summary = bench_ruler.summarise(rows)
    assert summary["ours|qa_1|4096|0.1"]["score"] == 0.75
    result = {"target": "tiny", "args": {"lengths": [4096], "tasks": ["qa_1"], "max_new_tokens": 32},
              "summary": summary, "method_names": ["ours"], "budgets": [0.1],
              "instances": [{"task": "qa_1", "length": 4096, "full_score": s} for s in (1.0, 0.0, 0.0, 0.0)]}
    table = "\n".join(bench_ruler._score_tables(result))
    assert "| qa_1 | 25.0 | 75.0 |" in table and "| all | 25.0 | 75.0 |" in table
    assert bench_ruler._score_tables({**result, "target": None}) == []


def test_replace_takes_the_later_run_for_its_tasks_only(tmp_path: Path) -> None:
    from benchmarks.bench_ruler import replaced

    def row(task: str, method: str, retained: bool) -> dict:
        return {"task": task, "length": 4096, "index": 0, "method": method, "budget": 0.25, "retained": retained,
                "evidence_kept": int(retained), "evidence_total": 1, "support_kept": None, "support_strict": None,
                "tokens_out": 10, "budget_tokens": 10, "seconds": 0.1, "scored_seconds": None}

    base = {"args": {"tasks": ["vt", "cwe"]}, "machine": {"date": "then"},
            "rows": [row("vt", "ours", True), row("cwe", "ours", False)]}
    later = {"args": {"tasks": ["cwe"]}, "machine": {"date": "now"}, "rows": [row("cwe", "ours", True)]}
    for name, run in (("base", base), ("later", later)):
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    out = replaced(str(tmp_path / "base.json"), str(tmp_path / "later.json"), "a fix")
    assert [(r["task"], r["retained"]) for r in out["rows"]] == [("vt", True), ("cwe", True)]
    assert out["summary"]["ours|all|4096|0.25"]["retention"] == 1.0
    assert out["replaced_rows"][0]["tasks"] == ["cwe"] and out["replaced_rows"][0]["from"] == "a fix"
    later["rows"][0]["method"] = "bm25"  # a later run of other methods is no replacement
    (tmp_path / "later.json").write_text(json.dumps(later))
    with pytest.raises(ValueError, match="same instances"):
        replaced(str(tmp_path / "base.json"), str(tmp_path / "later.json"), "a fix")


def test_a_run_names_which_of_the_generated_instances_it_used() -> None:
    from benchmarks import bench_ruler

    assert bench_ruler._which({"n": 20}) == "n = 20"
    assert bench_ruler._which({"n": 40, "skip": 20, "first": None}) == "instances 21-40 of n = 40"
    assert bench_ruler._which({"n": 20, "skip": 0, "first": 3}) == "instances 1-3 of n = 20"
    args = bench_ruler.parse_args(["--n", "40", "--skip", "20"])
    assert (args.skip, args.first, args.n) == (20, None, 40)


def test_a_qa_context_goes_to_ours_as_its_passages() -> None:
    from benchmarks import bench_ruler

    context = "\n\n".join(f"Document {k}:\nTown {k}\n{text}" for k, text in
                          enumerate(retrieved_passages(12, answer_at=7), start=1))
    assert "\n\n".join(bench_ruler.passages(context)) == context and len(bench_ruler.passages(context)) == 12
    segments = [Segment("Answer from the documents.\n\n", role="user", protected=True),
                Segment(context, role="document"), Segment(f"\n\nQuestion: {PASSAGES_QUESTION}", role="user")]
    seen: list[list[Segment]] = []

    class Recording(SpecPrefillCompressor):
        def compress_segments(self, segs, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(list(segs))
            return super().compress_segments(segs, *args, **kwargs)

    words = lambda text: len(text.split())  # noqa: E731
    inner = bl.Ours(Recording(tiny_draft("llama"), CompressionConfig(min_tokens=16), on_failure="raise"), words)
    method = bench_ruler.AsDocuments(inner)
    out = method.compress(segments, PASSAGES_QUESTION, 0.2)
    assert method.name == "ours/docs" and [s.role for s in seen[0]] == ["document"] * 12
    assert out.texts[0] == segments[0].text and out.texts[2] == segments[2].text
    assert ANSWER_SENTENCE in out.texts[1] and out.tokens <= out.budget
    assert out.tokens == sum(words(p) for p in out.texts[1].split("\n\n"))  # the passages' own tokens
    with pytest.raises(SystemExit, match="qa"):
        bench_ruler.main(["--tasks", "vt", "--as-documents"])
