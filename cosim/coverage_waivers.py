"""Code-coverage waivers: the units of a base-grid module that no metal can ever start.

hw_tile and hw_head are built from the same tile (rtl/tile.py), so each carries every unit, but
the metal generator gives each module a fixed instruction set: layer tiles run layer_program or
passthrough_program, the head runs head_program (rtl/metal.py). A unit whose starting opcodes
none of its module's programs issue is unreachable on that module, whatever the model.

The waivers are derived, not written by hand: `waived_units` asks the metal generator which
opcodes each module's programs use, so a program that starts using a unit drops its waiver. The
merge (tools/code_coverage.py) takes a waived unit's lines out of both the hit and the total count
and lists them apart with the reason; a waiver that names no line of its module is an error there.
"""

from __future__ import annotations

from functools import cache

from hardwire.golden.gguf_model import ModelConfig
from hardwire.rtl import metal
from hardwire.rtl.isa import SILU_EPILOGUE, Instr, Op

# each unit's instance name in the converted Verilog (MyHDL prefixes its processes with it) and the
# opcodes that start it (the sequencer's decode in rtl/tile.py; a MATMUL with SILU_EPILOGUE starts the SiLU
# unit too: started_ops); the other units serve every program
UNIT_OPS = {
    "add_unit0": {Op.ADD},
    "rq_unit0": {Op.RQ},
    "silu_unit0": {Op.SILU},
    "rope_unit0": {Op.ROPE},
    "attention_unit0": {Op.ROPE},  # a ROPE with `feed` starts it; ATTN only writes its output
    "embed_unit0": {Op.EMBED},
    "argmax_tracker0": {Op.ARGMAX},
}
PROGRAMS = {"hw_tile": "layer_program and passthrough_program", "hw_head": "head_program"}


@cache
def program_ops(module: str) -> frozenset[Op]:
    """Every opcode the metal generator can put into `module`'s microcode. The programs are fixed
    sequences: their fields depend on the model, their opcodes do not, so one shape stands for all."""
    cfg = ModelConfig(n_layers=1, d_model=64, d_ffn=128, n_heads=2, n_kv_heads=1, vocab=64, context=8,
                      rope_theta=10000.0, rms_eps=1e-5)
    if module == "hw_head":
        programs = [metal.head_program(cfg, 2, 0, 0, 0, 0, final_norm=0)]
    elif module == "hw_tile":
        tensors = dict.fromkeys(metal.LAYER_TENSORS, 0)
        programs = [metal.layer_program(cfg, 2, tensors, {"attn_norm": 0, "ffn_norm": 0}, tensors),
                    metal.passthrough_program(cfg)]
    else:
        raise KeyError(module)
    return frozenset(op for program in programs for instr in program for op in started_ops(instr))


def started_ops(instr: Instr) -> tuple[Op, ...]:
    """The opcodes whose units `instr` starts: its own, and SILU for a MATMUL whose epilogue is the SiLU gate."""
    if instr.op == Op.MATMUL and instr.aux & SILU_EPILOGUE:
        return (Op.MATMUL, Op.SILU)
    return (instr.op,)


def waived_units(module: str) -> dict[str, str]:
    """unit instance -> why it is unreachable on `module`; {} for a module without waivers."""
    if module not in PROGRAMS:
        return {}
    used = program_ops(module)
    return {unit: (f"no {'/'.join(op.name for op in sorted(ops))} in {module}'s microcode: it runs only "
                   f"{PROGRAMS[module]} (rtl/metal.py), whose opcodes are {', '.join(op.name for op in sorted(used))}")
            for unit, ops in UNIT_OPS.items() if not ops & used}
