"""Statistics over replicate processes: the one definition of a median, a ratio, an interval
and a regression verdict that the report and the gate share (docs/STATISTICS.md).

numpy and scipy only; imports nothing from bench.
"""
