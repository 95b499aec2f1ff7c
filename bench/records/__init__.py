"""The results folder, the base every other layer writes to or reads from.

Owns the layout (results/<run-id>/manifest.json, cells/<unit>/...), the append-only record
writer, atomic JSON writes, tolerant reading of JSON lines, and loading a run into pandas
frames (`results.load_run`); and the error text the harness records or shows, made readable
(`errors`: escape codes out, the decisive line of a failure). Imports nothing from bench.
"""
