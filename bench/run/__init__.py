"""The run engine: planning a run's grid (grid), running its units in-process, in worker processes or on Ray
(runner, executors, worker), turning predictions into tidy rows (rows), and the run directory they write: the
results store, its lock, its manifest (store, runlock, provenance). Also what reads a run back to continue it:
loading fitted methods (loading) and adding post-hoc scores from stored logits (rescore).

Nothing here imports bench.report or bench.own: the engine does not know who reads its runs.
"""
