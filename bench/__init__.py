"""Benchmarks: `make bench-vault`, `make bench-etl`. They print figures; tests never assert speed."""
