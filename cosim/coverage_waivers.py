"""Code-coverage waivers: the units of a base-grid module that no metal can ever start.

hw_tile and hw_head are built from the same tile (rtl/tile.py), so each carries every unit, but
the metal generator gives each module a fixed instruction set: layer tiles run layer_program or
passthrough_program, the head runs head_program (rtl/metal.py). A unit whose starting opcodes
none of its module's programs issue is unreachable on that module, whatever the model.

The tables read by a field of the metal are the other unreachable code: a case arm whose label no via
map can hold. The format-trait ROMs have arms for 16 format codes, and the metal writes only those of
FORMAT_CODE; the LoRA exponent tables have arms for 64 exponent fields, and an adapter image holds only
exponents in [LORA_EXP_MIN, LORA_EXP_MAX] (rtl/adapter_image.py), and only the layer tiles' programs read
the LoRA SRAM (the head's lanes carry the table too). `waived_arms` finds those arms.

The waivers are derived, not written by hand: `waived_units` asks the metal generator which
opcodes each module's programs use, so a program that starts using a unit drops its waiver, and the
arms' labels come from the same tables the metal generator and the adapter image use. The merge
(tools/code_coverage.py) takes waived lines out of both the hit and the total count and lists them
apart with the reason; a waiver that names no line of its module is an error there.
"""

from __future__ import annotations

import re
from functools import cache

from hardwire.golden.gguf_model import ModelConfig
from hardwire.golden.spec import LORA_EXP_MAX, LORA_EXP_MIN
from hardwire.rtl import metal
from hardwire.rtl.die import DIES, LORA_EXP_FIELD, Die
from hardwire.rtl.isa import FORMAT_CODE, SILU_EPILOGUE, Instr, Op

# each unit's instance name in the converted Verilog (MyHDL prefixes its processes with it) and the
# opcodes that start it (the sequencer's decode in rtl/tile.py; a MATMUL with SILU_EPILOGUE starts the SiLU
# unit too: started_ops); the other units serve every program
UNIT_OPS = {
    "add_unit0": {Op.ADD},
    "rq_unit0": {Op.RQ},
    "silu_unit0": {Op.SILU},
    "silu_epilogue0": {Op.SILU},  # a MATMUL with SILU_EPILOGUE hands it its blocks
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
    return frozenset(op for instr in _instructions(module) for op in started_ops(instr))


@cache
def reads_lora(module: str) -> bool:
    """Whether any of `module`'s programs, on a die with a LoRA SRAM, has a MATMUL reading it (an adapter pass)."""
    die = next(die for die in DIES.values() if die.lora_rank)
    return any(instr.sram for instr in _instructions(module, die))


def _instructions(module: str, die: Die | None = None) -> list[Instr]:
    cfg = ModelConfig(n_layers=1, d_model=64, d_ffn=128, n_heads=2, n_kv_heads=1, vocab=64, context=8,
                      rope_theta=10000.0, rms_eps=1e-5)
    if module == "hw_head":
        programs = [metal.head_program(cfg, 2, 0, 0, 0, 0, final_norm=0)]
    elif module == "hw_tile":
        tensors = dict.fromkeys(metal.LAYER_TENSORS, 0)
        programs = [metal.layer_program(cfg, 2, tensors, {"attn_norm": 0, "ffn_norm": 0}, tensors, die),
                    metal.passthrough_program(cfg)]
    else:
        raise KeyError(module)
    return [instr for program in programs for instr in program]


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


_EXPONENT_FIELDS = frozenset(e & ((1 << LORA_EXP_FIELD) - 1) for e in range(LORA_EXP_MIN, LORA_EXP_MAX + 1))


def format_arms(module: str) -> tuple[frozenset[int], str]:
    return frozenset(FORMAT_CODE.values()), ("format codes no format has: the metal writes only FORMAT_CODE's "
                                             "(rtl/isa.py)")


def exponent_arms(module: str) -> tuple[frozenset[int], str]:
    if not reads_lora(module):
        return frozenset(), (f"{module}'s microcode reads no LoRA SRAM: {PROGRAMS[module]} (rtl/metal.py) has no "
                             "adapter pass")
    return _EXPONENT_FIELDS, (f"exponent fields outside [{LORA_EXP_MIN}, {LORA_EXP_MAX}]: an adapter image holds none "
                              "(rtl/adapter_image.py)")


# case tables indexed by a field of the metal: the processes holding one -> (the labels a via map can hold on a
# module, why the others cannot be)
ARM_TABLES = {
    "format-code arms": (re.compile(r"trait_rom\d+_lookup$"), format_arms),
    "LoRA exponent arms": (re.compile(r"(exponent_scale\d+_lookup|fp16_scale\d+_decode(_either)?)$"), exponent_arms),
}
_ARM = re.compile(r"^\s*(\d+|default)\s*:")
_CASE = re.compile(r"^\s*case\b")


def waived_arms(lines: list[str], names: list[str], module: str) -> dict[str, tuple[list[int], str]]:
    """table name -> (the 1-based line numbers of its unreachable one-line case arms, why) in a Verilog source of
    `module` (hw_tile or hw_head, whose lanes a hw_lanes source may be), `names` being each line's process
    (tools/code_coverage.py process_names). A `default` arm is unreachable when every reachable label has its own
    arm."""
    found: dict[str, tuple[list[int], str]] = {}
    labels: list[tuple[int, str]] = []  # the current case statement's arms: (line, label)
    table = None
    for number, (line, name) in enumerate(zip(lines, names, strict=True), 1):
        if _CASE.match(line):
            table = next((t for t, (pattern, _) in ARM_TABLES.items() if pattern.search(name)), None)
            labels = []
        elif table and (arm := _ARM.match(line)):
            labels.append((number, arm.group(1)))
        elif table and line.strip() == "endcase":
            reachable, why = ARM_TABLES[table][1](module)
            explicit = {int(label) for _, label in labels if label != "default"}
            found.setdefault(table, ([], why))[0].extend(
                n for n, label in labels
                if (reachable <= explicit if label == "default" else int(label) not in reachable))
            table = None
    return {t: found[t] for t in found if found[t][0]}
