"""Metadata lives in pyproject.toml; this file declares the one C extension.

`export_pipeline.dynamodb.convert._items` parses DynamoDB export lines (full and
incremental exports): 0.20 s of CPU per 300k items where Arrow's JSON reader
and its struct-to-column step took 1.15 s (docs/performance.md). It is
optional: without a C compiler the install still succeeds and the converter
takes its slower paths (`export-pipeline dynamodb-to-parquet` says which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "export_pipeline.dynamodb.convert._items",
            ["export_pipeline/dynamodb/convert/_items.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
