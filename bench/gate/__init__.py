"""The regression gate: result sets reduced to per-process timings (`sides`) and judged
cell by cell with the replicate statistics (`compare`; harness.py compare).

The top layer: may import every other (records, stats and, for HTML output, report).
"""
