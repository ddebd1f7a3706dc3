"""``python -m benchmarks [--quick] [--only NAME ...] [--markdown FILE]``: run every benchmark."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
from pathlib import Path

from benchmarks.harness import Comparison


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.1f} µs"
        if value < 1:
            return f"{value * 1e3:.1f} ms"
        return f"{value:.2f} s"
    return f"{value:,.1f} {unit}"


def table(results: list[Comparison]) -> str:
    import statistics

    lines = ["| benchmark | ours | peer | ours (median) | peer (median) | ratio ours/peer (min–max) | goal | met |",
             "|---|---|---|---|---|---|---|---|"]
    for c in results:
        lo, hi = c.spread
        met = {True: "yes", False: "**no**", None: "–"}[c.met]
        lines.append(f"| {c.name} | {c.ours_label} | {c.peer_label} | {_fmt(statistics.median(c.ours), c.unit)} | "
                     f"{_fmt(statistics.median(c.peer), c.unit)} | {c.ratio:.2f}× ({lo:.2f}–{hi:.2f}) | "
                     f"{c.goal_text()} | {met} |")
    notes = [f"- {c.name}: {c.note}" for c in results if c.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--only", nargs="*", default=None, help="module names, e.g. bench_startup")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    args = parser.parse_args(argv)
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n in args.only or n.removeprefix("bench_") in args.only]
    results: list[Comparison] = []
    failed = 0
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            results.extend(module.run(args.quick))
        except Exception:
            failed += 1
            traceback.print_exc()
    text = table(results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
