"""One framework-free table: which shared category a profiled op's time belongs to.

Both frameworks' profiles are reduced to rows of (op name, seconds, count), each put in one of
CATEGORIES by the rules below, so a training step of torch and of Jittor can be compared
category by category (docs/REPORT.md, "Where the time goes"). No op is ever dropped: an op no
rule knows goes to "other" under its own name.

Regions. Some work cannot be told apart by op name alone (Adam's update is elementwise
arithmetic like a SiLU's; the loss is a mean like a normalisation's), so the backend marks
the regions it runs them in while a profile is taken (BackendBase.region; torch:
`record_function("diffbench:<region>")`, Jittor: `jt.profile_mark(<region>)`):
    data       fetching the batch and moving it to the device     -> host-device & data
    loss       the training loss (forward)                         -> loss
    backward   the backward pass (Jittor only: tells conv forward from backward)
    optimizer  gradient clipping, the Adam update, the EMA update  -> optimizer
Regions are only entered in profile cells: timed cells run unmarked code.

torch. Every profiler event's *self* time (its time minus its children's) is attributed to
the category of its outermost ancestor (or itself) that a TORCH_RULES pattern matches:
`aten::conv2d` owns the self time of the `mkldnn_convolution` inside it, the autograd node
`ConvolutionBackward0` that of `convolution_backward`, a region that of everything in it. An
aten op matching nothing is elementwise (views, adds, cats); any other name is "other". The
self time of the backward region itself (the autograd engine between ops) is no op's: it is
left to the unattributed remainder.

Jittor fuses ops into one kernel whose key lists its members ("«opkey0:reindex«...
«opkey1:binary«...«OP:multiply«..."). A fused op is categorised by what it contains, in this
order (JITTOR_RULES, first match wins):
    1. named library kernels: mkl_conv / cudnn_conv (forward, or backward by name),
       mkl_matmul / cublas matmuls;
    2. convolution patterns: reindex / reindex_reduce with a sliding window index
       (i3*stride-pad+i5): forward, or backward when made in the backward region;
       other reindex (index arrays, floor): resampling;
    3. the loss region;
    4. exp with a reduction (softmax) or broadcast-multiply-reduce(add) (Jittor's generic
       matmul / bmm): matmul & attention;
    5. two or more reductions, or a mean (group norm's statistics and their gradients):
       normalisation;
    6. elementwise-only content in the optimizer region: optimizer; in the data region, or a
       lone array op (a host copy): host-device & data;
    7. unary / binary / broadcast / reduce / index ops: activation & elementwise (also
       standalone reductions such as a bias gradient);
    8. anything else: other.
JAX (XLA) runs one compiled program; its profile has one event per executed HLO
instruction (models/jx/profiler.py), and the optimized HLO says what each is: its opcode,
the instructions fused into it, and every instruction's op_name, the JAX call path that made
it ("jit(_train_fn)/transpose(jvp(UNet))/up.1.block.0/norm1/reduce_sum": `transpose(` marks
the backward pass; modules are named by their canonical dotted paths; the backend's regions
are named scopes "diffbench:<region>"). An instruction is categorised by what it contains,
first match wins (XLA_RULES):
    1. a convolution: forward, or backward when its op_name is under transpose(;
    2. a dot (matmul; XLA:CPU's ynn fusions wrap one with its epilogue): matmul & attention;
    3. the loss or optimizer region (the instruction's own op_name, else most members');
    4. softmax: exp with a max-reduction, or either in an attention module;
    5. a member in a normalisation module (a path part named *norm*): normalisation;
    6. a member in the upsample scope: resampling;
    7. elementwise, reduction, data-movement and random-bit opcodes: activation &
       elementwise (copies and transposes too, as torch's aten::copy_);
    8. anything else (custom calls, collectives): other.

Jittor relays a convolution pattern to its oneDNN kernel when one exists: the pattern's row
then has TotalTime 0 (its work is the `mkl_conv*` row's), so summing TotalTime counts it once.
"""
import re

CATEGORIES = {
    "conv_fwd": "convolution (forward)",
    "conv_bwd": "convolution (backward)",
    "matmul": "matmul & attention",
    "norm": "normalization",
    "elementwise": "activation & elementwise",
    "resample": "resampling",
    "loss": "loss",
    "optimizer": "optimizer (Adam, EMA, clipping)",
    "data": "host-device & data",
    "other": "other",
}
# Not an op: the synced step time no op accounts for (Python, dispatch, the executor).
OVERHEAD = "overhead"
OVERHEAD_LABEL = "framework overhead (unattributed)"
REGIONS = ("data", "loss", "backward", "optimizer")
REGION_CATEGORY = {"data": "data", "loss": "loss", "optimizer": "optimizer"}

REGION_PREFIX = "diffbench:"   # torch record_function / JAX named scope & trace names
TORCH_RULES = [  # (regex on the event name, category); outermost matching ancestor wins
    (r"^diffbench:(data)$", "data"),
    (r"^diffbench:(loss)$", "loss"),
    (r"^diffbench:(optimizer)$", "optimizer"),
    (r"^Optimizer\.(step|zero_grad)#", "optimizer"),
    (r"evaluate_function: ConvolutionBackward", "conv_bwd"),
    (r"evaluate_function: (Addmm|Mm|Bmm|Baddbmm|Softmax|Linear|ScaledDotProduct\w*)Backward",
     "matmul"),
    (r"evaluate_function: Native(Group|Layer|Batch)NormBackward", "norm"),
    (r"evaluate_function: Upsample\w*Backward", "resample"),
    (r"evaluate_function: (MseLoss|L1Loss|SmoothL1Loss|HuberLoss)Backward", "loss"),
    (r"evaluate_function: torch::autograd::AccumulateGrad", "other"),
    (r"evaluate_function: ", "elementwise"),
    (r"^aten::(conv\dd|convolution|_convolution|mkldnn_convolution|cudnn_convolution)$",
     "conv_fwd"),
    (r"^aten::(linear|addmm|mm|bmm|baddbmm|matmul|softmax|_softmax|"
     r"scaled_dot_product_attention|_scaled_dot_product\w*)$", "matmul"),
    (r"^aten::(group_norm|native_group_norm|layer_norm|native_layer_norm|batch_norm)$",
     "norm"),
    (r"^aten::(upsample\w*|_upsample\w*|interpolate)$", "resample"),
    (r"^aten::(mse_loss|l1_loss|smooth_l1_loss|huber_loss)$", "loss"),
    (r"^aten::", "elementwise"),
]
_TORCH = [(re.compile(p), c) for p, c in TORCH_RULES]


def torch_rule(name):
    """The category a torch event name matches by itself, or None."""
    for pattern, category in _TORCH:
        if pattern.search(name):
            return category
    return None


def torch_category(chain):
    """The category of an event's self time; `chain` is its names from the outermost
    ancestor down to itself. Unknown (non-aten) names are "other". None for the self time
    of a region that is no category (backward): that is the framework's own work between
    ops (the autograd engine, Python), left to the unattributed remainder."""
    if chain[-1].startswith(REGION_PREFIX) and torch_rule(chain[-1]) is None:
        return None
    for name in chain:
        category = torch_rule(name)
        if category is not None:
            return category
    return "other"


# ---------------------------------------------------------------- Jittor

_MARKS = re.compile(r"^\[marks:([^\]]*)\]")
_OPKEY = re.compile(r"opkey[0-9a-f]+:(\w+)")
_OPNAME = re.compile(r"«OP:(\w+)")
_WINDOW = re.compile(r"INDEX\d:i\d\*\d+-\d+\+i\d")
_ELEMENTWISE = {"array", "broadcast_to", "unary", "binary", "ternary", "reduce", "index",
                "getitem", "setitem", "transpose", "reshape", "copy", "random", "where",
                "candidate", "fuse_transpose", "safe_clip", "clone"}


def jittor_parse(key):
    """(region or "", member op types, OP names) of a Jittor profile key."""
    m = _MARKS.match(key)
    marks = [r for r in m.group(1).split(",") if r] if m else []
    body = key[m.end():] if m else key
    types = _OPKEY.findall(body)
    if not types:  # a single op: its name is the key's first field
        types = [re.split(r"[«\[]", body, maxsplit=1)[0]]
    return (marks[-1] if marks else ""), types, _OPNAME.findall(body)


def jittor_category(key):
    region, types, ops = jittor_parse(key)
    first = types[0] if len(types) == 1 else ""
    # 1. library kernels, by name
    if re.match(r"(mkl|cudnn)_conv\w*backward", first):
        return "conv_bwd"
    if re.match(r"(mkl|cudnn)_conv", first):
        return "conv_fwd"
    if re.match(r"(mkl|cublas)_\w*matmul", first):
        return "matmul"
    # 2. convolution patterns and other index maps
    if "reindex" in types or "reindex_reduce" in types:
        if _WINDOW.search(key):
            return "conv_bwd" if region == "backward" or "reindex_reduce" in types else \
                "conv_fwd"
        return "resample"
    # 3. the loss region
    if region == "loss":
        return "loss"
    reductions = types.count("reduce")
    # 4. softmax; generic (broadcast) matmul
    if reductions and "exp" in ops:
        return "matmul"
    if reductions and types.count("broadcast_to") >= 2 and "multiply" in ops and "add" in ops:
        return "matmul"
    # 5. normalisation statistics and their gradients
    if reductions >= 2 or "mean" in ops:
        return "norm"
    known = set(types) <= _ELEMENTWISE
    # 6. regions of elementwise work
    if known and region in ("optimizer", "data"):
        return region
    if types == ["array"]:
        return "data"
    # 7. / 8.
    return "elementwise" if known else "other"


def jittor_short_name(key):
    """A readable name for a Jittor key: 'mkl_conv', or the fused members with their OPs,
    e.g. 'fused(reindex, broadcast_to, binary.multiply, reduce.add)', region first."""
    region, types, ops = jittor_parse(key)
    if len(types) == 1 and not _OPKEY.search(key):
        name = types[0]
        if ops:
            name += "." + ops[0]
    else:
        op_iter = iter(ops)
        members = [f"{t}.{next(op_iter, '?')}" if t in ("unary", "binary", "reduce") else t
                   for t in types]
        shown = members[:6] + ([f"+{len(members) - 6} more"] if len(members) > 6 else [])
        name = f"fused({', '.join(shown)})"
    return f"[{region}] {name}" if region else name


# ---------------------------------------------------------------- JAX (XLA HLO)

_XLA_REGION = re.compile(re.escape(REGION_PREFIX) + r"(\w+)")
_XLA_ATTENTION = re.compile(r"(^|[/.])attn([_./]|$)")
_XLA_NORM = re.compile(r"(^|[/.])\w*norm\w*(/|$)", re.IGNORECASE)
_XLA_OTHER = {"custom-call", "all-reduce", "all-gather", "reduce-scatter", "all-to-all",
              "collective-permute", "send", "recv", "infeed", "outfeed", "send-done",
              "recv-done", "all-reduce-start", "all-reduce-done", "sort", "fft",
              "triangular-solve", "cholesky"}


def _xla_region(op_name):
    m = _XLA_REGION.search(op_name or "")
    return m.group(1) if m else None


def xla_category(members, op_name=""):
    """The category of one executed HLO instruction: `members` are (opcode, op_name) of it
    and of everything fused into it; `op_name` is its own (a fusion's: its root's)."""
    opcodes = {o for o, _ in members}
    names = [n for _, n in members if n]
    if "convolution" in opcodes:
        backward = any("transpose(" in n for o, n in members if o == "convolution")
        return "conv_bwd" if backward else "conv_fwd"
    if "dot" in opcodes:
        return "matmul"
    region = _xla_region(op_name)
    if region is None and names:
        found = [r for r in map(_xla_region, names) if r]
        region = max(set(found), key=found.count) if len(found) * 2 > len(names) else None
    if region in REGION_CATEGORY:
        return REGION_CATEGORY[region]
    primitives = {n.rsplit("/", 1)[-1] for n in names}
    softmax = "exponential" in opcodes or "reduce_max" in primitives
    if softmax and ("exponential" in opcodes and "reduce_max" in primitives or
                    any(_XLA_ATTENTION.search(n) for n in names)):
        return "matmul"
    if any(_XLA_NORM.search(n.rsplit("/", 1)[0]) for n in names if "/" in n):
        return "norm"
    if any("/upsample/" in n for n in names):
        return "resample"
    if opcodes & _XLA_OTHER:
        return "other"
    return "elementwise"


def xla_short_name(instruction):
    """An HLO instruction's name without its number ("add_divide_fusion.18" ->
    "add_divide_fusion"): XLA names a fusion by its root operations."""
    return re.sub(r"\.\d+$", "", instruction)
