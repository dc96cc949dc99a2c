"""nbflow's benchmarks: ``python -m benchmarks`` prints one table (see benchmarks/README.md).

Kept free of heavy imports: worker processes of the process-pool baseline import
``benchmarks.funcs`` (and so this package) to unpickle the no-op functions.
"""
