"""FLOPs of a compiled XLA program, counting loop bodies as many times as they run (what a speed is
quoted against: `xla_gflop / seconds` over the machine's peak, `metajax.bench.machine`).

XLA's `compiled.cost_analysis()["flops"]` counts the body of a while loop once, whatever its trip
count; `lax.map` over tasks and the `lax.scan` of MAML's inner loop are while loops, so it
undercounts such a step by about the number of tasks (times the inner steps). `hlo_flops` walks the
optimised HLO text instead: 2 x the multiply-adds of every convolution (only window taps that read
input data, not padding or dilation holes, as XLA counts them) and dot, with each while body
multiplied by its `known_trip_count` (and fusions / calls followed). Elementwise work is not
counted (it is small next to the convolutions of a conv4).
"""

from __future__ import annotations

import math
import re

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(.*\))?\s*->.*\{\s*$")
_NAME = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OP = re.compile(r"^\s*([\w\-]+)\((.*)$")
_SHAPE = re.compile(r"^[a-z]+\d*\[([\d,]*)\]")


def _dims(shape: str) -> list[int] | None:
    m = _SHAPE.match(shape)
    if not m:
        return None
    return [int(d) for d in m.group(1).split(",") if d]


def _instruction(line: str):
    """(name, shape, op, rest) of an HLO instruction line; tuple shapes may contain spaces."""
    m = _NAME.match(line)
    if not m:
        return None
    name, rhs = m.groups()
    if rhs.startswith("("):
        depth, end = 0, len(rhs)
        for index, ch in enumerate(rhs):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                end = index + 1
                break
        shape, after = rhs[:end], rhs[end:]
    else:
        shape, _, after = rhs.partition(" ")
    m = _OP.match(after)
    if not m:
        return None
    return name, shape, m.group(1), m.group(2)


def _operands(rest: str) -> list[str]:
    depth, cur = 0, ""
    for ch in rest:
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        cur += ch
    return [t.strip().lstrip("%").split(" ")[-1].lstrip("%") for t in cur.split(",") if t.strip()]


def _window_attr(window: str, key: str, n: int, default: int) -> list:
    m = re.search(key + r"=([\d_x]+)", window)
    if not m:
        return [default] * n
    return m.group(1).split("x")


def _valid_taps(size: int, window: int, out: int, stride: int, lo: int, lhs_dilate: int,
                rhs_dilate: int) -> int:
    """(output position, window tap) pairs of one spatial dimension that read an input element
    (not padding, not a hole of lhs dilation)."""
    last = (size - 1) * lhs_dilate
    count = 0
    for o in range(out):
        for w in range(window):
            p = o * stride + w * rhs_dilate - lo
            if 0 <= p <= last and p % lhs_dilate == 0:
                count += 1
    return count


def conv_flops(lhs: list[int], rhs: list[int], out: list[int], attrs: str) -> float:
    """2 x the multiply-adds of an HLO convolution that touch input data (as XLA counts them)."""
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", attrs)
    window = re.search(r"window=\{([^}]*)\}", attrs)
    if not labels:
        return 0.0
    lhs_l, rhs_l, out_l = labels.groups()
    digits = sorted(c for c in rhs_l if c.isdigit())
    n = len(digits)
    w = window.group(1) if window else ""
    sizes = [int(v) for v in _window_attr(w, "size", n, 1)]
    strides = [int(v) for v in _window_attr(w, "stride", n, 1)]
    pads = [(int(v.split("_")[0]) if "_" in str(v) else 0) for v in _window_attr(w, "pad", n, 0)]
    lhs_d = [int(v) for v in _window_attr(w, "lhs_dilate", n, 1)]
    rhs_d = [int(v) for v in _window_attr(w, "rhs_dilate", n, 1)]
    taps = 1
    for k, d in enumerate(digits):
        taps *= _valid_taps(lhs[lhs_l.index(d)], sizes[k], out[out_l.index(d)], strides[k],
                            pads[k], lhs_d[k], rhs_d[k])
    other = math.prod(out) / math.prod(out[out_l.index(d)] for d in digits)
    return 2.0 * taps * other * rhs[rhs_l.index("i")]


def hlo_flops(text: str) -> float:
    """Convolution and dot FLOPs of an HLO module (`compiled.as_text()`), loops unrolled."""
    shapes: dict[str, list[int] | None] = {}
    own: dict[str, float] = {}
    calls: dict[str, list[tuple[str, int]]] = {}
    entry, current = None, None
    for line in text.splitlines():
        if not line.startswith(" ") and line.rstrip().endswith("{"):
            m = _COMPUTATION.match(line.strip())
            if m:
                current = m.group(1)
                own[current], calls[current] = 0.0, []
                if line.startswith("ENTRY"):
                    entry = current
            continue
        parsed = _instruction(line)
        if not parsed or current is None:
            continue
        name, shape, op, rest = parsed
        shapes[name] = _dims(shape)
        if op == "convolution":
            lhs, rhs = _operands(rest)[:2]
            if shapes.get(lhs) and shapes.get(rhs) and shapes[name] is not None:
                own[current] += conv_flops(shapes[lhs], shapes[rhs], shapes[name], rest)
        elif op == "dot":
            lhs = _operands(rest)[0]
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
            a, out = shapes.get(lhs), shapes[name]
            if a and out is not None and contracting:
                k = math.prod(a[int(i)] for i in contracting.group(1).split(",") if i)
                own[current] += 2.0 * math.prod(out) * k
        if op == "while":
            body = re.search(r"body=%?([\w.\-]+)", rest)
            trip = re.search(r'known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"', rest)
            if body:
                calls[current].append((body.group(1), int(trip.group(1)) if trip else 1))
        else:
            for key in ("calls", "to_apply"):
                for callee in re.findall(key + r"=%?([\w.\-]+)", rest):
                    calls[current].append((callee, 1))
            branches = re.search(r"branch_computations=\{([^}]*)\}", rest)
            if branches:  # a conditional runs one branch: count the most expensive
                names = [b.strip().lstrip("%") for b in branches.group(1).split(",")]
                calls[current].append(("|".join(names), 1))

    memo: dict[str, float] = {}

    def total(comp: str) -> float:
        if "|" in comp:
            return max(total(c) for c in comp.split("|"))
        if comp not in memo:
            memo[comp] = own.get(comp, 0.0) + sum(n * total(c) for c, n in calls.get(comp, []))
        return memo[comp]

    return total(entry) if entry else float("nan")
