"""Both distributions as a user gets them: wheels built from this tree, installed into a fresh
venv (no editable install, no repository on the path), one compression on the embedded draft,
``pip check`` clean, the licence and metadata inside each wheel.

Dependencies come from the index pip is configured with (its cache makes a rerun quick); the
embedded draft's weights and conversion come from the user cache that ``specprefill prepare``
filled (scripts/install.sh runs it), as they would for a user's second environment.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SOURCES = {  # what each distribution's build reads
    ".": ["pyproject.toml", "README.md", "LICENSE", "specprefill_agents"],
    "integrations/langchain": ["pyproject.toml", "README.md", "LICENSE", "langchain_specprefill"],
}
SMOKE = """
import json, sys, textwrap
import langchain_specprefill, specprefill_agents
from specprefill_agents import SpecPrefillCompressor
res = SpecPrefillCompressor(on_failure="raise").compress(open(textwrap.__file__).read()[:6000],
                                                         query="What does max_lines do?", keep_ratio=0.25)
print(json.dumps({"core": specprefill_agents.__file__, "langchain": langchain_specprefill.__file__,
                  "before": res.stats.original_tokens, "after": res.stats.compressed_tokens,
                  "draft": res.stats.counted_with, "path": sys.path}))
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _build_wheels(tmp: Path, env: dict[str, str]) -> Path:
    wheels = tmp / "wheels"
    for sub, names in SOURCES.items():
        src = tmp / "src" / sub
        src.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (REPO / sub / name).is_dir():
                shutil.copytree(REPO / sub / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(REPO / sub / name, src / name)
        isolation = ["--no-build-isolation"] if _has_setuptools(77) else []
        _run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "--wheel-dir", str(wheels), str(src)],
            tmp,
            env,
        )
    return wheels


def _has_setuptools(major: int) -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= major


def _metadata(wheel: Path) -> tuple[email.message.Message, list[str]]:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(meta)), names


def test_wheels_install_into_a_fresh_venv_and_compress(tmp_path: Path) -> None:
    env = _clean_env()
    wheels = _build_wheels(tmp_path, env)
    built = sorted(p.name for p in wheels.glob("*.whl"))
    assert [n.split("-")[0] for n in built] == ["langchain_specprefill", "specprefill_agents"], built
    for wheel in wheels.glob("*.whl"):
        meta, names = _metadata(wheel)
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
        assert meta["License-Expression"] == "Apache-2.0" and meta["Author"]
        assert any(c.startswith("Programming Language :: Python :: 3") for c in meta.get_all("Classifier") or [])
        assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    py = str(venv / "bin" / "python")
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"  # as scripts/install.sh: the CPU build where it lies
    _run(
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--find-links",
            str(wheels),
            torch_pin,
            "specprefill-agents",
            "langchain-specprefill[agents]",
        ],
        tmp_path,
        env,
    )
    assert "No broken requirements found" in _run([py, "-m", "pip", "check"], tmp_path, env)
    assert _run([str(venv / "bin" / "specprefill"), "--version"], tmp_path, env).strip() == "specprefill 0.1.0"
    result = json.loads(_run([py, "-c", SMOKE], tmp_path, env).strip().splitlines()[-1])
    site = str(venv / "lib")
    assert result["core"].startswith(site) and result["langchain"].startswith(site)
    assert not any(p.startswith(str(REPO)) for p in result["path"] if p)
    assert result["draft"].startswith("draft:embedded:SmolLM2-135M-Instruct")
    assert 0 < result["after"] < result["before"]
