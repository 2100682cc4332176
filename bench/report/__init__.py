"""Everything that reads finished runs: loading them into tidy rows (runs), the leaderboard tables (tables, groups,
layout, stats), their writers (export: Markdown, CSV, HTML; latex, texcheck), plots, the terminal summary and what a
run prints at its end (summary, outcome), per-image paired comparisons (paired, versus), and the regression gate
(gate). The facts of every metric (name, direction, decimals, tolerance) are in metric_facts.

It reads run directories through bench.run.store; nothing here trains, attacks or runs a model.
"""
