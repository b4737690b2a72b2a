"""The benchmark harness (bench/run.py) works end to end, in its quickest mode.

A smoke test, not a benchmark: it proves the servers start, every scenario
answers correctly through every path and the report has its rows and numbers.
It asserts no timing and no ratio.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCENARIOS = ("create", "list", "retrieve")
PATHS = ("direct", "nginx", "bare", "gateway", "nginx2", "gateway2")


def _tools_missing() -> bool:
    found = [shutil.which(t) or next((p for d in ("/usr/sbin", "/usr/bin") if os.access(p := f"{d}/{t}", os.X_OK)),
                                      None) for t in ("nginx", "wrk")]
    return not all(found)


def _number(cell: str) -> float:
    match = re.search(r"[-+−]?[\d,]+(?:\.\d+)?", cell)
    assert match, f"no number in {cell!r}"
    return float(match.group().replace(",", "").replace("−", "-"))


def test_bench_runs_end_to_end(tmp_path: Path):
    # bench/run.py installs nginx and wrk itself when it can (as root); .ci/run installs them up front.
    if _tools_missing() and os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("nginx and wrk are missing and only root can apt-get install them")
    output = tmp_path / "results.md"
    # Two rounds: the report's medians and paired ratios come from more than one run each.
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--duration", "1", "--warmup", "0",
                           "--rounds", "2", "--output", str(output)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = output.read_text()
    assert report in done.stdout

    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 12 and cells[0] in SCENARIOS:
            rows[cells[0], cells[1]] = cells
    assert set(rows) == {(s, p) for s in SCENARIOS for p in PATHS}, report
    for (scenario, path), cells in rows.items():
        # req/s and p50, p99 at both concurrencies
        for index in (2, 3, 4, 6, 7, 8):
            assert _number(cells[index]) > 0, (scenario, path, cells)
        if path in ("bare", "gateway", "gateway2"):
            assert _number(cells[9]) > 0, cells  # req/s vs nginx: present, whatever it is

    process = re.search(r"^\| ([\d.]+) s \| ([\d.]+) MiB \| ([\d.]+) MiB \| ([\d.]+) MiB \|$", report, re.M)
    assert process, report
    ready, rss_ready, rss_after, peak = map(float, process.groups())
    assert ready > 0 and rss_ready > 0 and rss_after > 0 and peak >= rss_after

    # /metrics moved under the load, by what wrk saw answered, also summed over two workers: at most a
    # run's calls under way when wrk stopped (32 each, 2 rounds of 3 scenarios at 2 concurrencies) more.
    counts = {path: (counted, answered) for path, counted, answered
              in re.findall(r"`(gateway2?)` ([\d,]+), wrk counted ([\d,]+) answers", report)}
    assert set(counts) == {"gateway", "gateway2"}, report
    for path, (counted, answered) in ((p, map(_number, counts[p])) for p in counts):
        assert answered > 0 and answered <= counted <= answered + 2 * 3 * 2 * 32, (path, counted, answered)
