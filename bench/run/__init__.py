"""Running a benchmark matrix: the config schema (`schema`), checking one value against it
(`checks`), loading and validating a config (`config`, with its `variants` entries checked by
`variants`), the cells and their balanced replicate order (`matrix`), the runner that starts
one worker process per cell replicate (`runner`), the worker (`worker`), the workloads it
runs (`workloads`: train, sample, quality) and checkpoints (`checkpoint`).

May import records, stats, data, measure and quality.
"""
