"""Fuzzing of the native DynamoDB parser under sanitizers (see `native_parser`)."""
