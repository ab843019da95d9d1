"""Where a token's cycles go, measured on the chip: the perf port's counts, labelled by op.

The chip's performance probe (rtl/chip.py) shows, in every cycle, which unit works and the microcode
address and phase of its instruction; the capture loop counts cycles per (unit, address, phase)
(cosim/chip_sim.py CycleCounts). Here each address gets the label of the instruction the metal put
there (rtl/metal.py programs):

    qkv, o, gate_up, down   a layer's projection MATMULs (told apart by the scratchpad regions they
                            read and write: rtl/metal.py tile_layout)
    lm_head                 the head's streamed MATMUL
    attention               ATTN (the unit's output; its K, V and Q came in with ROPE and RQ)
    norm, rope, silu, rq    NORM, ROPE, SILU, RQ (ROPE and RQ also feed the attention unit: the KV
                            write is no op of its own)
    residual                ADD
    embed, argmax           EMBED, ARGMAX
    lora                    the four instructions of an adapter pass
    link                    RECV and SEND: the residual stream between units
    control                 fetch, decode and finish, and the cycles no unit works (the host
                            interface and the link registers hold the token)

A RUN cycle at an address whose instruction never runs (END, or beyond the program) has no label:
it is an error, as is a split that does not add up to the token's cycles.
"""

from __future__ import annotations

from hardwire.golden.errors import HardwireError
from hardwire.rtl import chip
from hardwire.rtl.isa import LORA_PASS_LEN, Instr, Op, is_pass_head
from hardwire.rtl.metal import Metal, tile_layout

from .chip_sim import CycleCounts

OPS = ("qkv", "o", "gate_up", "down", "lm_head", "attention", "norm", "rope", "silu", "residual", "rq",
       "embed", "argmax", "lora", "link", "control")
MATMUL_OPS = ("qkv", "o", "gate_up", "down", "lm_head")
_BY_OPCODE = {Op.RECV: "link", Op.SEND: "link", Op.NORM: "norm", Op.ROPE: "rope", Op.RQ: "rq", Op.ATTN: "attention",
              Op.ADD: "residual", Op.SILU: "silu", Op.EMBED: "embed", Op.ARGMAX: "argmax"}

Labels = dict[int, list[str | None]]  # unit (tile index, or chip.HEAD_TAG) -> the RUN label of each address


def address_labels(metal: Metal) -> Labels:
    """The label of every microcode address of every unit, from the metal's programs."""
    labels = {chip.HEAD_TAG: program_labels(metal.programs["head"], metal, head=True)}
    for unit in range(metal.die.tiles):
        labels[unit] = program_labels(metal.programs[chip.unit_name(unit)], metal, head=False)
    return labels


def program_labels(program: list[Instr], metal: Metal, head: bool) -> list[str | None]:
    """One label per instruction; None where the instruction never runs (END)."""
    labels, in_pass = [], 0
    for ins in program:
        if in_pass:
            labels.append("lora")
            in_pass -= 1
            continue
        labels.append(_label(ins, metal, head))
        if is_pass_head(ins):
            in_pass = LORA_PASS_LEN - 1
    return labels


def _label(ins: Instr, metal: Metal, head: bool) -> str | None:
    if ins.op == Op.END:
        return None
    if ins.op != Op.MATMUL:
        return _BY_OPCODE[ins.op]
    if head:
        return "lm_head"
    if ins.sram:
        return "lora"
    return _projection(ins, metal)


def _projection(ins: Instr, metal: Metal) -> str:
    """A layer MATMUL by its regions: q|k|v and gate|up write their own, o reads attn, down reads f."""
    layout = tile_layout(metal.config)
    if ins.src == layout.attn:
        return "o"
    if ins.src == layout.f:
        return "down"
    if layout.qkv <= ins.dst < layout.q:
        return "qkv"
    if layout.gate_up <= ins.dst < layout.f:
        return "gate_up"
    raise HardwireError(f"a MATMUL from scratchpad block {ins.src} to {ins.dst} is no projection of the layer")


def split(counts: CycleCounts, labels: Labels, cycles: int) -> dict[str, int]:
    """The token's cycles by op (every op of OPS, in its order). Raises if the perf port counted a
    RUN cycle at an address without a label, or if the split does not add up to `cycles`."""
    out = dict.fromkeys(OPS, 0)
    out["control"] = counts.idle
    for (unit, pc, run), n in sorted(counts.at.items()):
        if not run:
            out["control"] += n
            continue
        program = labels.get(unit, [])
        label = program[pc] if pc < len(program) else None
        if label is None:
            raise HardwireError(f"the perf port counted {n} RUN cycles of unit {unit} at microcode address {pc}, "
                                "where its program has no instruction that runs")
        out[label] += n
    if sum(out.values()) != cycles:
        raise HardwireError(f"the cycles by op add up to {sum(out.values())}, not the token's {cycles}")
    return out


def mean_split(splits: list[dict[str, int]]) -> dict[str, float]:
    """Cycles by op per token, averaged over `splits` (one decimal)."""
    if not splits:
        return {}
    return {op: round(sum(s[op] for s in splits) / len(splits), 1) for op in OPS}
