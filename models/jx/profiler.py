"""JAX's op profile, reduced to the shared categories of models/common/opcats.py.

jax.profiler traces the profiled steps; its xplane protobuf, read back with
jax.profiler.ProfileData, holds one event per executed HLO instruction (a thunk of XLA:CPU's
executor; on a GPU, the instruction's kernels), each with the instruction's name and module as
stats (`hlo_op`, `hlo_module`). What an instruction is comes from the optimized HLO of the
backend's compiled executables (`compiled.as_text()`): its opcode, what is fused into it and
each member's op_name, the JAX call path that made it (opcats.xla_category has the rules).

Concurrency. XLA:CPU's executor runs independent thunks at once on its threads, and a
convolution's thunk returns before its work is done (an `end: <name>` marker on the thread
that finishes it closes it). Adding up the thunks' durations would count such wall time twice
or more; instead every instant of the trace is shared equally among the instructions running
at it. The ops' total is then the time any op was running (at most the steps' time) and the
rest is framework overhead, as for torch and Jittor. Control flow (while, conditional, call)
is no op: the thunks of its body are.
"""
import bisect
import collections
import glob
import os
import re
import shutil
import tempfile

from models.common.opcats import REGION_CATEGORY, REGION_PREFIX, xla_category, xla_short_name

CONTROL_FLOW = {"while", "conditional", "call"}

# -- the optimized HLO ---------------------------------------------------------------------
_MODULE = re.compile(r"^HloModule ([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(")
_CALLS = re.compile(r"\bcalls=\{?([^},]+(?:, *%[\w.\-]+)*)\}?")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def parse_hlo(text):
    """(module name, {instruction: (category, short name, opcode)}) of one optimized HLO
    module: every instruction of every computation, a fusion categorised by its members."""
    module, computations, current = "", {}, None
    instructions = {}   # name -> (opcode, op_name, called computations)
    for line in text.splitlines():
        m = _MODULE.match(line)
        if m:
            module = m.group(1)
            continue
        m = _COMPUTATION.match(line)
        if m:
            current = computations.setdefault(m.group(1), [])
            continue
        m = _INSTRUCTION.match(line)
        if m is None or current is None:
            continue
        name, opcode = m.groups()
        op_name = _OP_NAME.search(line)
        calls = _CALLS.search(line)
        called = [c.strip().lstrip("%") for c in calls.group(1).split(",")] if calls else []
        instructions[name] = (opcode, op_name.group(1) if op_name else "", called)
        current.append(name)

    def members(name, seen):
        opcode, op_name, called = instructions[name]
        out = [(opcode, op_name)]
        if opcode not in CONTROL_FLOW:
            for comp in called:
                for inner in computations.get(comp, ()):
                    if inner not in seen:
                        seen.add(inner)
                        out += members(inner, seen)
        return out

    table = {}
    for name, (opcode, op_name, _) in instructions.items():
        if opcode in CONTROL_FLOW:
            table[name] = (None, name, opcode)
            continue
        found = members(name, {name})
        table[name] = (xla_category(found, op_name), xla_short_name(name), opcode)
    return module, table


# -- the trace -----------------------------------------------------------------------------
def _stats(event):
    return dict(event.stats)


def op_spans(planes):
    """[(start_ns, end_ns, module, hlo_op)] of every executed HLO instruction (an async one
    closed by its `end:` marker, which may be on another thread: they share a flow id) and
    [(start_ns, end_ns, region)] of the host regions (the backend's trace annotations, e.g.
    "diffbench:data")."""
    opened, ends, regions = [], collections.defaultdict(list), []
    for plane in planes:
        gpu = plane.name.startswith("/device:")
        if not (gpu or plane.name == "/host:CPU"):
            continue
        for line in plane.lines:
            if gpu and line.name != "XLA Ops":
                continue   # a GPU plane: its "XLA Ops" line has one event per instruction
            for e in line.events:
                if e.name.startswith(REGION_PREFIX):
                    regions.append((e.start_ns, e.start_ns + e.duration_ns,
                                    e.name[len(REGION_PREFIX):]))
                    continue
                st = dict(e.stats)
                if "hlo_op" in st:
                    opened.append((st.get("_p"), [e.start_ns, e.start_ns + e.duration_ns,
                                                  st.get("hlo_module", ""), st["hlo_op"]]))
                elif e.name.startswith("end: ") and "_c" in st:
                    ends[st["_c"]].append(e.start_ns + e.duration_ns)
    for times in ends.values():
        times.sort()
    for flow, span in opened:   # a flow id may recur from step to step: the first end after
        times = ends.get(flow, [])
        i = bisect.bisect_left(times, span[1])
        if i < len(times):
            span[1] = times[i]
    return [span for _, span in opened], regions


def share_wall(spans):
    """{key: seconds}: the time line cut at every span's start and end, each piece's length
    shared equally among the spans open over it. [(start_ns, end_ns, key)] in."""
    points = []
    for i, (start, end, _) in enumerate(spans):
        if end > start:
            points += [(start, 1, i), (end, -1, i)]
    points.sort(key=lambda p: (p[0], p[1]))
    shares = collections.defaultdict(float)
    for _, _, key in spans:
        shares[key] += 0.0
    active, last = set(), None
    for t, kind, i in points:
        if active and t > last:
            piece = (t - last) / 1e9 / len(active)
            for j in active:
                shares[spans[j][2]] += piece
        last = t
        if kind == 1:
            active.add(i)
        else:
            active.discard(i)
    return dict(shares)


class JaxOpProfiler:
    """jax.profiler's trace around the profiled steps (Python's own tracer off: it would time
    the interpreter, not XLA). `modules` returns the optimized HLO texts of the executables
    that may run (read after the steps: the executables exist by then)."""

    raw_name = "profile-jax.xplane.pb"

    def __init__(self, modules, sync=None):
        self.modules, self.sync = modules, sync
        self.dir = None
        self.path = None

    def __enter__(self):
        import jax

        self.dir = tempfile.mkdtemp(prefix="diffbench-jax-trace-")
        options = jax.profiler.ProfileOptions()
        options.python_tracer_level = 0
        jax.profiler.start_trace(self.dir, profiler_options=options)
        return self

    def __exit__(self, *exc):
        import jax

        if self.sync is not None:
            self.sync()
        jax.profiler.stop_trace()
        found = glob.glob(os.path.join(self.dir, "**", "*.xplane.pb"), recursive=True)
        self.path = found[0] if found else None
        return False

    def save(self, path):
        """The xplane protobuf (open it in XProf / TensorBoard's profile plugin)."""
        if self.path:
            shutil.copyfile(self.path, path)

    def ops(self):
        import jax

        if self.path is None:
            raise RuntimeError("jax.profiler wrote no trace")
        tables = dict(parse_hlo(text) for text in self.modules())
        spans, regions = op_spans(jax.profiler.ProfileData.from_file(self.path).planes)
        keyed, counts = [], collections.Counter()
        for start, end, module, hlo_op in spans:
            category, short, _ = tables.get(module, {}).get(hlo_op, ("other", hlo_op, ""))
            if category is None:   # control flow: its body's thunks are the ops
                continue
            keyed.append((start, end, (short, category)))
            counts[(short, category)] += 1
        for start, end, region in regions:
            key = (f"[{region}] host", REGION_CATEGORY.get(region, "other"))
            keyed.append((start, end, key))
            counts[key] += 1
        shutil.rmtree(self.dir, ignore_errors=True)
        return [{"name": n, "category": c, "seconds": s, "count": counts[(n, c)]}
                for (n, c), s in share_wall(keyed).items()]
