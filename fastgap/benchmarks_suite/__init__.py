"""The benchmark suite behind ``fastgap bench``: tasks, inputs, runner, report.

``tasks`` defines the tasks and published values, ``inputs`` samples and featurizes their
data (cached), ``runner`` trains / applies models and ``report`` writes results.json and
results.md. The public entry point is `fastgap.bench.run_bench`.
"""
