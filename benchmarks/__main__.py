"""Run every benchmark: ``.venv/bin/python -m benchmarks [name ...]``.

Every module ``benchmarks/*_bench.py`` exposes ``run() -> list[dict]``; each row is one
measurement beside its baseline from the same run::

    {"name": ..., "value": 12.3, "unit": "ms", "baseline": "bare REGISTER", "baseline_value": 10.1,
     "target": "<= baseline + 25 ms", "met": True, "detail": {...}}

The table goes to stdout; each module's rows go to ``benchmarks/results/<module>.json`` (with the
host, Python version and time), all of them to ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = ["benchmark", "value", "unit", "baseline", "baseline value", "target", "met"]
    table = [[r["name"], _fmt(r.get("value")), r.get("unit", ""), r.get("baseline", ""),
              _fmt(r.get("baseline_value")), r.get("target", ""),
              {True: "yes", False: "NO", None: ""}[r.get("met")]] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: list[str]) -> int:
    names = sorted(p.stem for p in HERE.glob("*_bench.py"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    RESULTS.mkdir(exist_ok=True)
    meta = {"host": platform.node(), "python": sys.version.split()[0],
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    everything: list[dict[str, Any]] = []
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        rows = module.run()
        everything.extend(rows)
        (RESULTS / f"{name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    print()
    print_table(everything)
    (RESULTS / "latest.json").write_text(json.dumps({**meta, "rows": everything}, indent=2))
    print(f"\nJSON written to {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
