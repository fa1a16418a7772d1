"""The README's Python examples run as written (they are the user's first contact)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # examples may write files
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert (tmp_path / "trees.graphml").is_file()
    assert "Dice" in capsys.readouterr().out


def _ci_apt_line() -> str:
    """The README's apt-get line as ``.ci/run`` extracts it (its own shell function)."""
    import subprocess

    ci = (README.parent / ".ci" / "run").read_text()
    func = re.search(r"^readme_setup\(\) \{\n.*?^\}\n", ci, flags=re.S | re.M).group(0)
    grep = re.search(r"^APT=\$\(readme_setup \| (grep '[^']+')\)$", ci, flags=re.M).group(1)
    script = f"cd {README.parent}\n{func}readme_setup | {grep}"
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_readme_apt_line_works_as_root_without_sudo_and_as_a_user(tmp_path):
    # A root machine without sudo (a fresh container) and a user with sudo both run the
    # line as written; stubs stand in for sudo and apt-get and record their arguments.
    import subprocess

    from tests.conftest import SYSTEM_PACKAGES

    line = _ci_apt_line()
    assert "\n" not in line and "apt-get install" in line
    log = tmp_path / "log"
    root, user = tmp_path / "root", tmp_path / "user"  # PATHs: no sudo / sudo
    for folder, names in ((root, ["apt-get"]), (user, ["apt-get", "sudo"])):
        folder.mkdir()
        for name in names:
            run_it = '"$@"\n' if name == "sudo" else ""
            (folder / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{run_it}')
            (folder / name).chmod(0o755)
    for folder in (root, user):
        log.write_text("")
        run = subprocess.run(
            ["/bin/bash", "-c", line], env={"PATH": str(folder)}, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        calls = log.read_text().splitlines()
        apt = [c for c in calls if c.startswith("apt-get ")]
        assert apt[0] == "apt-get update" and apt[1].startswith("apt-get install -y ")
        assert set(SYSTEM_PACKAGES.split()) <= set(apt[1].split())
        assert [c.split()[0] for c in calls].count("sudo") == (2 if folder is user else 0)
