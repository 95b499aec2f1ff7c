"""Measuring: device-synchronised clocks (`timer`), the process and GPU monitor (`monitor`,
psutil and NVML), the environment manifest (`env`) and the machine calibration score
(`calibrate`). Later: profilers and FLOP counts.

May import bench.records (the monitor appends records) and bench.stats.
"""
