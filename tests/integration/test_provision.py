"""`python -m durable_chaos.runtime.provision`, the README's first set-up step and CI's: it provides only what is missing, and
says in one line what to install where it cannot."""

from __future__ import annotations

import shutil
import sys

from durable_chaos.runtime import provision
from tests.conftest import run_command


def test_on_a_provisioned_machine_it_changes_nothing_and_says_so():
    proc = run_command([sys.executable, "-m", "durable_chaos.runtime.provision"], env=None, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "provision: project: installed from this checkout",
        "provision: docker engine: running",
        "provision: docker compose: present",
        "provision: mmdebstrap: present",
        "provision: fuse3: present",
        "provision: chromium: present",
    ]


def test_where_it_cannot_install_it_names_exactly_what_to_install(monkeypatch, capsys):
    real_which = shutil.which
    monkeypatch.setattr(provision.shutil, "which", lambda cmd: None if cmd == "mmdebstrap" else real_which(cmd))
    monkeypatch.setattr(provision, "_can_apt", lambda: False)  # as on a machine that is not Debian run as root
    assert provision.main() == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: mmdebstrap (builds Debian-based subject images) is missing and this is not Debian run as "
                   "root: install mmdebstrap (Debian/Ubuntu: sudo apt-get install -y mmdebstrap), then run this "
                   "again"], err


def test_a_shipped_subject_is_its_folder_and_its_entry_point():
    from subjects.registry import ENTRY_POINT_GROUP, known

    assert provision.SUBJECTS_GROUP == ENTRY_POINT_GROUP
    folders = {p.parent.name for p in (provision.ROOT / "subjects").glob("*/docker-compose.yaml")}
    assert provision.shipped_subjects() == folders
    assert provision.shipped_subjects() <= {found.name for found in known()}


def test_a_checkout_that_needs_a_distribution_not_installed_yet_installs_it(monkeypatch, capsys):
    # An install from this checkout, made before the checkout gained a dependency, still imports from here: the
    # dependency must not be taken as present (session 15 added httptools).
    declared = provision._pyproject()
    declared["dependencies"] = [*declared["dependencies"], "surely-not-a-distribution-here>=1"]
    monkeypatch.setattr(provision, "_pyproject", lambda: declared)
    installs = []
    monkeypatch.setattr(provision, "pip_install_project", lambda: installs.append("pip install -e .[test]"))
    provision.project()
    assert installs == ["pip install -e .[test]"]
    assert capsys.readouterr().out.strip() == ("provision: project: pip install -e '.[test]' (not installed yet: "
                                               "surely-not-a-distribution-here)")
    assert provision.missing_requirements(["httptools>=0.6", "pytest>=8"]) == []
