"""scripts/device_check.sh --dry-run: every module the GPU check imports must be on the device image or carried as
a wheel; a package list that lacks one fails and names it. No training here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "device_check.sh"
PACKAGES = REPO / "scripts" / "device_packages.txt"
WHEELS = REPO / "scripts" / "device_wheels.txt"


def dry_run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1")
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--whl-dir", "/nonexistent", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_lists_are_there():
    packages = PACKAGES.read_text().split()
    assert {"torch", "transformers", "peft", "accelerate"} <= set(packages)
    wheels = [line for line in WHEELS.read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in wheels) and any(w.startswith("trl==") for w in wheels)


def test_device_list_and_wheels_cover_the_check():
    p = dry_run()
    assert p.returncode == 0, p.stdout + p.stderr
    assert "every module the check needs" in p.stdout


def test_a_missing_package_is_named(tmp_path):
    """peft dropped from the device's list and trl from the wheels: the dry run fails and names both (one run)."""
    lacking = tmp_path / "packages.txt"
    lacking.write_text("\n".join(n for n in PACKAGES.read_text().splitlines() if n.strip() != "peft") + "\n")
    wheels = tmp_path / "wheels.txt"
    wheels.write_text("\n".join(n for n in WHEELS.read_text().splitlines() if not n.startswith("trl==")) + "\n")
    p = dry_run("--packages", str(lacking), "--wheels", str(wheels))
    assert p.returncode == 1
    assert "MISSING: module 'peft' (distribution peft)" in p.stderr
    assert "MISSING: module 'trl' (distribution trl)" in p.stderr
    assert "datasets" not in p.stderr  # still carried
