"""The unit file: one template, shipped rendered for /opt/lianfang, and what it must say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gateway
from gateway.cli.install_service import InstallError, render_unit

REPO = Path(__file__).resolve().parents[2]
OPT = render_unit(bin_dir=Path("/opt/lianfang/bin"), config=Path("/etc/lianfang/lianfang.yaml"))


def directives(unit: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, values in order."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_shipped_unit_is_the_template_rendered_for_opt():
    """systemd/lianfang.service is exactly what install-service writes for a venv at /opt/lianfang."""
    assert (REPO / "systemd" / "lianfang.service").read_text() == OPT


def test_unit_runs_a_static_user_with_the_hardening_kept():
    """User and Group lianfang (no DynamicUser), state in StateDirectory, config checked first, sandboxed."""
    unit = directives(OPT)
    assert "DynamicUser" not in unit
    assert unit["User"] == unit["Group"] == ["lianfang"]
    assert unit["StateDirectory"] == ["lianfang"]
    assert unit["SupplementaryGroups"] == ["dialout"]
    assert unit["ExecStartPre"] == ["/opt/lianfang/bin/lianfang check"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["ExecStart"] == ["/opt/lianfang/bin/lianfang run"]
    assert "LIANFANG_CONFIG=/etc/lianfang/lianfang.yaml" in unit["Environment"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert "ReadWritePaths" not in unit


def test_render_uses_the_given_venv_and_user():
    """The ExecStart lines name the venv given, and User/Group the user given."""
    unit = directives(
        render_unit(bin_dir=Path("/srv/gw/bin"), config=Path("/etc/lianfang/a.yaml"), user="gw")
    )
    assert unit["ExecStart"] == ["/srv/gw/bin/lianfang run"]
    assert unit["User"] == unit["Group"] == ["gw"]
    assert "LIANFANG_CONFIG=/etc/lianfang/a.yaml" in unit["Environment"]


@pytest.mark.parametrize("path", ["/opt/my venv/bin", "/opt/100%/bin", "/opt/$HOME/bin"])
def test_render_refuses_a_path_systemd_would_misread(path):
    """A venv path with a space, % or $ would be split or expanded by systemd: refused."""
    with pytest.raises(InstallError, match="systemd would misread it"):
        render_unit(bin_dir=Path(path), config=Path("/etc/lianfang/lianfang.yaml"))


def test_version_option_prints_the_package_version():
    """`lianfang --version` prints `lianfang <version>` and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, f"lianfang {gateway.__version__}\n")
