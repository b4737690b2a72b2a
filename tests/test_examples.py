"""The worked examples inside mapping files, and the coverage matrix."""

import subprocess
import sys
from pathlib import Path

import yaml

from conftest import MAPPINGS, ROOT

FORMATION = MAPPINGS / "formation.yaml"


def gateway(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_every_bundled_example_passes():
    done = gateway("check", "--examples")
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(MAPPINGS.glob("*.yaml"))
    assert len(files) >= 4 and all(f"ok   {f}" in done.stdout for f in files), done.stdout
    assert "FAIL" not in done.stdout


def test_every_operation_of_every_bundled_mapping_carries_an_example():
    for path in MAPPINGS.glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        for name, obj in spec["objects"].items():
            for verb in ("create", "list", "retrieve"):
                ops = obj.get(verb) or []
                for i, op in enumerate(ops if isinstance(ops, list) else [ops]):
                    assert op.get("examples"), f"{path.name}: {name}.{verb}[{i}] has no example"


def _with_example(tmp_path: Path, change) -> Path:
    spec = yaml.safe_load(FORMATION.read_text())
    change(spec["objects"]["contacts"])
    path = tmp_path / "formation.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_wrong_expected_request_fails_naming_the_example_and_the_difference(tmp_path):
    def change(contacts):
        contacts["create"]["examples"][0]["request"]["body"]["type"] = "customer"
    done = gateway("check", "--examples", str(_with_example(tmp_path, change)))
    assert done.returncode == 1
    assert "objects.contacts.create.examples[0] (a supplier becomes a vendor): body: expected" in done.stdout
    assert "'type': 'customer'" in done.stdout and "'type': 'vendor'" in done.stdout


def test_a_wrong_expected_output_fails(tmp_path):
    def change(contacts):
        contacts["list"]["examples"][0]["output"][0]["name"] = "Jane Doe"
    done = gateway("check", "--examples", str(_with_example(tmp_path, change)))
    assert done.returncode == 1 and "output: expected" in done.stdout


def test_an_example_outside_its_alternatives_when_fails(tmp_path):
    def change(contacts):
        contacts["create"]["when"] = "body.is_customer"
    done = gateway("check", "--examples", str(_with_example(tmp_path, change)))
    assert done.returncode == 1 and "does not meet this alternative's `when`" in done.stdout


def test_examples_are_not_run_without_the_flag(tmp_path):
    def change(contacts):
        contacts["create"]["examples"][0]["request"]["path"] = "/elsewhere"
    assert gateway("check", str(_with_example(tmp_path, change))).returncode == 0


def test_coverage_lists_operations_and_fields_per_provider():
    done = gateway("coverage")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| contacts | " in out and "#### formation" in out
    row = next(line for line in out.splitlines() if line.startswith("| contacts |"))
    assert "create, list, retrieve" in row
    formation = out.split("#### formation")[1].split("####")[0]
    assert "| contacts | 13/15 | currency, field_mappings |" in formation


def test_the_readme_carries_the_current_coverage_matrix():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- coverage:start -->", "<!-- coverage:end -->"
    assert start in readme and end in readme, "README.md lacks the coverage markers"
    current = readme.split(start)[1].split(end)[0].strip()
    assert current == gateway("coverage").stdout.strip(), \
        "README's matrix is stale: run `gateway coverage --write README.md`"


def test_coverage_write_rewrites_only_the_matrix(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nbefore\n<!-- coverage:start -->\nstale rows\n<!-- coverage:end -->\nafter\n")
    done = gateway("coverage", "--write", str(readme))
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n<!-- coverage:start -->\n### Operations") and text.endswith("<!-- coverage:end -->\nafter\n")
    assert "stale rows" not in text and text.split("<!-- coverage:start -->")[1].split("<!-- coverage:end -->")[0].strip() \
        == gateway("coverage").stdout.strip()


def test_coverage_write_refuses_a_file_without_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    done = gateway("coverage", "--write", str(readme))
    assert done.returncode == 1 and "lacks the markers" in done.stderr
    assert readme.read_text() == "no markers here\n"
