"""Metadata lives in pyproject.toml; this file declares the one C extension.

`export_pipeline.dynamodb._items` parses DynamoDB full-export JSON about four
times faster than Arrow's JSON reader (see README "Performance"). It is
optional: without a C compiler the install still succeeds and the converter
uses Arrow's reader (`export-pipeline dynamodb-to-parquet` says which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "export_pipeline.dynamodb._items",
            ["export_pipeline/dynamodb/_items.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
