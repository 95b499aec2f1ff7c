"""The report's first section: who is faster, by how much, and is it still the same model.

A reader opens a report for that answer; the full tables follow. The numbers here are the
same as in the tables below (bench/report/tables.py, over processes), picked and phrased.
"""
import math

from bench.report import fmt, profile
from bench.report.facts import failure_words
from bench.report.load import RunData, measured
from bench.report.tables import (_key, cells_of, has_gpu, same_settings, sampling_metrics,
                                 training_metrics, training_ratios)
from bench.run.config import ConfigError, build_specs
from bench.stats.replicates import ratio_of_replicates
from models.parity import read_record

# (label, metric column of training_metrics, what a ratio > 1 means)
TRAINING_KEYS = [("training step time", "wall_s_median", "time"),
                 ("training images/s", "images_per_s_median", "rate")]
# the verdict words for a ratio clearly above / below 1, by what the quantity is
WORDS = {"time": ("slower", "faster"), "rate": ("faster", "slower"),
         "memory": ("larger", "smaller")}
MEMORY_KEYS = [("peak device memory", "device_peak_bytes"),
               ("peak host RSS", "host_peak_rss_bytes")]


def _sampler_label(r) -> str:
    name = str(r.get("sampler", "?")).upper()
    steps = _key(r.get("steps"))
    extra = []
    if str(r.get("sampler")) == "ddim" and str(r.get("eta", fmt.DASH)) != fmt.DASH:
        extra.append(f"η={_key(r.get('eta'))}")
    extra.append(f"batch {_key(r.get('batch_size'))}")
    return f"sampling time per step, {name}-{steps} ({', '.join(extra)})"


def key_ratios(run: RunData, baseline: str) -> list:
    """[(quantity, framework, Ratio, kind)] for every non-baseline framework; kind is a key
    of WORDS. Only ratios with a value: both sides had a process that finished ok (pass
    load.measured(run), so that a failed process adds no figure)."""
    out = []
    metrics = training_metrics(run)
    if not metrics.empty:
        ratios = training_ratios(metrics, baseline)
        gpu = has_gpu(run)
        for _, row in metrics.iterrows():
            if row["framework"] == baseline:
                continue
            for label, metric, better_high in TRAINING_KEYS:
                r = ratios.get((row["cell"], metric))
                if _has_value(r):
                    out.append((_with_variant(label, row), row["framework"], r, better_high))
            for label, metric in MEMORY_KEYS[0 if gpu else 1:]:
                r = ratios.get((row["cell"], metric))
                if _has_value(r):
                    out.append((_with_variant(f"{label}, training", row), row["framework"], r,
                                "memory"))
                    break
    sm = sampling_metrics(run)
    if not sm.empty:
        keys = [k for k in ("sampler", "steps", "eta", "skip", "variance", "batch_size")
                if k in sm]
        for _, r in sm.iterrows():
            if r["framework"] == baseline:
                continue
            base = same_settings(sm, r, keys, baseline)
            if len(base):
                ratio = ratio_of_replicates(r["time_groups"], base.iloc[0]["time_groups"])
                if _has_value(ratio):
                    out.append((_sampler_label(r), r["framework"], ratio, "time"))
    return out


def _has_value(r) -> bool:
    return r is not None and math.isfinite(r.value)


# The key quantities of a workload's cell, named once for a cell that has none of them.
UNMEASURED = {"train": "training step time, images/s, memory",
              "sample": "sampling time per step"}


def unmeasured(run: RunData, baseline: str) -> list:
    """[(quantity, framework, words)]: each non-baseline framework's matched cell that has no
    key ratio because every process of it, or of the baseline's cell, failed; the words say
    how many processes failed, and on which side (the first error is in the sentence)."""
    out = []
    units = run.units
    for workload, quantity in UNMEASURED.items():
        cells = cells_of(run, workload)
        base = units[units["cell"].isin(cells.loc[cells["framework"] == baseline, "cell"])]
        for _, c in cells[cells["framework"] != baseline].iterrows():
            mine = units[units["cell"] == c["cell"]]
            for who, side in (("", mine), (f"{baseline} (the baseline): ", base)):
                if len(side) and not (side["status"] == "ok").any():
                    out.append((quantity, c["framework"],
                                who + failure_words(run, side, first_error=False)))
                    break
    return out


def _with_variant(label, row):
    v = str(row.get("variant") or "")
    return f"{label} ({v})" if v and v != "nan" else label


def _judged(r, kind):
    """'slower' / 'faster' (or 'larger' / 'smaller' for memory) / 'no clear difference' from
    the interval, 'unclear' without one."""
    if not r.has_interval:
        return "unclear"
    if r.low <= 1.0 <= r.high:
        return "no clear difference"
    above, below = WORDS[kind]
    return above if r.low > 1.0 else below


def parity_verdict(run: RunData):
    """(one line, the recorded check or None) for the run's model, diffusion and optimiser."""
    cfg = run.manifest.get("config")
    if not cfg:
        return "not checked (the run has no recorded config)", None
    try:
        unet, diffusion, optim = build_specs(cfg)
    except (ConfigError, KeyError, TypeError):
        return "not checked (the run's config does not describe a model)", None
    rec = read_record(unet, diffusion, optim)
    if rec is None:
        argv = run.manifest.get("command") or []
        name = next((a for a in argv if str(a).endswith((".yaml", ".yml"))), "CONFIG")
        return (f"not checked for these settings (run `harness.py parity --config {name}`; "
                "`make bench` does it first)"), None
    if not rec["errors"]:
        return "not checked", rec
    parts = []
    for fw, table in rec["errors"].items():
        worst = [f"{cat} {table[cat]['error']:.1e} (≤ {table[cat]['tolerance']:g})"
                 for cat in ("forward", "loss", "grad", "params_after_steps") if table.get(cat)]
        failed = [cat for cat, v in table.items() if not v["ok"]]
        parts.append(f"{fw} vs {rec['reference']}: "
                     f"{'FAILED in ' + ', '.join(failed) + '; ' if failed else ''}"
                     f"relative errors {', '.join(worst)}")
    verdict = "passed" if rec["passed"] else "FAILED"
    note = f" ({rec['note']})" if rec.get("note") else ""
    return (f"{verdict} on the same weights and inputs: {'; '.join(parts)}; checked "
            f"{rec['checked_at']}{note}"), rec


def summary(run: RunData, baseline: str, ratios) -> str:
    """Two or three generated sentences; a framework with no measurement says so, with how
    many of its processes failed and the first error, instead of a number."""
    device = _device(run)
    parts = []
    frameworks = [baseline] + [f for f in dict.fromkeys(
        [f for _, f, _, _ in ratios] + sorted(set(run.cells["framework"]))) if f != baseline]
    for fw in frameworks:
        units = run.units[run.units["framework"] == fw]
        bits = [] if fw == baseline else \
            _measured_bits([(q, r, kind) for q, f, r, kind in ratios if f == fw], baseline)
        failed = failure_words(run, units, first_error=False)
        if failed and not (units["status"] == "ok").any():
            bits = [f"no measurement — {failure_words(run, units)}; see Failed cells"]
        elif failed:
            bits.append(f"{failed}, its figures are from the others (Failed cells)")
        if bits:
            who = f"{fw} (the baseline)" if fw == baseline else fw
            parts.append(f"On {device}, {who}: " + "; ".join(bits) + ".")
    text = " ".join(parts) or ("Nothing to compare: this run has no second framework measured "
                               f"against {baseline} (or no measured cell).")
    if ratios:
        n = sorted({r.n for _, _, r, _ in ratios} | {r.n_baseline for _, _, r, _ in ratios})
        text += (f" Intervals are 95% over independent processes ({'/'.join(map(str, n))} per "
                 "side), i.e. what a re-run would give; ratios > 1 mean more time than "
                 f"{baseline}.")
    return text


def _measured_bits(mine, baseline) -> list:
    """A framework's training and sampling step as multiples of the baseline's, in words."""
    train = [(q, r, kind) for q, r, kind in mine if q.startswith("training step time")]
    samp = [(q, r, kind) for q, r, kind in mine if q.startswith("sampling")]
    bits = []
    for q, r, kind in train[:1]:
        bits.append(f"its training step takes {r.value:.2f}× {baseline}'s time "
                    f"({_judged(r, kind)}{_ci(r)})")
    if samp:
        vals = [r.value for _, r, _ in samp]
        verdicts = {_judged(r, kind) for _, r, kind in samp}
        span = (f"{min(vals):.2f}×" if len(vals) == 1 or max(vals) - min(vals) < 0.005
                else f"{min(vals):.2f}-{max(vals):.2f}×")
        bits.append(f"a sampling step takes {span} {baseline}'s time over {len(samp)} "
                    f"sampler setting(s) ({' / '.join(sorted(verdicts))})")
    return bits


def _ci(r):
    return f", 95% CI {r.low:.2f}-{r.high:.2f}" if r.has_interval else f"; {r.reason}"


def _device(run: RunData) -> str:
    host = run.manifest.get("host") or {}
    gpu = run.manifest.get("gpu") or {}
    names = [d.get("name") for d in gpu.get("devices") or [] if d.get("name")]
    if names:
        return names[0]
    cpu = host.get("cpu_model") or "this CPU"
    threads = run.manifest.get("threads")
    return f"{cpu} ({threads} threads)" if threads else cpu


def headline(run: RunData, baseline: str) -> fmt.Section:
    s = fmt.Section("Headline", "headline")
    ok = measured(run)   # the figures: processes that finished ok; the words: every process
    ratios = key_ratios(ok, baseline)
    s.intro = summary(run, baseline, ratios)
    rows = [[q, fw, f"{_judged(r, kind)}", fmt.ratio(r)] for q, fw, r, kind in ratios]
    rows += [[q, fw, "no measurement", f"{words}; see Failed cells"]
             for q, fw, words in unmeasured(run, baseline)]
    if rows:
        s.blocks.append(fmt.Table(["quantity", "framework", "verdict",
                                   f"÷ {baseline} (95% CI over processes)"], rows,
                                  caption="The key ratios of the tables below: framework ÷ "
                                          f"{baseline} of the same quantity (for images/s > 1 "
                                          "is faster, elsewhere > 1 is slower or larger). "
                                          "'no clear difference': the interval holds 1."))
    line, _ = parity_verdict(run)
    s.blocks.append(fmt.Note(f"Same model? Parity: {line}."))
    why = where_the_time_goes(ok, baseline)
    if why:
        s.blocks.append(fmt.Note(f"Why? {why} (section Where the time goes)"))
    return s


def where_the_time_goes(run: RunData, baseline: str) -> str:
    """The profile section's gap sentences, when the run has profile cells."""
    summary = profile.profile_summary(run)
    return " ".join(t for t in (profile.gap_sentence(summary, p, baseline)
                                for p in profile.PHASES) if t)
