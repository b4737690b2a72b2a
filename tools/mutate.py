#!/usr/bin/env python3
"""Mutation testing of the translation core: which small changes to the code do
the fast test suites notice?

Each mutant (a flipped comparison or boolean, a changed constant, a removed
statement, swapped arguments...) runs in a fresh pytest process against a copy
of the project, so nothing compiled or cached by one run (the expression
compiler caches) leaks into the next. A mutant no test fails on "survives":
its diff shows what no test checks.

    .venv/bin/python tools/mutate.py --sample 150 --seed 1          # a sample, one process
    .venv/bin/python tools/mutate.py --list                          # count the mutants only
    .venv/bin/python tools/mutate.py --targets gateway/paging.py --tests tests/test_paging.py

A tool for people, not CI: a full run takes a while.
"""

import argparse
import ast
import difflib
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The translation core; `file::function` mutates that function only.
TARGETS = ["gateway/operation.py", "gateway/unify.py", "gateway/paging.py", "gateway/cursor.py",
           "gateway/functions.py", "gateway/expressions.py", "gateway/errors.py", "gateway/ignored.py",
           "gateway/models.py::unknown_fields"]
# The suites that need no gateway process, the quickest first (each run stops at its first failure).
# Of the slower suites, the one test that runs every bundled mapping's worked examples.
TESTS = ["tests/test_ignored.py", "tests/test_expressions.py", "tests/test_functions.py", "tests/test_paging.py",
         "tests/test_cursor.py", "tests/test_unify.py", "tests/test_errors.py", "tests/test_once.py",
         "tests/test_examples.py::test_every_bundled_example_passes"]
COPIED = ["gateway", "tests", "mappings", "README.md", "pyproject.toml"]
# The suite that tests a module most directly runs first: most mutants die there, early.
FIRST = {"gateway/operation.py": "tests/test_expressions.py", "gateway/unify.py": "tests/test_unify.py",
         "gateway/paging.py": "tests/test_paging.py", "gateway/cursor.py": "tests/test_cursor.py",
         "gateway/functions.py": "tests/test_functions.py", "gateway/expressions.py": "tests/test_expressions.py",
         "gateway/errors.py": "tests/test_errors.py", "gateway/ignored.py": "tests/test_ignored.py",
         "gateway/models.py": "tests/test_ignored.py"}


def ordered(tests: list[str], path: str) -> list[str]:
    first = FIRST.get(path)
    return [first, *(t for t in tests if t != first)] if first in tests else tests

_FLIPPED = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE,
            ast.LtE: ast.Gt, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_ARITHMETIC = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.Div: ast.Mult,
               ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv}


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the project
    line: int
    operator: str
    source: str  # the whole mutated file

    def diff(self, original: str) -> str:
        lines = difflib.unified_diff(original.splitlines(keepends=True), self.source.splitlines(keepends=True),
                                     f"a/{self.path}", f"b/{self.path}", n=1)
        return "".join(lines)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _skipped(node: ast.AST, parents: dict) -> bool:
    """Docstrings, annotations, f-string parts and __slots__: mutating them tests nothing."""
    child = node
    while child in parents:
        parent = parents[child]
        if isinstance(parent, ast.JoinedStr):
            return True
        if isinstance(parent, ast.arg) and child is parent.annotation:
            return True
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and child is parent.returns:
            return True
        if isinstance(parent, ast.AnnAssign) and child is parent.annotation:
            return True
        if isinstance(parent, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in parent.targets):
            return True
        child = parent
    return False


def _docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _variants(node: ast.AST) -> list[tuple[str, ast.AST | str]]:
    """(operator, replacement) pairs for one node: an expression node, or "pass" for a statement."""
    out: list[tuple[str, ast.AST | str]] = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _FLIPPED:
                ops = list(node.ops)
                ops[i] = _FLIPPED[type(op)]()
                out.append(("comparison flipped", ast.Compare(node.left, ops, node.comparators)))
    elif isinstance(node, ast.BoolOp):
        out.append(("and/or swapped", ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(), node.values)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("not removed", node.operand))
    elif isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        out.append(("arithmetic changed", ast.BinOp(node.left, _ARITHMETIC[type(node.op)](), node.right)))
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            out.append(("boolean flipped", ast.Constant(not value)))
        elif isinstance(value, int):
            out.append(("constant changed", ast.Constant(value + 1)))
            if value != 0:
                out.append(("constant changed", ast.Constant(0)))
        elif isinstance(value, float):
            out.append(("constant changed", ast.Constant(value + 1)))
        elif isinstance(value, str):
            out.append(("constant changed", ast.Constant("" if value else "XX")))
    elif isinstance(node, ast.Call):
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(positional) == len(node.args) >= 2 and ast.dump(node.args[0]) != ast.dump(node.args[1]):
            args = [node.args[1], node.args[0], *node.args[2:]]
            out.append(("arguments swapped", ast.Call(node.func, args, node.keywords)))
    elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
        out.append(("condition negated", ("test", ast.UnaryOp(ast.Not(), node.test))))
    elif isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.Raise, ast.Delete)):
        out.append(("statement removed", "pass"))
        if isinstance(node, ast.AugAssign):
            out.append(("augmented assignment replaced", ast.Assign([node.target], node.value, lineno=0)))
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        out.append(("return value removed", "return None"))
    elif isinstance(node, ast.Continue):
        out.append(("continue -> break", "break"))
    elif isinstance(node, ast.Break):
        out.append(("break -> continue", "continue"))
    return out


class _Source:
    """A file's text, edited by byte spans (ast column offsets count UTF-8 bytes)."""

    def __init__(self, text: str):
        self.text = text
        self.data = text.encode()
        self.starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.starts[node.lineno - 1] + node.col_offset, self.starts[node.end_lineno - 1] + node.end_col_offset)

    def replace(self, start: int, end: int, text: str) -> str:
        return (self.data[:start] + text.encode() + self.data[end:]).decode()


def mutants_of(path: str, root: Path) -> list[Mutant]:
    file, _, function = path.partition("::")
    text = (root / file).read_text(encoding="utf-8")
    tree = ast.parse(text)
    parents = _parents(tree)
    source = _Source(text)
    scope = tree
    if function:
        scope = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.name == function), None)
        if scope is None:
            raise SystemExit(f"{file} has no function {function}")
    seen: set[str] = set()
    out = []
    for node in ast.walk(scope):
        if not hasattr(node, "lineno") or node is scope or _docstring(parents.get(node)) or _docstring(node) \
                or _skipped(node, parents):
            continue
        for operator, replacement in _variants(node):
            if isinstance(replacement, tuple):  # a part of a statement: its test
                _, new = replacement
                start, end = source.span(node.test)
                mutated = source.replace(start, end, f"({ast.unparse(new)})")
            elif isinstance(replacement, str):
                start, end = source.span(node)
                mutated = source.replace(start, end, replacement)
            elif isinstance(node, ast.stmt):
                start, end = source.span(node)
                mutated = source.replace(start, end, ast.unparse(ast.fix_missing_locations(replacement)))
            else:
                start, end = source.span(node)
                mutated = source.replace(start, end, f"({ast.unparse(ast.fix_missing_locations(replacement))})")
            if mutated == text or mutated in seen:
                continue
            try:
                compile(mutated, file, "exec")
            except SyntaxError:
                continue
            seen.add(mutated)
            out.append(Mutant(file, node.lineno, operator, mutated))
    return out


class Workspace:
    """A copy of the project where one file at a time is swapped for a mutant.
    It sits beside a link to ../shared, which the tests read."""

    def __init__(self, root: Path, base: Path):
        base.mkdir(parents=True, exist_ok=True)
        shared = base / "shared"
        if not shared.exists() and (root.parent / "shared").exists():
            shared.symlink_to((root.parent / "shared").resolve())
        self.dir = base / "project"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir()
        for name in COPIED:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, self.dir / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif source.exists():
                shutil.copy2(source, self.dir / name)
        if (root / ".cache").exists():  # the SDK's and Prism's installs, should a suite want them
            (self.dir / ".cache").symlink_to((root / ".cache").resolve())

    def run(self, tests: list[str], timeout: float) -> tuple[str, float]:
        env = {**os.environ, "PYTHONPATH": str(self.dir), "PYTHONDONTWRITEBYTECODE": "1"}
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                  cwd=self.dir, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - started
        outcome = "survived" if done.returncode == 0 else "killed" if done.returncode == 1 else f"error {done.returncode}"
        if outcome.startswith("error"):
            outcome += ": " + (done.stdout + done.stderr).strip().splitlines()[-1][:200]
        return outcome, time.monotonic() - started

    def swap(self, path: str, text: str) -> None:
        (self.dir / path).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=TARGETS, help="files (file::function) to mutate")
    parser.add_argument("--tests", nargs="+", default=TESTS, help="test files each mutant runs against")
    parser.add_argument("--sample", type=int, default=0, help="mutants to run, drawn at random (0: all)")
    parser.add_argument("--seed", type=int, default=1, help="the sample's random seed")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project to mutate (default: this one)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the copy goes (default: ROOT/.cache/mutate)")
    parser.add_argument("--only", type=int, nargs="+", default=None,
                        help="run these mutants (the #numbers a run prints), e.g. a sample's survivors after new tests")
    parser.add_argument("--list", action="store_true", help="count the mutants per file and stop")
    args = parser.parse_args(argv)

    root = args.root.resolve()
    targets = [t for t in args.targets if (root / t.partition("::")[0]).exists()]
    tests = [t for t in args.tests if (root / t.partition("::")[0]).exists()]
    mutants = [m for target in targets for m in mutants_of(target, root)]
    if args.list:
        for target in targets:
            file = target.partition("::")[0]
            print(f"{target}: {sum(m.path == file for m in mutants)}")
        print(f"{len(mutants)} mutants")
        return 0
    numbered = list(enumerate(mutants))
    if args.only:
        chosen = [numbered[i] for i in args.only]
    elif 0 < args.sample < len(mutants):
        chosen = random.Random(args.seed).sample(numbered, args.sample)
    else:
        chosen = numbered
    workspace = Workspace(root, (args.workdir or root / ".cache" / "mutate").resolve())
    originals = {m.path: (root / m.path).read_text(encoding="utf-8") for _, m in chosen}

    outcome, baseline = workspace.run(tests, timeout=600)
    if outcome != "survived":
        print(f"the unmutated project fails its tests ({outcome}): fix that first", file=sys.stderr)
        return 2
    timeout = 3 * baseline + 10
    print(f"{len(chosen)} of {len(mutants)} mutants (seed {args.seed}) of {', '.join(targets)}", flush=True)
    print(f"against {' '.join(tests)}: {baseline:.0f} s unmutated", flush=True)
    results = []
    for i, (number, mutant) in enumerate(chosen, 1):
        workspace.swap(mutant.path, mutant.source)
        try:
            outcome, took = workspace.run(ordered(tests, mutant.path), timeout)
        finally:
            workspace.swap(mutant.path, originals[mutant.path])
        results.append((number, mutant, outcome))
        print(f"[{i}/{len(chosen)}] {outcome:9} #{number} {mutant.path}:{mutant.line} {mutant.operator} ({took:.0f} s)",
              flush=True)

    killed = sum(o in ("killed", "timeout") for _, _, o in results)
    survivors = [(n, m, o) for n, m, o in results if o not in ("killed", "timeout")]
    print(f"\nkilled {killed} of {len(results)} ({100 * killed / max(len(results), 1):.1f} %)")
    if survivors:
        print(f"survivors: --only {' '.join(str(n) for n, _, _ in survivors)}")
    for number, mutant, outcome in survivors:
        print(f"\n--- {outcome}: #{number} {mutant.path}:{mutant.line} {mutant.operator}")
        print(mutant.diff(originals[mutant.path]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
