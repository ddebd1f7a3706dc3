"""Benchmarks: each measures pulsetrace against its peer in the same run and reports ratios."""
