"""Prints docs/api-parity.md from surface.json: one row per option, one
column per language. bindings-python/tests/test_parity.py fails when the
file in docs/ is not what this prints."""

from __future__ import annotations

import json
import pathlib

SURFACE = json.loads((pathlib.Path(__file__).parent / "surface.json").read_text())
LANGUAGES = ("rust", "python", "node")


def camel(name: str, unit: str = "") -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest) + ("Ms" if unit == "duration" else "")


def spelled(language: str, name: str, spec: dict) -> str:
    if language not in spec.get("languages", LANGUAGES):
        return "-"
    return camel(name, spec.get("unit", "")) if language == "node" else name


def default(spec: dict) -> str:
    value = spec["default"]
    if value is None:
        return "unset"
    if spec.get("unit") == "duration":
        return f"{value} s"
    return f"`{json.dumps(value)}`" if not isinstance(value, str) or value.isidentifier() else value


def table() -> str:
    lines = [
        "# The public surface in each language",
        "",
        "Generated from `tests/parity/surface.json` by `python tests/parity/table.py`;",
        "the parity tests of each package check what it exposes against that file.",
        "Durations are seconds in Python (a float or a `timedelta`), milliseconds in",
        "Node (the name ends in `Ms`) and a `Duration` in Rust. \"-\": the language",
        "has no such option, for the reason given.",
        "",
        "One name per concept, only its case changing. Where the idiom differs,",
        "it differs the same way on every class: a value read without I/O is a",
        "Python property and a JavaScript method (`broker.capabilities` /",
        "`broker.capabilities()`, `worker.stats` / `worker.stats()`); a call to",
        "the broker is a method in both (`broker.inspect(...)`). Records are",
        "objects with fields in both, never dictionaries (`capabilities`,",
        "`message.failures`, the stats below). Errors carry the core's fields",
        "under the same names (`error.option`, `error.size`...), durations",
        "in them as a `timedelta` in Python and `...Ms` in Node.",
        "",
    ]
    for call, options in SURFACE["calls"].items():
        lines += [f"## {call}", "", "| Rust | Python | Node | default | note |", "|---|---|---|---|---|"]
        for name, spec in options.items():
            cells = [f"`{spelled(lang, name, spec)}`" if spelled(lang, name, spec) != "-" else "-" for lang in LANGUAGES]
            lines.append(f"| {' | '.join(cells)} | {default(spec)} | {spec.get('why', '')} |")
        lines.append("")
    lines += ["## Error codes", "", ", ".join(f"`{c}`" for c in SURFACE["error_codes"]), ""]
    for record in ("worker_stats", "group_stats", "capabilities", "failures"):
        fields = SURFACE[record]
        lines += [f"## {record}", "", "| Rust, Python | Node |", "|---|---|"]
        durations = ("oldest_age", "stats_delay")
        lines += [f"| `{f}` | `{camel(f, 'duration' if f in durations else '')}` |" for f in fields]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(), end="")
