"""The README's commands and snippets are the ones that run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = _bash_blocks()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


def test_python_snippets_run_with_the_embedded_draft() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    res = namespace["res"]
    assert res.compressed_tokens <= 400
    # the expandable agent got cut text back in one tool call: exact lines of the original, by reference
    expansion = namespace["state"]["messages"][-2]
    assert expansion.name == "expand_context" and expansion.content.startswith("Cut text matching the query")
    lines = [ln for ln in expansion.content.splitlines()[1:] if ln and not ln.startswith("[ref ")]
    assert lines and all(ln in namespace["context"] for ln in lines)
    assert any("placeholder" in ln for ln in lines) and namespace["middleware"].last_report.expanded_tokens > 0


def test_main_job_command_runs_offline() -> None:
    command = _bash_blocks()[0].strip()
    job = command.split("&&", 1)[1].strip()  # the install part ran already (this is its venv)
    job = job.replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    proc = subprocess.run(["bash", "-c", job], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"step \d+: context +\d+ -> +\d+ tokens", proc.stdout)
    assert "state keeps the original tool outputs" in proc.stdout


def test_cli_command_in_the_readme_runs_offline() -> None:
    command = _bash_blocks()[2].strip()
    assert shlex.split(command)[0].endswith("specprefill")
    command = command.replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert proc.returncode == 0, proc.stderr
    assert "max_lines" in proc.stdout
    assert re.search(r"\d+ -> \d+ tokens", proc.stderr)


def test_view_command_in_the_readme_writes_the_page(tmp_path: Path) -> None:
    command = next(b for b in _bash_blocks() if "--html kept.html" in b).strip()
    assert "--html kept.html" in command and "--show" in command
    command = command.replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "kept.html").read_text(encoding="utf-8")
    assert 'class="kept"' in page and 'class="dropped"' in page and 'class="heat"' in page
    assert "[-" in proc.stdout and "max_lines" in proc.stdout  # not a terminal: plain view

def test_service_commands_in_the_readme_run_offline() -> None:
    import signal
    import socket
    import time

    import httpx

    block = next(b for b in _bash_blocks() if "specprefill serve" in b)
    serve, agent = (line.split("#")[0].strip().rstrip("&").strip() for line in block.strip().splitlines())
    with socket.socket() as sock:  # 8765 may be taken on a shared machine
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    bindir = str(Path(sys.executable).parent) + "/"
    serve, agent = (cmd.replace(".venv/bin/", bindir).replace("8765", port) for cmd in (serve, agent))
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    server = subprocess.Popen(shlex.split(serve), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        proc = subprocess.run(["bash", "-c", agent], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
        assert proc.returncode == 0, proc.stderr
        steps = re.findall(r"step \d+: context +(\d+) -> +(\d+) tokens", proc.stdout)
        assert steps and any(int(after) < int(before) for before, after in steps)  # the service compressed
        assert "compression failed" not in proc.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
