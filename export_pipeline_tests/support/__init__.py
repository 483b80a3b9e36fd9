"""Test support shared by the test modules, the fixtures (conftest.py) and the bench scripts.

- `local_cloud`: free ports, settings for a separate local cloud, an in-process
  moto server with the DynamoDB export emulation.
- `bigquery`: query rows as dicts; the MERGE of test change rows.
- `rds`: configurations and runs of the RDS assets; MySQL instances in the local cloud.
- `native`: what to do when the native DynamoDB parser is not built.
- `aws_samples`: small exports in AWS's documented formats, written by the tests
  themselves (independent of the local cloud, which must produce the same formats).

Fixtures stay in the conftest.py files; everything a module imports lives here.
"""
