"""Assemble the report sections and write report.md (+ PNGs) and a self-contained report.html."""
import base64
import json
import re
import shutil
from pathlib import Path

import jinja2
import yaml

from bench.report import (distributed, facts, fmt, plots, profile, slots, sweep, tables,
                          variants)
from bench.report.headline import headline
from bench.report.load import ReportInputError, RunData, first_replicate, load_run, measured
from bench.stats.replicates import MIN_REPLICATES

TEMPLATES = Path(__file__).parent / "templates"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SAMPLE_GRIDS = 12
MAX_GRID_BYTES = 8 * 1024 * 1024


def default_out_dir(run: RunData) -> Path:
    return Path("reports") / _safe(run.run_id)


def _safe(name: str) -> str:
    """A file-name-safe version of a user string (cell ids, run ids, sample file names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "x"


# ---------------------------------------------------------------- sections

def build_sections(run: RunData, out_dir: Path, baseline: str) -> list:
    # Every figure comes from the processes that finished ok (load.measured); the headline,
    # the overview and Failed cells also read the failed ones, to say what failed and why.
    ok = measured(run)
    return [headline(run, baseline), overview(run), environment(run, baseline),
            training(ok, out_dir, baseline),
            sampling(ok, out_dir, baseline), variants.section(ok, out_dir, baseline),
            distributed.section(ok, out_dir, baseline),
            profile.section(ok, out_dir, baseline),
            resources(ok, out_dir),
            quality(ok, out_dir), failures(run), appendix(run)]


def overview(run: RunData) -> fmt.Section:
    s = fmt.Section("Overview", "overview")
    n = len(run.cells)
    n_ok = int((run.cells["status"] == "ok").sum()) if n else 0
    s.intro = (f"{n} cell(s) in this run, {n_ok} finished OK in every replicate." if n else
               "This run has no cells: nothing was measured.")
    t = facts.cells_table(run)
    if t:
        t.caption = ("A cell is one framework × workload (× variant). Each replicate is a fresh "
                     "process; the replicates of all cells ran in rounds, the frameworks of a "
                     "workload interleaved in a balanced order (AB BA BA AB ...), so drift of "
                     "the machine falls on every framework alike.")
        s.blocks.append(t)
    s.blocks.append(fmt.Note(replication_note(run)))
    s.blocks += slots.blocks(run)
    if not tables.has_gpu(run):
        s.blocks.append(fmt.Note("No GPU in this run: GPU utilisation, device memory and energy "
                                 "are not measured; CPU utilisation and host memory are shown instead."))
    for p in run.problems:
        s.blocks.append(fmt.Note(f"Damaged record file: {p}"))
    return s


def replication_note(run: RunData) -> str:
    """How many independent processes the numbers rest on, in words."""
    if run.cells.empty:
        return "No processes ran."
    counts = sorted(set(run.cells["replicates"]))
    n = counts[0] if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    text = (f"Independent processes per cell: {n} (runner.replicates). Intervals and ratios "
            f"in this report are over processes, not over the steps inside one process: they "
            f"say what re-running the benchmark would give.")
    if counts[0] < MIN_REPLICATES:
        text += (f" With fewer than {MIN_REPLICATES} processes a cell gets no interval: a "
                 f"single process says nothing about the next run (set runner.replicates >= "
                 f"{MIN_REPLICATES}).")
    return text


def environment(run: RunData, baseline: str = None) -> fmt.Section:
    """Where the numbers come from, for a person: the machine and run in one small table, the
    frameworks' settings as a table with one column per framework, and only the processes
    that ran otherwise. The full manifest and the configuration are in the appendix."""
    s = fmt.Section("Environment", "environment")
    t = facts.environment_summary(run)
    s.blocks.append(t or fmt.Note("manifest.json is missing or unreadable: the environment of "
                                  "this run is unknown."))
    processes = facts.process_settings(run)
    settings = facts.framework_settings(run, processes)
    ft = facts.framework_settings_table(run, baseline, settings)
    if ft:
        s.blocks.append(ft)
    else:
        s.blocks.append(fmt.Note("No framework settings: no process reported its versions "
                                 "(`start` record) and manifest.json has none."))
    table, notes = facts.settings_differences(run, settings, processes)
    if table:
        s.blocks.append(table)
    elif settings:
        s.blocks.append(fmt.Note(
            "All cells of each framework ran with the same settings: every process that "
            "reported them matched its framework's column above." if notes else
            "All cells of each framework ran with the same settings: every process matched "
            "its framework's column above."))
    s.blocks += notes
    s.blocks.append(fmt.Note("The full manifest and the configuration of the run are in the "
                             "appendix at the end of this report."))
    return s


def appendix(run: RunData) -> fmt.Section:
    """The full manifest (without the config and the process list, shown elsewhere) and the
    configuration, last: for whoever needs a detail the sections above leave out."""
    s = fmt.Section("Appendix: manifest and configuration", "appendix")
    if run.manifest:
        # config and processes have blocks of their own (the config below, the cells in the
        # overview)
        full = {k: v for k, v in run.manifest.items() if k not in ("config", "cells")}
        s.blocks.append(fmt.Code(json.dumps(full, indent=2, default=str),
                                 summary="Full manifest (manifest.json without config and "
                                         "processes)"))
    else:
        s.blocks.append(fmt.Note("manifest.json is missing or unreadable: no manifest to show."))
    config = run.manifest.get("config")
    if config is not None:
        s.blocks.append(fmt.Code(_as_yaml(config), summary="Full configuration of the run"))
    elif run.manifest:
        s.blocks.append(fmt.Note("manifest.json holds no configuration."))
    return s


def _as_yaml(obj) -> str:
    """Configs are written in YAML, so show them that way (JSON for what YAML cannot show)."""
    try:
        return yaml.safe_dump(obj, sort_keys=False, default_flow_style=None, width=100)
    except yaml.YAMLError:   # an object YAML cannot represent
        return json.dumps(obj, indent=2, default=str)


def training(run: RunData, out_dir: Path, baseline: str) -> fmt.Section:
    s = fmt.Section("Training", "training")
    if tables.cells_of(run, "train").empty:
        s.blocks.append(fmt.Note("The training workload was not run in this run."))
        return s
    t = tables.training_table(run, baseline)
    if t is None:
        s.blocks.append(fmt.Note("No training numbers: the training cells recorded nothing."))
        return s
    s.blocks += [t] + facts.failure_notes(run, tables.cells_of(run, "train")) + [
        plots.step_breakdown(run, out_dir), plots.replicate_medians(run, out_dir, "train")]
    one = first_replicate(run)  # curves over steps: one process per cell, not overlaid
    for fn in (plots.loss_per_step, plots.loss_per_epoch, plots.time_per_step,
               plots.time_per_epoch):
        s.blocks.append(fn(one, out_dir))
    return s


def sampling(run: RunData, out_dir: Path, baseline: str) -> fmt.Section:
    s = fmt.Section("Sampling", "sampling")
    if tables.cells_of(run, "sample").empty and tables.of_type(run.records, "sample").empty:
        speed = facts.generation_speed_table(run, baseline)
        if speed is None:
            s.blocks.append(fmt.Note("The sampling workload was not run in this run."))
        else:
            s.blocks += [fmt.Note("The sampling workload was not run in this run; the "
                                  "quality cells timed their sample generation:"), speed]
        return s
    t = tables.sampling_table(run, baseline)
    notes = facts.failure_notes(run, tables.cells_of(run, "sample"))
    if t is None:
        s.blocks += [fmt.Note("No sampling numbers: the sampling cells recorded no measured "
                              "batch.")] + notes
        return s
    s.blocks += [t] + notes + [plots.sampling_vs_steps(run, out_dir),
                               plots.replicate_medians(run, out_dir, "sample")]
    return s


def resources(run: RunData, out_dir: Path) -> fmt.Section:
    s = fmt.Section("Memory and utilisation", "resources")
    t = facts.memory_table(run)
    s.blocks.append(t or fmt.Note("No memory numbers: no cell recorded memory or monitor samples."))
    s.blocks += facts.failure_notes(run, run.cells)
    one = first_replicate(run)
    s.blocks += [plots.utilisation(one, out_dir), plots.memory_over_time(one, out_dir)]
    return s


def quality(run: RunData, out_dir: Path) -> fmt.Section:
    s = fmt.Section("Quality (FID) and samples", "quality")
    t = facts.fid_table(run)
    if t:
        s.blocks += [t, plots.fid_vs_steps(run, out_dir)]
    else:
        s.blocks.append(fmt.Note("No FID in this run (the quality workload was not run or "
                                 "recorded no `fid` record)."))
    grids = copy_sample_grids(run, out_dir)
    s.blocks += grids or [fmt.Note("No sample grids in this run.")]
    return s


def copy_sample_grids(run: RunData, out_dir: Path) -> list:
    """Sample-grid figures first (they sit side by side in HTML), then notes on skipped files.

    At most MAX_SAMPLE_GRIDS in all, shared fairly between the cells that have any, each cell
    showing its latest grids (a training cell's last grid is its final model)."""
    out, notes = [], []
    per_cell = {c["unit"]: sorted((Path(c["dir"]) / "samples").glob("*.png"))
                for _, c in run.units[run.units["status"] == "ok"].iterrows()}
    per_cell = {cell: pngs for cell, pngs in per_cell.items() if pngs}
    keep = max(1, MAX_SAMPLE_GRIDS // max(1, len(per_cell)))
    for cell, pngs in per_cell.items():
        if len(pngs) > keep:
            notes.append(fmt.Note(f"{cell}: showing the latest {keep} of {len(pngs)} sample "
                                  "grids (all are in the cell's samples/ folder)."))
        for png in pngs[-keep:]:
            try:
                if png.stat().st_size > MAX_GRID_BYTES or png.read_bytes()[:8] != PNG_SIGNATURE:
                    notes.append(fmt.Note(f"Sample file {cell}/samples/{png.name} skipped "
                                          "(not a PNG, or larger than 8 MiB)."))
                    continue
            except OSError:
                continue
            name = f"samples-{_safe(cell)}-{_safe(png.stem)}.png"
            shutil.copyfile(png, out_dir / name)
            out.append(fmt.Figure(name, f"Samples from {cell} ({png.name})"))
    return out + notes


def failures(run: RunData) -> fmt.Section:
    s = fmt.Section("Failed cells", "failures")
    failed = facts.failed_cells(run)
    if failed.empty:
        s.blocks.append(fmt.Note("No failed cells." if len(run.cells) else "No cells at all."))
        return s
    s.blocks.append(fmt.Table(
        ["process", "framework", "workload", "status", "error"],
        [[c["unit"], c["framework"], c["workload"], c["status"], facts.error_line(run, c)]
         for _, c in failed.iterrows()], numeric=False,
        caption="Error: the line that decides the failure (a failed compile's first `error:` "
                "line, else the first line of the error); the whole text follows."))
    for _, c in failed.iterrows():
        text = facts.error_text(run, c)
        if text:
            s.blocks.append(fmt.Code(text, summary=f"Error of {c['unit']}", open=True))
    return s


# ---------------------------------------------------------------- output

def md_escape(text) -> str:
    """For markdown text and table cells: no raw HTML, no broken tables."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_slug(title) -> str:
    """The anchor a code host (GitHub, GitLab) gives a heading."""
    return re.sub(r"[^\w\- ]", "", str(title).strip().lower()).replace(" ", "-")


def md_fence(text) -> str:
    longest = max((len(m) for m in re.findall(r"`+", str(text))), default=0)
    return "`" * max(3, longest + 1)


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["md"] = md_escape
    env.filters["fence"] = md_fence
    env.filters["slug"] = md_slug
    return env


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


DEFAULT_BASELINE = "torch"


def write_report(run_dir, out_dir=None, baseline: str | None = None) -> dict:
    """Build the report of one results directory into out_dir (default reports/<run-id>).

    baseline: the framework ratios divide by; None = torch, or the first framework by name
    when the run has no torch cell. Returns {"out_dir", "markdown", "html", "images": [Path]}.
    Raises ReportInputError (a ValueError) for an unusable run_dir or a baseline that is not
    a framework of the run."""
    run = load_run(run_dir)
    if sweep.is_sweep(run.manifest):
        return write_sweep_report(run, out_dir, baseline)
    frameworks = sorted(set(run.cells["framework"])) if len(run.cells) else []
    baseline = _baseline(run, frameworks, baseline)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = build_sections(run, out_dir, baseline)
    return _write(run, sections, out_dir, baseline, frameworks, f"diffbench report: {run.run_id}")


def _baseline(run: RunData, frameworks: list, baseline: str | None) -> str:
    """The framework ratios divide by: as asked (one of the run's), else torch, else the
    first by name."""
    if baseline is None:
        return DEFAULT_BASELINE if DEFAULT_BASELINE in frameworks or not frameworks \
            else frameworks[0]
    if frameworks and baseline not in frameworks:
        raise ReportInputError(f"baseline={baseline!r} is not a framework of {run.run_dir}; "
                               f"valid: {', '.join(frameworks)}")
    return baseline


def _write(run: RunData, sections: list, out_dir: Path, baseline: str, frameworks: list,
           title: str, images=()) -> dict:
    """report.md and report.html of `sections` in out_dir; the paths written."""
    context = {"run": run, "baseline": baseline,
               "config_name": run.manifest.get("config_name") or run.manifest.get("config_path"),
               "colors": plots.framework_colors(frameworks)}
    md_path = out_dir / "report.md"
    md_path.write_text(_env(False).get_template("report.md.j2").render(
        sections=sections, title=title, **context), encoding="utf-8")
    html_path = write_html(sections, out_dir / "report.html", title, **context)
    figures = [b for s in sections for b in s.blocks if isinstance(b, fmt.Figure)]
    return {"out_dir": out_dir, "markdown": md_path, "html": html_path,
            "images": [out_dir / f.name for f in figures] + list(images)}


def write_sweep_report(run: RunData, out_dir=None, baseline: str | None = None) -> dict:
    """A sweep (bench/run/sweep.py): each point's whole report in points/<point>/, then the
    sweep's own report.md/html: how the gap changes with size, the points, the first point's
    environment, every point's failures, the sweep's manifest."""
    points = sweep.load_points(run.run_dir, run.manifest)
    frameworks = sorted({fw for pt in points if pt.run is not None
                         for fw in pt.run.cells["framework"]})
    baseline = _baseline(run, frameworks, baseline)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_names, images = {}, []
    for pt in points:
        if pt.run is None or pt.run.cells.empty:
            continue
        sub = Path("points") / _safe(pt.name)
        paths = write_report(pt.run.run_dir, out_dir / sub, baseline=baseline)
        out_names[pt.name] = f"{sub}/report.md · {sub}/report.html"
        images += paths["images"]
    sections = sweep.section(points, out_dir, baseline, out_names)
    first = next((pt.run for pt in points if pt.run is not None and len(pt.run.cells)), None)
    if first is not None:
        sections.append(environment(first, baseline))
    fails = fmt.Section("Failed cells", "failures")
    for pt in points:
        if pt.run is not None:
            for block in failures(pt.run).blocks:
                if isinstance(block, fmt.Table):
                    block.rows = [[f"{pt.name}/{r[0]}"] + r[1:] for r in block.rows]
                if not (isinstance(block, fmt.Note) and block.text.startswith("No ")):
                    fails.blocks.append(block)
    if not fails.blocks:
        fails.blocks.append(fmt.Note("No failed cells."))
    sections += [fails, appendix(run)]
    return _write(run, sections, out_dir, baseline, frameworks,
                  f"diffbench sweep report: {run.run_id}", images)


def write_html(sections, html_path, title, *, meta=None, baseline=None, config_name=None,
               colors=None, **context) -> Path:
    """One self-contained HTML page of `sections` (their figures' PNGs lie beside html_path
    and are inlined as data: URIs). The run report and `harness.py ab` both render this way."""
    html_path = Path(html_path)
    figures = [b for s in sections for b in s.blocks if isinstance(b, fmt.Figure)]
    uris = {f.name: _data_uri(html_path.parent / f.name) for f in figures}
    html = _env(True).get_template("report.html.j2").render(
        sections=sections, title=title, meta=meta, baseline=baseline, config_name=config_name,
        colors=colors or {}, image_uri=uris.__getitem__, **context)
    html_path.write_text(html, encoding="utf-8")
    return html_path
