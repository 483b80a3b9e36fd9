"""Dagster objects built the same way for every source: assets, sensors, checks.

The builders take a `export_pipeline.contract.Source` and know nothing of
any particular one; `export_pipeline.definitions` puts what they build
together.
"""
