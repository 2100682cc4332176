"""What ``bench run`` prints when a run ends: its summary tables, where the results are, and the failed cells."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def summarize_errors(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e['method']} seed {e['seed']}: {e['error']}" for e in errors)


def report_outcome(outcome, out: Console, err: Console) -> int:
    """A finished run's summary tables and results path (and its failed cells); the exit code of ``bench run``."""
    from bench.report.summary import summary_tables

    groups = (outcome.store.read_manifest() or {}).get("eval_set_groups", {})
    for table in summary_tables(outcome.store.rows(), groups):
        out.print(table)
    out.print(f"results: {outcome.store.dir / 'results.csv'}  ({outcome.cells_done} cells computed, "
              f"{outcome.cells_skipped} resumed)", highlight=False, soft_wrap=True)
    if outcome.errors:
        err.print(f"error: {len(outcome.errors)} failed: {summarize_errors(outcome.errors)}", highlight=False,
                  soft_wrap=True)
        return 1
    return 0
