"""`gateway coverage`: which unified operations and fields each mapping serves."""

from pathlib import Path

from .mapping import Provider
from .models import OBJECTS

VERBS = ("create", "list", "retrieve")


def _mapped_fields(provider: Provider, name: str) -> set[str]:
    ops = [op for ops in provider.objects[name].operations.values() for op in ops]
    # remote_data is the gateway's own, from the raw record, wherever a record is read.
    return {"remote_data", *(f for op in ops for f in op.unifier.fields)}


def _carried_fields(provider: Provider, name: str) -> set[str]:
    creates = provider.objects[name].operations.get("create", ())
    return {path[1] for op in creates for path in op.consumed if path[:1] == ("body",) and len(path) > 1}


def markdown(providers: list[Provider]) -> str:
    names = [p.name for p in providers]
    lines = ["### Operations", "", "| object | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for obj in OBJECTS.values():
        cells = []
        for provider in providers:
            verbs = [v for v in VERBS if provider.operations(obj.name, v)]
            cells.append(", ".join(verbs) or "—")
        lines.append(f"| {obj.name} | " + " | ".join(cells) + " |")
    lines += ["", "### Fields", "",
              "Unified output fields each provider fills; on create, the input fields it carries upstream.", ""]
    for provider in providers:
        lines += [f"#### {provider.name}", "", "| object | output fields filled | not filled | create carries |",
                  "|---|---|---|---|"]
        for name in provider.objects:
            output = OBJECTS[name].output.__struct_fields__
            filled = _mapped_fields(provider, name)
            carried = sorted(_carried_fields(provider, name))
            lines.append(f"| {name} | {len(filled & set(output))}/{len(output)} | "
                         f"{', '.join(f for f in output if f not in filled) or '—'} | {', '.join(carried) or '—'} |")
        lines.append("")
    return "\n".join(lines)


START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"


def write(path: Path, matrix: str) -> None:
    """Put `matrix` between the coverage markers of the Markdown file at path."""
    text = path.read_text(encoding="utf-8")
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"{path} lacks the markers {START} and {END}")
    path.write_text(f"{head}{START}\n{matrix.strip()}\n{END}{tail}", encoding="utf-8")
