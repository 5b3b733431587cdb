"""Sweeps: a base experiment times a grid of values, trained in chunks, stored chunk by chunk.

Flow, one module a step:
- grid.py: `expand_grid` turns a `SweepConfig` into validated `Cell`s (all errors before any
  training), baseline cells included;
- store.py: `cell_hash` keys a cell by what determines its results; `CellStore` holds the
  finished cells of a sweep;
- plan.py: `plan_sweep` keys every cell, looks in the store for cells already done and cuts the
  whole grid into chunks;
- run.py: `run_sweep` hands the missing chunks to an executor (study/executors.py) and stores
  a chunk's cells the moment it comes back; `reopen_sweep` rebuilds an outcome from the files.
report/sweep.py then writes the tables, plots and report from the outcome. Re-running the same
command therefore resumes; `force` recomputes everything.

Sweep folder (runs/<sweep name>/): cells/<name>.pack.npz per stored chunk of finished cells,
shared by every study of the sweep; one report folder per study (`study_key`: overrides, epochs,
repeats, seed, engine) with sweep.yaml (resolved sweep, cells, seeds, versions), results.csv,
summary.csv, sweep.png, sparsity.png, report.md.
"""
