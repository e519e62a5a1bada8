"""The HTML report: written by the demo, every figure loads in headless Chromium, nothing broken."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = [  # this machine's closed network: no background connections, no sandbox as root
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-file-access-from-files", "--virtual-time-budget=5000",
]  # fmt: skip


def test_demo_writes_the_report(tiny_demo):
    wh, log = tiny_demo
    index = wh.root / "report" / "index.html"
    assert f"report:      {index}" in log.replace("\n", "")
    page = index.read_text()
    imgs = re.findall(r'<img src="([^"]+)"', page)
    assert len(imgs) >= 5 and all((index.parent / src).is_file() for src in imgs)
    assert 'href="dbt-docs/index.html"' in page and (index.parent / "dbt-docs" / "index.html").is_file()
    assert "suite-s" in page and "Instantaneous memorisation" in page


def test_report_cli_without_dbt_docs(tiny_demo, tmp_path):
    wh, _ = tiny_demo
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    cli = [sys.executable, "-c", "from memlake.cli import main; main()"]
    cmd = [*cli, "report", "--out", str(tmp_path / "r"), "--no-dbt-docs"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "r" / "index.html").read_text()
    assert 'href="dbt-docs' not in page and "No figures yet" not in page
    for section in ("profiles", "taxonomy", "mitigation"):  # the demo drew every section's figures
        assert f'src="figures/{section}/' in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(tiny_demo, tmp_path):
    wh, _ = tiny_demo
    index = wh.root / "report" / "index.html"
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--dump-dom", index.as_uri()],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    loaded = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert loaded, dom.stderr[-2000:]
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 5  # every figure decoded
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shoot = [f"--screenshot={shot}", "--window-size=1200,2400", index.as_uri()]
    subprocess.run([CHROMIUM, *FLAGS, *profile, *shoot], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
