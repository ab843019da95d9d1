"""The attention unit of a tile (docs/numerics.md section 7, docs/architecture.md 4a).

Base grid: the Verilog depends only on the die (`AttentionLimits`: kv_tokens, max_heads,
max_kv_dim, max_d_model, and attn_heads as `engines`). The model's attention shape arrives at run time on ports latched
with each start (the tile drives them from the ROPE instruction that feeds the unit: groups =
heads, blocks = kv_heads, aux = head_blocks, and ATTN_SCALE in rom), so two models on one die get
byte-identical Verilog and one unit runs any shape within the die's maxima.

It owns the KV SRAM (B16 keys after RoPE and values, `kv_tokens` positions), a query buffer
and the score buffer, and has `engines` datapaths (the die's attn_heads) that run in lockstep
under one controller. The query heads go in rounds: in round r, engine e computes query head
r * engines + e (the last round may be partly filled; an engine without a head is gated off and
its registers never load). Each engine runs four passes, all engines on the same t and b in the
same cycle:

    scores    for t in 0..P-1, b in 0..nbh-1: one K block and one Q block per cycle;
              s_t = floor_shift(sat40(sum_b sat40(floor_shift(D_b, eq_b + ek_b + 16))) * ATTN_SCALE, -15)
              into the score buffer, and the running max
    softmax   for t: one score per cycle; u = -floor_shift((s_t - max) * LOG2E_Q, -15),
              p_t = EXP2_LUT[(u & 0xFFFF) >> 6] >> min(u >> 16, 17) back into the score buffer,
              and the sum of p
    divide    RCP = floor(2**48 / sum p), a restoring divider, one quotient bit per cycle
              (one engine) or four (several engines: the same quotient in 9 cycles, not 33)
    weighted  for b, then t: one V block per cycle; w_t = (p_t * RCP) >> 24 and per lane
              acc += (w_t * v) << (ev + 24), exact in 73 bits; after the last t the block
              leaves as rq(sat63(acc), -48, 16)

Nothing of numerics 7 changes with the engines: each engine computes its head exactly as one
engine would (the sum over b in order, with its saturations). The output stays head-major
(head 0's nbh blocks first). One engine sends each block straight to the requantizer and the
bus. Several engines finish block b of every head of the round in the same cycle, so their
saturated lane sums (sat63) land in the output buffer (word b, a lane per engine), and after
the round's weighted pass the controller reads them out head by head, one block a cycle, into
the one requantizer.

P = pos + 1 keys, nbh = head_blocks (head_dim / 32). Query head h reads KV head
floor(h * kv_heads / heads), which is h // (heads / kv_heads) for the Llama shapes (heads a
multiple of kv_heads); the controller steps it with an accumulator as the Q beats pass, no
divider: engine e takes head e's KV head from it, and after each round every engine adds the
accumulator's value at head `engines` (with the carry of the shares). A shape
whose heads is not a multiple of kv_heads is not refused (no Llama model has one, and the
metal generator never prints one); it still addresses only inside the SRAMs.

SRAM layout, so that every engine reads its own block in the same cycle:
    KV SRAM   2 * kv_tokens words of max_kv_dim / 32 lanes (a B16 block each, WORD_BITS): word
              2t holds the K blocks of position t, word 2t + 1 its V blocks, KV head-major
              (lane kv_head * nbh + b). A KV write stores one lane a beat (per-lane write
              enable), so it needs only the product kv_heads * nbh; a read takes one word and
              each engine its own lane of it (a column select per engine). The bits are those
              of one block per position and K/V block of the die: 2 * kv_tokens * max_kv_dim / 32
              blocks, whatever the engines.
    query     a lane per engine: round r's block b in word r * nbh + b (q_depth words: the
              most any shape the die takes needs)
    scores    kv_tokens words of a field per engine (s_t, then p_t)
    output    (several engines) max_head_blocks words of a lane per engine: 32 sat63 sums

Ports (block buses of docs/architecture.md 4a; everything is sampled on the rising edge):
    rst          in   synchronous, active high: back to idle; SRAM contents are kept
    start_kv     in   pulse with `pos`, `kv_heads`, `head_blocks`: the next 2*kv_blocks beats
                      on the input bus are the K blocks then the V blocks of that position
                      (kv_blocks = kv_heads * head_blocks, KV head-major), into the KV SRAM
    start_attn   in   pulse with `pos` and the geometry ports: the next heads*head_blocks beats
                      are the Q blocks of all heads (head-major, after RoPE); then the unit
                      attends over keys 0..pos and emits head_blocks B16 blocks per head,
                      head 0 first, on the output bus
    pos          in   the position, bitlen(kv_tokens) bits (so kv_tokens itself is expressible
                      and refused)
    heads        in   query heads, bitlen(max_heads) bits        } sampled with a start and
    kv_heads     in   KV heads, bitlen(max_heads) bits           } held by the unit until the
    head_blocks  in   head_dim / 32, bitlen(max_kv_dim/32) bits   } command is done
    attn_scale   in   ATTN_SCALE (numerics 7), 16 bits unsigned, sampled with start_attn
    in_valid, in_data (32 x 48), in_exp (8)      input block bus: B16 mantissas (the low 16
                      bits of each lane are kept) and the block exponent; beats count from the
                      cycle after the start, at any pace (no back-pressure)
    out_valid, out_data (32 x 48), out_exp (8)   output block bus: B16, sign-extended
    done         out  pulses when a command is complete: the cycle after its last input beat
                      for start_kv, the cycle after its last output block for start_attn
    busy         out  a command is running: from the cycle after its start to the cycle
                      before its done (a new start is taken in the done cycle)
    refused      out  pulses the cycle after a start that was not taken: the unit was busy,
                      both starts came together, pos >= kv_tokens (KV_OVERFLOW), or the
                      geometry is outside the die (a zero count, kv_heads > heads,
                      heads > max_heads, kv_heads*head_blocks > max_kv_dim/32,
                      heads*head_blocks > max_d_model/32); nothing is written or computed
    lut_addr     out  EXP2_LUT read addresses (10 bits per engine, engine e at bits 10e..10e+9),
                      registered
    lut_data     in   EXP2_LUT[lut_addr] (17 bits per engine, likewise), one cycle after the
                      address (a via ROM with a read port per engine)

Cycles (`AttentionGeometry.attend_cycles(P, engines)`, checked by the tests), in the run-time
values: start_attn to done, inclusive, with the Q beats back to back, is on one engine
    1 + heads*nbh + heads * head_cycles(P),
    head_cycles(P) = (2*nbh + 1) * P + HEAD_OVERHEAD,   HEAD_OVERHEAD = 59:
scores nbh*P + 12 (pipeline drain), softmax P + 5, divide 33 + 2, weighted nbh*P + 7; and on
E > 1 engines, with rounds of n_r = E heads (the last one heads - E * (rounds - 1))
    1 + heads*nbh + sum over rounds of round_cycles(P, n_r),
    round_cycles(P, n) = (2*nbh + 1) * P + ROUND_OVERHEAD + n * nbh,   ROUND_OVERHEAD = 37:
the same drains, divide 9 + 2, and the read-out of the output buffer (n * nbh blocks, 2 cycles
of latency). SmolLM2 (nbh 2, 9 heads) at P = 1024: 9 * 5179 cycles per token and layer on one
engine, 5 * 1024 + 37 + 18 + 19 = 5194 on nine (hw-s135w), and 5 * P + 74 at any P (149 at
P = 15). start_kv to done takes 1 + 2*kv_heads*nbh cycles at full pace
(`AttentionGeometry.kv_write_cycles`).

Simulation cost: every datapath register loads only under its stage's valid bit (an engine
other than engine 0 also under its `active` bit, so an engine without a head costs a gate per
pass), wide assembly is done by bit loops inside those enabled processes, the geometry is
checked and latched only in a start cycle, and no register is read after it is written in its
process (a simulator then needs no shadow copies). Measured with the native run on one engine:
idle about 30-40 ns per cycle above a bare counter (the requantizer cell, which is
combinational, and the gather of its input; the run-time geometry added nothing measurable),
busy about 0.5 us per cycle at 256 keys. The combinational wiring grows with the engines: the
output buffer's write word (every engine's 32 sums), the score buffer's words and the EXP2_LUT
addresses are concatenations a simulator evaluates every cycle of the unit's clock (the tile's
gated clock: an idle tile pays nothing).

Contract on the data (the tile's datapath guarantees it; numerics 7): value exponents lie in
[-24, 9] (values come from rq(acc, -24, 16) of 48-bit words), so each weighted term is
(w * v) << (ev + 24) with a shift of 0..33 and the 73-bit lane sums are exact. Outside that
range the shift is clamped (the harness refuses such values).
"""

from __future__ import annotations

from dataclasses import dataclass

from myhdl import ConcatSignal, Signal, always, always_comb, always_seq, block, enum, intbv

from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACT_BITS, ATTN_OUT_FRAC, BLOCK, LOG2E_Q, SCORE_BITS, SCORE_FRAC

from ..bus import EXP_BITS, WORD
from ..cells.requant import requant
from ..cells.sram import address_bits, lane_select_sram, lane_sram, sram, word_write_lane_read_sram
from ..cells.wiring import (
    bit_signal,
    guarded_add,
    guarded_register,
    signed_signal,
    unsigned_signal,
    unused,
    zero_extended,
)

WORD_BITS = BLOCK * ACT_BITS + EXP_BITS  # one B16 block in SRAM: 32 mantissas, exponent on top
LUT_ADDR_BITS, LUT_DATA_BITS = spec.EXP2_LUT_BITS, 17  # EXP2_LUT: 1024 entries of 17 bits
PRODUCT_BITS = 2 * ACT_BITS  # q * k of two 16-bit mantissas (-32768 included, so 32 bits)
DOT_BITS = PRODUCT_BITS + 5  # the sum of 32 products: the adder tree grows a bit per level
SCORE_SHIFT_BITS = EXP_BITS + 2  # eq + ek + 16
SCALE_FRAC = 15  # ATTN_SCALE and LOG2E_Q are Q.15
ATTN_SCALE_BITS = 16  # ATTN_SCALE in the `rom` field of the ROPE that starts an attention (rtl/metal.py)
EXP2_FRAC = 16  # u: 16 fraction bits, of which the top LUT_ADDR_BITS index EXP2_LUT
EXP2_ZERO_SHIFT = 17  # EXP2_LUT < 2**17: a shift of 17 or more gives 0
RCP_NUMERATOR_BITS = 48  # RCP = floor(2**48 / sum p)
RCP_BITS = 33  # sum p >= 2**16, so RCP <= 2**32
DIVIDE_CYCLES = RCP_BITS  # one quotient bit per cycle (one engine)
PARALLEL_DIVIDE_BITS = 4  # several engines: the divider retires 4 quotient bits per cycle
WEIGHT_FRAC = 24  # w_t = (p_t * RCP) >> 24, Q0.24, <= 2**24
WEIGHT_MAX = 1 << WEIGHT_FRAC
VALUE_EXP_MIN, VALUE_EXP_MAX = -24, 9  # value exponents of rq(acc, -24, 16) with 48-bit acc
VALUE_SHIFT_MAX = VALUE_EXP_MAX - VALUE_EXP_MIN  # the shift ev + 24 lies in 0..33
TERM_MIN = -WEIGHT_MAX * (1 << (ACT_BITS - 1))  # w * v, v = -32768 included
TERM_MAX = WEIGHT_MAX * ((1 << (ACT_BITS - 1)) - 1)
WSUM_BITS = (TERM_MAX << VALUE_SHIFT_MAX).bit_length() + 1  # 73: exact, as sum_t w_t <= 2**24
OUT_WORD_BITS = spec.ATTN_OUT_BITS  # numerics 7 step 4: sat(..., 63) at LSB 2**-48

# latencies of the passes, from the cycle after the last issue to the state change
SCORE_LATENCY = 12
SOFTMAX_LATENCY = 5
WEIGHT_LATENCY = 7
TREE_LEVELS = (BLOCK - 1).bit_length()  # 5 registered adder levels

State = enum("IDLE", "KV_IN", "Q_IN", "SCORE_ISSUE", "SCORE_WAIT", "SOFTMAX_ISSUE", "SOFTMAX_WAIT",
             "DIVIDE", "WEIGHT_ISSUE", "WEIGHT_WAIT", "OUT_WAIT")


def divide_cycles(bits_per_cycle: int) -> int:
    """Cycles of the divider: RCP_BITS quotient bits, `bits_per_cycle` a cycle."""
    return -(-RCP_BITS // bits_per_cycle)



@dataclass(frozen=True)
class AttentionLimits:
    """The die's maxima: the unit's only elaboration parameters (the base grid)."""

    kv_tokens: int
    max_heads: int
    max_kv_dim: int
    max_q_dim: int  # heads * head_dim: the widest Q vector (the die's max_d_model)
    engines: int = 1  # query heads computed at once, in lockstep (the die's attn_heads)

    def __post_init__(self):
        if not 1 <= self.engines <= max(self.max_heads, 1):
            raise HardwireError(f"engines must lie in 1..max_heads ({self.max_heads}), not {self.engines}")
        if self.kv_tokens < 2:
            raise HardwireError(f"kv_tokens must be at least 2, not {self.kv_tokens}")
        if self.max_heads < 1:
            raise HardwireError(f"max_heads must be at least 1, not {self.max_heads}")
        for name in ("max_kv_dim", "max_q_dim"):
            value = getattr(self, name)
            if value < BLOCK or value % BLOCK:
                raise HardwireError(f"{name} {value} is not a positive multiple of {BLOCK}")

    @classmethod
    def from_die(cls, die) -> AttentionLimits:
        """A die of rtl/die.py; its widest Q vector is its widest d_model."""
        return cls(die.kv_tokens, die.max_heads, die.max_kv_dim, die.max_d_model, die.attn_heads)

    @property
    def max_kv_blocks(self) -> int:
        return self.max_kv_dim // BLOCK

    @property
    def max_q_blocks(self) -> int:
        return self.max_q_dim // BLOCK

    @property
    def max_head_blocks(self) -> int:
        """A head is at most as wide as the K vector (kv_heads >= 1) and the Q vector."""
        return min(self.max_kv_blocks, self.max_q_blocks)

    @property
    def parallel(self) -> bool:
        """Several engines: their output blocks wait in the output buffer to leave head-major."""
        return self.engines > 1

    @property
    def divide_bits(self) -> int:
        """Quotient bits the divider retires per cycle."""
        return PARALLEL_DIVIDE_BITS if self.parallel else 1

    @property
    def kv_depth(self) -> int:
        """KV SRAM words: position t owns word 2t (its K blocks) and word 2t+1 (its V blocks)."""
        return 2 * self.kv_tokens

    @property
    def kv_lanes(self) -> int:
        """Blocks per KV SRAM word: room for the widest K (or V) vector."""
        return self.max_kv_blocks

    @property
    def lane_bits(self) -> int:
        return address_bits(self.kv_lanes)

    @property
    def q_depth(self) -> int:
        """Query SRAM words (one lane per engine): round r's block b sits in word r * nbh + b;
        the most words any shape the unit takes needs."""
        words = [-(-heads // self.engines) * nbh for heads in range(1, self.max_heads + 1)
                 for nbh in range(1, self.max_head_blocks + 1) if heads * nbh <= self.max_q_blocks]
        return max(2, *words)

    @property
    def out_depth(self) -> int:
        """Output buffer words (parallel unit only): block b of every engine in word b."""
        return max(2, self.max_head_blocks)

    def sram_bits(self) -> dict[str, int]:
        """The unit's SRAM bits: the KV SRAM, and its buffers (query, scores, and with several
        engines the output buffer of saturated 63-bit lane sums)."""
        buffers = (self.q_depth * self.engines * WORD_BITS
                   + self.kv_tokens * self.engines * ScoreRanges(self).buffer_bits)
        if self.parallel:
            buffers += self.out_depth * self.engines * BLOCK * OUT_WORD_BITS
        return {"kv": self.kv_depth * self.kv_lanes * WORD_BITS, "attn_buffers": buffers}

    @property
    def position_bits(self) -> int:
        """The position port holds kv_tokens itself: a position past the SRAM is expressible
        (and refused), whatever kv_tokens is."""
        return self.kv_tokens.bit_length()

    @property
    def index_bits(self) -> int:
        """Key indexes 0..kv_tokens-1 (score buffer addresses, counters)."""
        return address_bits(self.kv_tokens)

    @property
    def heads_bits(self) -> int:
        """The heads and kv_heads ports: max_heads itself is expressible."""
        return self.max_heads.bit_length()

    @property
    def head_blocks_bits(self) -> int:
        return self.max_head_blocks.bit_length()

    def tag(self) -> str:
        """A short name for the configuration (Verilog module names)."""
        tag = f"t{self.kv_tokens}_h{self.max_heads}_kv{self.max_kv_dim}_q{self.max_q_dim}"
        return f"{tag}_e{self.engines}" if self.parallel else tag


@dataclass(frozen=True)
class AttentionGeometry:
    """A model's attention shape: run-time values on the unit's ports, never elaborated."""

    heads: int
    kv_heads: int
    head_dim: int

    def __post_init__(self):
        if self.head_dim < BLOCK or self.head_dim % BLOCK:
            raise HardwireError(f"head_dim {self.head_dim} is not a positive multiple of {BLOCK}")
        if self.kv_heads < 1 or self.heads < 1 or self.heads % self.kv_heads:
            raise HardwireError(f"heads ({self.heads}) must be a positive multiple of kv_heads ({self.kv_heads})")

    @property
    def head_blocks(self) -> int:
        return self.head_dim // BLOCK

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads

    @property
    def kv_blocks(self) -> int:
        return self.kv_heads * self.head_blocks

    @property
    def q_blocks(self) -> int:
        return self.heads * self.head_blocks

    @property
    def attn_scale(self) -> int:
        return spec.attn_scale(self.head_dim)

    def check_fits(self, limits: AttentionLimits) -> None:
        """The shapes a die takes (the unit refuses the others at run time)."""
        if self.heads > limits.max_heads:
            raise HardwireError(f"{self.heads} heads exceed the die's max_heads {limits.max_heads}")
        if self.kv_blocks > limits.max_kv_blocks:
            raise HardwireError(f"kv_dim {self.kv_blocks * BLOCK} exceeds the die's max_kv_dim {limits.max_kv_dim}")
        if self.q_blocks > limits.max_q_blocks:
            raise HardwireError(f"q_dim {self.q_blocks * BLOCK} exceeds the die's max_d_model {limits.max_q_dim}")

    def head_cycles(self, positions: int) -> int:
        """One engine: a query head's passes, from its first score read to its last output block."""
        return (2 * self.head_blocks + 1) * positions + HEAD_OVERHEAD

    def round_heads(self, engines: int) -> list[int]:
        """The query heads of each round: `engines` at a time, the last round partly filled."""
        full, rest = divmod(self.heads, engines)
        return [engines] * full + ([rest] if rest else [])

    def round_cycles(self, positions: int, heads: int) -> int:
        """Several engines: a round of `heads` query heads, its passes and then its output blocks."""
        return (2 * self.head_blocks + 1) * positions + ROUND_OVERHEAD + heads * self.head_blocks

    def attend_cycles(self, positions: int, engines: int = 1) -> int:
        """Cycles from start_attn to done (inclusive), Q beats back to back, on a unit of
        `engines` engines (the die's attn_heads)."""
        if engines == 1:
            return 1 + self.q_blocks + self.heads * self.head_cycles(positions)
        return 1 + self.q_blocks + sum(self.round_cycles(positions, n) for n in self.round_heads(engines))

    @property
    def kv_write_cycles(self) -> int:
        """Cycles from start_kv to done (inclusive), K and V beats back to back."""
        return 1 + 2 * self.kv_blocks


# per head, beyond the (2 * nbh + 1) * P issue cycles: each pass's drain, the divider, hand-offs
HEAD_OVERHEAD = SCORE_LATENCY + SOFTMAX_LATENCY + DIVIDE_CYCLES + 2 + WEIGHT_LATENCY
# per round of the parallel unit, beyond the issue cycles and one cycle per output block: the
# same drains with the faster divider, and the output buffer's read-out (2 more cycles)
ROUND_OVERHEAD = SCORE_LATENCY + SOFTMAX_LATENCY + divide_cycles(PARALLEL_DIVIDE_BITS) + 2 + WEIGHT_LATENCY + 2


def _widened(port: Signal, width: int):
    """`port` zero-extended to `width` bits (wiring: a concatenation, no logic)."""
    return port if len(port) == width else zero_extended(port, width)


def _range_bits(lo: int, hi: int) -> Signal:
    """A signed register holding [lo, hi]."""
    return Signal(intbv(0, min=min(lo, 0), max=hi + 1))


@dataclass
class GeometryPorts:
    """The run-time geometry inputs, sampled with a start."""

    heads: Signal
    kv_heads: Signal
    head_blocks: Signal
    attn_scale: Signal


@dataclass
class Handshake:
    """A command's ports: the two starts with the position and the input valid; the unit's answers."""

    start_kv: Signal
    start_attn: Signal
    pos: Signal
    in_valid: Signal
    done: Signal
    busy: Signal
    refused: Signal


class SramPort:
    """The address side of one SRAM: write enable and address, read enable and address (the data
    buses belong to the datapath)."""

    def __init__(self, depth: int):
        bits = address_bits(depth)
        self.depth = depth
        self.we, self.re = bit_signal(), bit_signal()
        self.waddr, self.raddr = unsigned_signal(bits), unsigned_signal(bits)


class LaneSramPort(SramPort):
    """An SRAM of `lanes` lanes per word: a write stores one lane (wlane)."""

    def __init__(self, depth: int, lanes: int):
        super().__init__(depth)
        self.wlane = unsigned_signal(address_bits(lanes))


class ScoreIssue:
    """Stage 0 of the scores pass: a K and a Q block are read, with their place in the score."""

    def __init__(self, t_bits: int):
        self.valid, self.first_blk, self.last_blk, self.first_t, self.last_t = (bit_signal() for _ in range(5))
        self.t = unsigned_signal(t_bits)


class SoftmaxIssue:
    """Stage 0 of the softmax pass: score t is read."""

    def __init__(self, t_bits: int):
        self.valid, self.first, self.last = bit_signal(), bit_signal(), bit_signal()
        self.t = unsigned_signal(t_bits)


class WeightIssue:
    """Stage 0 of the weighted pass: p_t is read (its V block follows a cycle later)."""

    def __init__(self):
        self.valid, self.first, self.last, self.head_last = (bit_signal() for _ in range(4))


class EmitIssue:
    """The parallel unit's output: one output-buffer read a cycle, head-major."""

    def __init__(self):
        self.valid, self.last = bit_signal(), bit_signal()


class PassEvents:
    """The hand-offs between the controller and the passes (engine 0's: the engines run in lockstep)."""

    def __init__(self):
        self.scores_last = bit_signal()  # the round's last score is in the buffer, and its max known
        self.softmax_last = bit_signal()  # the last p_t is in the buffer, and their sum known
        self.div_start, self.div_done = bit_signal(), bit_signal()  # RCP = 2**48 / sum p
        self.weighted_last = bit_signal()  # the round's last block of the weighted pass is saturated
        self.out_head_last = bit_signal()  # the round's last output block leaves


class EngineOut:
    """What one engine hands back: its score and p_t for the score buffer, the events of its
    passes (the controller listens to engine 0's), and its saturated lane sums."""

    def __init__(self, scores, pos_bits: int):
        self.scaled, self.scaled_valid, self.scaled_t = scores.scaled_signal(), bit_signal(), unsigned_signal(pos_bits)
        self.p, self.p_valid, self.p_t = unsigned_signal(LUT_DATA_BITS), bit_signal(), unsigned_signal(pos_bits)
        self.scores_last, self.softmax_last, self.div_done = bit_signal(), bit_signal(), bit_signal()
        self.sums = [signed_signal(OUT_WORD_BITS) for _ in range(BLOCK)]
        self.o_valid, self.o_head_last = bit_signal(), bit_signal()

    def flags(self) -> list:
        return [self.scaled_valid, self.scaled_t, self.p_valid, self.p_t, self.scores_last, self.softmax_last,
                self.div_done, self.o_valid, self.o_head_last]


@block
def attention_unit(clk, rst, start_kv, start_attn, pos, heads, kv_heads, head_blocks, attn_scale,
                   in_valid, in_data, in_exp, out, done, busy, refused, lut, limits: AttentionLimits):
    out_valid, out_data, out_exp = out.valid, out.data, out.exp  # a BlockBus
    lut_addr, lut_data = lut.addr, lut.data  # a RomPort without enable, one read port per engine
    die = limits  # the only elaboration parameter: nothing below depends on a model
    engines = die.engines
    shape = GeometryPorts(heads, kv_heads, head_blocks, attn_scale)
    _check_ports(die, pos, shape, in_data, in_exp, out_data, out_exp, lut_addr, lut_data)

    # the SRAMs: KV (a word per position's K or V, each engine reads its own lane of it), query (a
    # lane per engine), scores (a field per engine); the controller addresses them
    kv, query = LaneSramPort(die.kv_depth, die.kv_lanes), LaneSramPort(die.q_depth, engines)
    sb = SramPort(die.kv_tokens)
    kv_lanes = [unsigned_signal(die.lane_bits) for _ in range(engines)]
    in_word = unsigned_signal(WORD_BITS)
    kv_rdata, q_rdata = unsigned_signal(engines * WORD_BITS), unsigned_signal(engines * WORD_BITS)
    scores = ScoreRanges(die)
    sb_wdata, sb_rdata = unsigned_signal(engines * scores.buffer_bits), unsigned_signal(engines * scores.buffer_bits)
    memories = [lane_select_sram(clk, kv.we, kv.wlane, kv.waddr, in_word, kv.re, kv.raddr, _packed(kv_lanes),
                                 kv_rdata, die.kv_depth, die.kv_lanes, "kv"),
                lane_sram(clk, query.we, query.wlane, query.waddr, in_word, clk, query.re, query.raddr, q_rdata,
                          die.q_depth, engines, "query"),
                sram(clk, sb.we, sb.waddr, sb_wdata, sb.re, sb.raddr, sb_rdata, die.kv_tokens, "score")]

    # control -> passes: issue flags (stage 0 of each pipeline) and the latched ATTN_SCALE; and back
    pos_bits = die.index_bits
    sc, sm, wt, em, events = ScoreIssue(pos_bits), SoftmaxIssue(pos_bits), WeightIssue(), EmitIssue(), PassEvents()
    ob = OutBufferPort(die.out_depth, engines) if die.parallel else None
    actives = [bit_signal() for _ in range(engines)]
    scale = unsigned_signal(ATTN_SCALE_BITS)
    command = Handshake(start_kv, start_attn, pos, in_valid, done, busy, refused)
    control = controller(clk, rst, die, command, shape, scale, kv, query, sb, sc, sm, wt, em, ob, events, kv_lanes,
                         actives)
    lane_tops_unused = unsigned_signal(BLOCK * (WORD - ACT_BITS))
    capture = input_stage(clk, in_valid, in_data, in_exp, in_word, lane_tops_unused)

    # the engines, in lockstep: engine e computes query head r * engines + e of round r
    lut_addrs = [unsigned_signal(LUT_ADDR_BITS) for _ in range(engines)] if engines > 1 else [lut_addr]
    outs = [EngineOut(scores, pos_bits) for _ in range(engines)]
    units = [attention_engine(clk, rst, scores, scale, _lane(q_rdata, WORD_BITS, e, engines),
                              _lane(kv_rdata, WORD_BITS, e, engines), _lane(sb_rdata, scores.buffer_bits, e, engines),
                              lut_addrs[e], _lane(lut_data, LUT_DATA_BITS, e, engines), sc, sm, wt,
                              events.div_start, actives[e], outs[e], gated=e > 0, divide_bits=die.divide_bits)
             for e in range(engines)]
    first = outs[0]
    listen = event_wires(first, events)
    writer = score_buffer_writer(clk, rst, _packed([o.scaled(scores.buffer_bits, 0) for o in outs]),
                                 first.scaled_valid, first.scaled_t,
                                 _packed_fields([o.p for o in outs], scores.buffer_bits), first.p_valid,
                                 first.p_t, sb.we, sb.waddr, sb_wdata)
    if engines == 1:
        o_bus = unsigned_signal(BLOCK * OUT_WORD_BITS)  # a plain signal: the requantizer slices its input
        emit = [gather(_packed(first.sums), o_bus),
                output_stage(clk, rst, o_bus, first.o_valid, first.o_head_last, out_valid, out_data, out_exp,
                             events.out_head_last)]
        spare = []
    else:
        emit = output_buffer(clk, rst, outs, ob, em, events, out_valid, out_data, out_exp)
        spare = [drive_lut_addresses(_packed(lut_addrs), lut_addr),
                 unused(ConcatSignal(*[f for o in outs[1:] for f in o.flags()]), "engine_flags",
                        "the engines run in lockstep: the controller listens to engine 0's flags only")]
    return memories, control, capture, units, listen, writer, emit, spare


def _packed(signals: list):
    """Signals side by side, signals[0] in the low bits (one signal stays itself)."""
    return signals[0] if len(signals) == 1 else ConcatSignal(*reversed(signals))


def _packed_fields(signals: list, width: int):
    """Unsigned signals zero-extended to `width` bits each, side by side (signals[0] low)."""
    if len(signals) == 1:
        return zero_extended(signals[0], width)
    return ConcatSignal(*[piece for sig in reversed(signals) for piece in (intbv(0)[width - len(sig):], sig)])


def _lane(word, width: int, index: int, count: int):
    """Lane `index` of a word of `count` lanes (the word itself when it has one lane)."""
    return word if count == 1 else word((index + 1) * width, index * width)


@block
def event_wires(first, events):
    """The controller's hand-offs are engine 0's."""

    @always_comb
    def wire():
        events.scores_last.next = first.scores_last
        events.softmax_last.next = first.softmax_last
        events.div_done.next = first.div_done
        events.weighted_last.next = first.o_head_last

    return wire


@block
def drive_lut_addresses(packed, lut_addr):
    @always_comb
    def wire():
        lut_addr.next = packed

    return wire


@block
def gather(packed, o_bus):
    """The lane sums as one word for the requantizer (wiring)."""

    @always_comb
    def wire():
        o_bus.next = packed

    return wire


@block
def and_gate(a, b, y):
    @always_comb
    def gate():
        y.next = a and b

    return gate


def _gated(issue):
    """A copy of an issue record with its own valid bit (and_gate it with the engine's `active`:
    an idle engine's registers never load)."""
    copy = object.__new__(type(issue))
    copy.__dict__.update(issue.__dict__)
    copy.valid = bit_signal()
    return copy


@block
def attention_engine(clk, rst, scores, scale, q_rdata, kv_rdata, sb_rdata, lut_addr, lut_data, sc, sm, wt, div_start,
                     active, o: EngineOut, gated: bool, divide_bits: int):
    """One query head's datapath: scores, softmax, the divider and the weighted pass. Every
    engine but engine 0 (which always has a head) is gated by its `active` bit."""
    gates = []
    if gated:
        issues = sc, sm, wt
        sc, sm, wt = (_gated(issue) for issue in issues)
        start = bit_signal()
        gates = [and_gate(issue.valid, active, mine.valid) for issue, mine in zip(issues, (sc, sm, wt), strict=True)]
        gates.append(and_gate(div_start, active, start))
    else:
        start = div_start
    score_max = scores.scaled_signal()
    score_pass = score_pipeline(clk, rst, scores, scale, q_rdata, kv_rdata, sc, o.scaled, o.scaled_valid, o.scaled_t,
                                score_max, o.scores_last)
    p_sum = unsigned_signal(scores.sum_bits)
    softmax_pass = softmax_pipeline(clk, rst, scores, sb_rdata, score_max, sm, lut_addr, lut_data, o.p, o.p_valid,
                                    o.p_t, p_sum, o.softmax_last)
    rcp = unsigned_signal(RCP_BITS)
    divide = divider(clk, rst, start, p_sum, rcp, o.div_done, divide_bits)
    weighted = weighted_pipeline(clk, rst, sb_rdata, kv_rdata, rcp, wt, o.sums, o.o_valid, o.o_head_last)
    return gates, score_pass, softmax_pass, divide, weighted


class OutBufferPort:
    """The output buffer's addresses: the write count (its unit's), the read of word b, lane e
    (block b of engine e; the controller's)."""

    def __init__(self, depth: int, lanes: int):
        bits = address_bits(depth)
        self.depth, self.re = depth, bit_signal()
        self.waddr, self.raddr = unsigned_signal(bits), unsigned_signal(bits)
        self.rlane = unsigned_signal(address_bits(lanes))


@block
def output_buffer(clk, rst, outs, ob, em, events, out_valid, out_data, out_exp):
    """The parallel unit's output: block b of every engine lands in word b as the weighted pass
    saturates it (63-bit lane sums); the controller then reads the round's blocks head-major
    (`ob`, `em`), one a cycle, into the requantizer and onto the bus."""
    first, engines = outs[0], len(outs)
    wdata = _packed([lane for o in outs for lane in o.sums])
    rdata = unsigned_signal(BLOCK * OUT_WORD_BITS)
    memory = word_write_lane_read_sram(clk, first.o_valid, ob.waddr, wdata, ob.re, ob.raddr, ob.rlane, rdata,
                                       ob.depth, engines, "out")
    o_valid, o_last = bit_signal(), bit_signal()

    @always_seq(clk.posedge, reset=rst)
    def count():
        if first.o_valid:  # the round's blocks in order; the last one rewinds the count
            if first.o_head_last:
                ob.waddr.next = 0
            else:
                ob.waddr.next = ob.waddr + 1

    @always_seq(clk.posedge, reset=rst)
    def read_valid():
        o_valid.next = em.valid
        o_last.next = em.valid and em.last

    emit = output_stage(clk, rst, rdata, o_valid, o_last, out_valid, out_data, out_exp, events.out_head_last)
    return memory, count, read_valid, emit


class ScoreRanges:
    """Exact ranges of the score datapath over every shape the die takes (registers sized to
    them): ATTN_SCALE is any 16-bit value, a score sums up to max_head_blocks block terms."""

    def __init__(self, limits: AttentionLimits):
        top = (1 << (SCORE_BITS - 1)) - 1
        scale_max = (1 << ATTN_SCALE_BITS) - 1
        self.blocks = limits.max_head_blocks
        self.scaled_min = (-top - 1) * scale_max >> SCALE_FRAC
        self.scaled_max = top * scale_max >> SCALE_FRAC
        self.scaled_bits = len(_range_bits(self.scaled_min, self.scaled_max))
        self.buffer_bits = self.scaled_bits  # holds s_t, then p_t (narrower)
        assert self.buffer_bits > LUT_DATA_BITS
        self.sum_bits = ((1 << EXP2_FRAC) * limits.kv_tokens).bit_length()

    def scaled_signal(self) -> Signal:
        return _range_bits(self.scaled_min, self.scaled_max)


# --- control --------------------------------------------------------------------------------------

class Latched:
    """The geometry latched in the start cycle (the ports may change while a command runs):
    counts, and counts minus one for the last-value compares."""

    def __init__(self, gw: int, index_bits: int):
        self.heads, self.kv_heads, self.nbh, self.last_blk = (unsigned_signal(gw) for _ in range(4))
        self.last_kv_lane, self.last_kv_beat, self.last_q_beat = (unsigned_signal(gw) for _ in range(3))
        self.last_pos = unsigned_signal(index_bits)


class Walk:
    """Where a command is: its input beat, and that beat's KV word and lane or Q lane (engine);
    the query heads' KV heads as the Q beats pass (an accumulator, no divider); then key t (K word
    row = 2t, V word row + 1) and block blk of round q_base / nbh, the heads still to do, and the
    V read that trails each p read."""

    def __init__(self, gw: int, index_bits: int, kv_bits: int):
        self.beat, self.write_addr, self.lane = unsigned_signal(gw), unsigned_signal(gw), unsigned_signal(gw)
        self.share = unsigned_signal(gw)  # (head * kv_heads) mod heads of the Q beat's head
        self.kv_head = unsigned_signal(gw)  # floor(head * kv_heads / heads) * nbh, likewise
        self.step_share, self.step_kv = unsigned_signal(gw), unsigned_signal(gw)  # the same of head `engines`
        self.q_lane = unsigned_signal(gw)  # the engine of the Q beat's head
        self.t = unsigned_signal(index_bits)
        self.blk, self.row, self.q_base, self.heads_left = (unsigned_signal(gw) for _ in range(4))
        self.round_step = bit_signal()  # pulses as a round follows the last: the engines step their heads
        self.v_addr, self.v_blk = unsigned_signal(kv_bits), unsigned_signal(gw)


@block
def controller(clk, rst, die, command, shape, scale, kv, query, sb, sc, sm, wt, em, ob, events, kv_lanes, actives):
    """The command FSM with its start checks, the walk over rounds, keys and blocks, the SRAM
    addresses and issue flags of the passes, and each engine's KV head: clocked processes that
    share the state.

    All counters, strides and latched counts share one width, `gw`, wide enough for every
    SRAM address and for heads * head_blocks: Verilog arithmetic then never extends or
    truncates implicitly, and the SRAM addresses are slices of it."""
    gw = max(len(kv.waddr), len(query.waddr), die.heads_bits + die.head_blocks_bits) + 1  # +1: 2 * kv_blocks
    state = Signal(State.IDLE)
    geo, walk = Latched(gw, die.index_bits), Walk(gw, die.index_bits, len(kv.waddr))

    @always_comb
    def running():
        command.busy.next = state != State.IDLE

    engines = [engine_control(clk, rst, e, die, state, command.in_valid, geo, walk, wt.valid, kv_lanes[e], actives[e])
               for e in range(die.engines)]
    reads = [] if ob is None else [emit_reads(clk, rst, die.engines, geo, walk, events.weighted_last, ob, em)]
    return (command_fsm(clk, rst, die, command, shape, scale, state, geo, walk, events),
            key_walk(clk, rst, die, command.in_valid, state, geo, walk, events),
            sram_addresses(clk, rst, command.in_valid, state, walk, kv, query, sb, wt),
            pass_issue(clk, rst, state, geo, walk, sc, sm, wt),
            running, engines, reads)


@block
def command_fsm(clk, rst, die, command, shape, scale, state, geo, walk, events):
    """The phases of a command. A start is checked, and the geometry latched, in the start cycle
    only (an idle unit evaluates none of it); a KV write then counts its beats; an attention
    counts the Q beats, then runs the passes round by round as key_walk steps through them. A
    round ends when its last output block leaves (OUT_WAIT): one engine sends its blocks
    straight to the bus, a cycle after the weighted pass; several engines leave theirs in the
    output buffer, which emit_reads reads out head-major meanwhile."""
    kv_tokens, max_heads = die.kv_tokens, die.max_heads
    max_kv_blocks, max_q_blocks = die.max_kv_blocks, die.max_q_blocks
    engines = die.engines
    gw, pos_bits = len(walk.beat), len(geo.last_pos)
    heads_in, kv_heads_in, blocks_in = (_widened(port, gw) for port in (shape.heads, shape.kv_heads, shape.head_blocks))
    scale_in, pos = shape.attn_scale, command.pos

    @always_seq(clk.posedge, reset=rst)
    def fsm():
        command.done.next = 0
        command.refused.next = 0
        events.div_start.next = 0
        if state == State.KV_IN:
            if command.in_valid:
                walk.beat.next = walk.beat + 1
                if walk.lane == geo.last_kv_lane:  # the K word is full: the V word follows
                    walk.lane.next = 0
                    walk.write_addr.next = walk.write_addr + 1
                else:
                    walk.lane.next = walk.lane + 1
                if walk.beat == geo.last_kv_beat:
                    command.done.next = 1
                    state.next = State.IDLE
        elif state == State.Q_IN:
            if command.in_valid:
                walk.beat.next = walk.beat + 1
                if walk.beat == geo.last_q_beat:
                    state.next = State.SCORE_ISSUE
        elif state == State.SCORE_ISSUE:
            if walk.blk == geo.last_blk and walk.t == geo.last_pos:
                state.next = State.SCORE_WAIT
        elif state == State.SCORE_WAIT:
            if events.scores_last:
                state.next = State.SOFTMAX_ISSUE
        elif state == State.SOFTMAX_ISSUE:
            if walk.t == geo.last_pos:
                state.next = State.SOFTMAX_WAIT
        elif state == State.SOFTMAX_WAIT:
            if events.softmax_last:
                events.div_start.next = 1
                state.next = State.DIVIDE
        elif state == State.DIVIDE:
            if events.div_done:
                state.next = State.WEIGHT_ISSUE
        elif state == State.WEIGHT_ISSUE:
            if walk.t == geo.last_pos and walk.blk == geo.last_blk:
                state.next = State.WEIGHT_WAIT
        elif state == State.WEIGHT_WAIT:
            if events.weighted_last:
                state.next = State.OUT_WAIT
        elif state == State.OUT_WAIT:
            if events.out_head_last:
                if walk.heads_left > engines:
                    state.next = State.SCORE_ISSUE  # the next round
                else:
                    command.done.next = 1
                    state.next = State.IDLE
        else:
            state.next = State.IDLE  # IDLE, and the unused encodings of the state register
        if command.start_kv or command.start_attn:
            # last: a taken start overrides the IDLE hold above
            kv_product = intbv(0)[gw:]
            q_product = intbv(0)[gw:]
            kv_product[:] = kv_heads_in * blocks_in
            q_product[:] = heads_in * blocks_in
            kv_fits = bool(kv_heads_in != 0 and blocks_in != 0 and kv_product <= max_kv_blocks)
            attn_fits = bool(kv_fits and kv_heads_in <= heads_in and heads_in <= max_heads
                             and q_product <= max_q_blocks)
            if state != State.IDLE or (command.start_kv and command.start_attn) or pos >= kv_tokens:
                command.refused.next = 1  # one command at a time, inside the SRAM
            elif command.start_kv and not kv_fits:
                command.refused.next = 1  # a K/V row wider than the die's
            elif command.start_attn and not attn_fits:
                command.refused.next = 1  # a shape the die does not hold
            else:
                geo.nbh.next = blocks_in
                geo.last_blk.next = blocks_in - 1
                geo.last_kv_lane.next = kv_product - 1
                geo.last_kv_beat.next = (kv_product << 1) - 1
                walk.beat.next = 0
                if command.start_kv:
                    walk.write_addr.next = pos * 2
                    walk.lane.next = 0
                    state.next = State.KV_IN
                else:
                    geo.heads.next = heads_in
                    geo.kv_heads.next = kv_heads_in
                    geo.last_q_beat.next = q_product - 1
                    scale.next = scale_in
                    geo.last_pos.next = pos[pos_bits:]
                    state.next = State.Q_IN

    return fsm


@block
def key_walk(clk, rst, die, in_valid, state, geo, walk, events):
    """Steps an attention through its Q beats (each beat's engine and Q word, and its head's KV
    head), then its rounds, keys and blocks in the FSM's phases: scores by key, then block;
    softmax by key; weighted by block, then key; then the next round. The Q-beat registers are
    left at zero for the next attention."""
    engines, gw = die.engines, len(walk.beat)

    @always_seq(clk.posedge, reset=rst)
    def step():
        walk.round_step.next = 0
        if state == State.Q_IN:
            if in_valid:
                if walk.beat == geo.last_q_beat:
                    walk.blk.next = 0
                    walk.q_base.next = 0
                    walk.q_lane.next = 0
                    walk.share.next = 0
                    walk.kv_head.next = 0
                    walk.t.next = 0
                    walk.row.next = 0
                    walk.heads_left.next = geo.heads
                elif walk.blk == geo.last_blk:
                    # the next query head; its KV head is floor((head + 1) * kv_heads / heads)
                    walk.blk.next = 0
                    stepped = intbv(0)[gw:]  # < 2 * heads
                    kv_next = intbv(0)[gw:]
                    stepped[:] = walk.share + geo.kv_heads
                    kv_next[:] = walk.kv_head
                    if stepped >= geo.heads:
                        stepped[:] = stepped - geo.heads
                        kv_next[:] = kv_next + geo.nbh
                    walk.share.next = stepped
                    walk.kv_head.next = kv_next
                    if walk.q_lane == engines - 1:
                        walk.q_lane.next = 0
                        walk.q_base.next = walk.q_base + geo.nbh
                        if walk.q_base == 0:  # head `engines`: how far a round moves each engine's KV head
                            walk.step_share.next = stepped
                            walk.step_kv.next = kv_next
                    else:
                        walk.q_lane.next = walk.q_lane + 1
                else:
                    walk.blk.next = walk.blk + 1
        elif state == State.SCORE_ISSUE:
            if walk.blk == geo.last_blk:
                walk.blk.next = 0
                walk.t.next = walk.t + 1
                walk.row.next = walk.row + 2
            else:
                walk.blk.next = walk.blk + 1
        elif state == State.SCORE_WAIT:
            if events.scores_last:
                walk.t.next = 0
        elif state == State.SOFTMAX_ISSUE:
            walk.t.next = walk.t + 1
        elif state == State.DIVIDE:
            if events.div_done:
                walk.t.next = 0
                walk.blk.next = 0
                walk.row.next = 0
        elif state == State.WEIGHT_ISSUE:
            if walk.t == geo.last_pos:
                walk.t.next = 0
                walk.row.next = 0
                if walk.blk == geo.last_blk:
                    walk.blk.next = 0
                else:
                    walk.blk.next = walk.blk + 1
            else:
                walk.t.next = walk.t + 1
                walk.row.next = walk.row + 2
        elif state == State.OUT_WAIT:
            if events.out_head_last:
                if walk.heads_left > engines:
                    walk.heads_left.next = walk.heads_left - engines
                    walk.q_base.next = walk.q_base + geo.nbh
                    walk.round_step.next = 1
                else:
                    walk.q_base.next = 0
        else:
            pass  # IDLE, KV_IN and the waits before the softmax: the walk stands (a complete case)

    return step


@block
def engine_control(clk, rst, index, die, state, in_valid, geo, walk, v_read, lane, active):
    """Engine `index`'s query head: its KV head (as share and KV block offset, taken from the Q
    beats of round 0 and stepped by a round's move after each round), whether the round has a
    head for it, and the KV SRAM lane it reads (its KV head's block blk)."""
    gw, lane_bits = len(walk.beat), len(lane)
    share, kv_off = unsigned_signal(gw), unsigned_signal(gw)

    @always_seq(clk.posedge, reset=rst)
    def presence():
        active.next = walk.heads_left > index

    @always_seq(clk.posedge, reset=rst)
    def track():
        base = intbv(0)[gw:]  # the KV block offset this cycle: a round's step counts at once
        stepped = intbv(0)[gw:]  # < 2 * heads
        base[:] = kv_off
        if state == State.Q_IN:
            if in_valid and walk.q_base == 0 and walk.q_lane == index:
                share.next = walk.share
                kv_off.next = walk.kv_head
        elif walk.round_step:
            stepped[:] = share + walk.step_share
            base[:] = kv_off + walk.step_kv
            if stepped >= geo.heads:
                stepped[:] = stepped - geo.heads
                base[:] = base + geo.nbh
            share.next = stepped
            kv_off.next = base
        if state == State.SCORE_ISSUE or v_read:
            selected_unused_top = intbv(0)[gw:]  # inside the K/V word: its top bits are 0
            if v_read:
                selected_unused_top[:] = base + walk.v_blk
            else:
                selected_unused_top[:] = base + walk.blk
            lane.next = selected_unused_top[lane_bits:]

    return (track, presence) if index else track  # engine 0 always has a head


@block
def sram_addresses(clk, rst, in_valid, state, walk, kv, query, sb, wt):
    """The SRAM ports in each phase: input beats written to the KV or Q SRAM; K and Q words read
    for the scores; the score buffer read for softmax and weighted, with the V read a cycle later
    (each engine's lane: engine_control)."""
    kv_bits, q_bits, gw = len(kv.waddr), len(query.waddr), len(walk.beat)
    kv_lane_bits, q_lane_bits = len(kv.wlane), len(query.wlane)

    @always_seq(clk.posedge, reset=rst)
    def addresses():
        kv.we.next = 0
        query.we.next = 0
        kv.re.next = 0
        query.re.next = 0
        sb.re.next = 0
        # the V read trails its p read by a cycle (w_t needs p_t first)
        if wt.valid:
            kv.raddr.next = walk.v_addr
            kv.re.next = 1
        if state == State.KV_IN:
            if in_valid:
                kv.we.next = 1
                kv.waddr.next = walk.write_addr[kv_bits:]
                kv.wlane.next = walk.lane[kv_lane_bits:]
        elif state == State.Q_IN:
            if in_valid:
                address_unused_top = intbv(0)[gw:]  # the sums fit the SRAMs: their tops are 0
                address_unused_top[:] = walk.q_base + walk.blk
                query.we.next = 1
                query.waddr.next = address_unused_top[q_bits:]
                query.wlane.next = walk.q_lane[q_lane_bits:]
        elif state == State.SCORE_ISSUE:
            address_unused_top = intbv(0)[gw:]
            kv.raddr.next = walk.row[kv_bits:]
            address_unused_top[:] = walk.q_base + walk.blk
            query.raddr.next = address_unused_top[q_bits:]
            kv.re.next = 1
            query.re.next = 1
        elif state == State.SOFTMAX_ISSUE or state == State.WEIGHT_ISSUE:
            sb.raddr.next = walk.t
            sb.re.next = 1

    return addresses


@block
def pass_issue(clk, rst, state, geo, walk, sc, sm, wt):
    """Stage 0 of each pass: its valid bit and the flags that ride along its pipeline (where in
    the head the read is), and the V word and block of a weighted step."""
    kv_bits, gw = len(walk.v_addr), len(walk.beat)

    @always_seq(clk.posedge, reset=rst)
    def issue():
        sc.valid.next = 0
        sm.valid.next = 0
        wt.valid.next = 0
        if state == State.SCORE_ISSUE:
            sc.valid.next = 1
            sc.first_blk.next = walk.blk == 0
            sc.last_blk.next = walk.blk == geo.last_blk
            sc.first_t.next = walk.t == 0
            sc.last_t.next = walk.t == geo.last_pos
            sc.t.next = walk.t
        elif state == State.SOFTMAX_ISSUE:
            sm.valid.next = 1
            sm.first.next = walk.t == 0
            sm.last.next = walk.t == geo.last_pos
            sm.t.next = walk.t
        elif state == State.WEIGHT_ISSUE:
            address_unused_top = intbv(0)[gw:]
            address_unused_top[:] = walk.row + 1
            walk.v_addr.next = address_unused_top[kv_bits:]
            walk.v_blk.next = walk.blk
            wt.valid.next = 1
            wt.first.next = walk.t == 0
            wt.last.next = walk.t == geo.last_pos
            wt.head_last.next = walk.t == geo.last_pos and walk.blk == geo.last_blk
        else:
            pass  # no pass issues in the other phases (a complete case)

    return issue


@block
def emit_reads(clk, rst, engines, geo, walk, weighted_last, ob, em):
    """The parallel unit's read-out, from the cycle after the round's weighted pass: block blk of
    engine lane, one a cycle, head-major, over the engines that had a head in the round."""
    gw, addr_bits, lane_bits = len(walk.beat), len(ob.raddr), len(ob.rlane)
    emitting = bit_signal()
    lane, blk, last_lane = unsigned_signal(gw), unsigned_signal(gw), unsigned_signal(gw)

    @always_seq(clk.posedge, reset=rst)
    def read():
        ob.re.next = 0
        em.valid.next = 0
        if weighted_last:
            emitting.next = 1
            lane.next = 0
            blk.next = 0
            if walk.heads_left < engines:
                last_lane.next = walk.heads_left - 1
            else:
                last_lane.next = engines - 1
        elif emitting:
            ob.re.next = 1
            ob.raddr.next = blk[addr_bits:]
            ob.rlane.next = lane[lane_bits:]
            em.valid.next = 1
            em.last.next = lane == last_lane and blk == geo.last_blk
            if blk == geo.last_blk:
                blk.next = 0
                lane.next = lane + 1
                if lane == last_lane:
                    emitting.next = 0
            else:
                blk.next = blk + 1

    return read


@block
def input_stage(clk, in_valid, in_data, in_exp, in_word, lane_tops_unused):
    """Register a beat as an SRAM word: the low 16 bits of each lane, the exponent on top.
    Bit loops inside the enabled process: an idle bus costs a simulator nothing. A B16 lane is
    sign-extended on the bus, so its top bits carry nothing; they land in `lane_tops_unused`,
    which nothing reads (Verilator's unused-regexp exempts the name; synthesis removes it)."""
    tops = WORD - ACT_BITS

    @always(clk.posedge)
    def capture():
        if in_valid:
            word = intbv(0)[WORD_BITS:]
            high = intbv(0)[BLOCK * tops:]
            for j in range(BLOCK):
                for b in range(ACT_BITS):
                    word[ACT_BITS * j + b] = in_data[WORD * j + b]
                for b in range(tops):
                    high[tops * j + b] = in_data[WORD * j + ACT_BITS + b]
            word[WORD_BITS:BLOCK * ACT_BITS] = in_exp
            in_word.next = word
            lane_tops_unused.next = high

    return capture


# --- pipeline plumbing: flags ride beside the data; only valid bits are reset ---------------------

def _like(sig) -> Signal:
    """A new register of the same type as `sig` (bit, signed or unsigned)."""
    if isinstance(sig.val, bool):
        return bit_signal()
    if sig.min is not None and sig.min < 0:
        return Signal(intbv(0, min=sig.min, max=sig.max))
    return unsigned_signal(len(sig))


@block
def valid_register(clk, rst, d, q):
    @always_seq(clk.posedge, reset=rst)
    def hold():
        q.next = d

    return hold


def delay_taps(source, stages: int) -> list:
    """taps[k] will be `source` delayed by k cycles (taps[0] is `source`); see delay_line."""
    return [source] + [_like(source) for _ in range(stages)]


@block
def delay_line(clk, rst, taps, enables=None):
    """A chain of registers through `taps`. With rst they are valid bits (reset to 0); with
    `enables`, register k loads only when enables[k] is high (data beside its valid bit)."""
    if rst is not None:
        return [valid_register(clk, rst, d, q) for d, q in zip(taps, taps[1:], strict=False)]
    return [guarded_register(clk, e, d, q) for e, d, q in zip(enables, taps, taps[1:], strict=False)]


def _mantissa_lanes(word) -> list:
    """The 32 mantissa fields of an SRAM word (unsigned slices; read them with .signed())."""
    return [word((j + 1) * ACT_BITS, j * ACT_BITS) for j in range(BLOCK)]


def _exponent_field(word):
    return word(WORD_BITS, BLOCK * ACT_BITS)


# --- scores pass --------------------------------------------------------------------------------

@block
def score_pipeline(clk, rst, scores, scale, q_rdata, kv_rdata, sc, scaled, scaled_valid, scaled_t, score_max,
                   scores_last):
    """Stages after the issue (stage 0): 1 the SRAM words; 2 lane products q_j * k_j and
    eq + ek + 16; 3..7 the registered adder tree (D_b); 8 sat40(floor_shift(D_b, shift));
    9 the block sum, s_t = sat40 of it at the last block; 10 times the latched ATTN_SCALE; 11 the running max
    (and, in score_buffer_writer, the score-buffer write)."""
    term_stage = 2 + TREE_LEVELS + 1
    valid = delay_taps(sc.valid, term_stage)
    valid_regs = delay_line(clk, rst, valid)
    tag = delay_taps(ConcatSignal(sc.t, sc.first_t, sc.last_t, sc.first_blk, sc.last_blk), term_stage)
    tag_regs = delay_line(clk, None, tag, valid[:term_stage])
    tagged = tag[term_stage]
    t8, first_t8, last_t8, first_blk8, last_blk8 = tagged(len(tagged), 4), tagged(3), tagged(2), tagged(1), tagged(0)

    products = [signed_signal(PRODUCT_BITS) for _ in range(BLOCK)]
    lanes = [dot_lane(clk, valid[1], q, k, prod)
             for q, k, prod in zip(_mantissa_lanes(q_rdata), _mantissa_lanes(kv_rdata), products, strict=True)]
    shift2 = signed_signal(SCORE_SHIFT_BITS)
    exponents = score_shift(clk, valid[1], _exponent_field(q_rdata), _exponent_field(kv_rdata), shift2)
    shift = delay_taps(shift2, TREE_LEVELS)
    shift_regs = delay_line(clk, None, shift, valid[2:2 + TREE_LEVELS])
    dot = signed_signal(DOT_BITS)
    tree = registered_adder_tree(clk, valid[2:2 + TREE_LEVELS], products, dot)
    term = signed_signal(SCORE_BITS)
    shifter = saturating_shift(clk, valid[term_stage - 1], dot, shift[TREE_LEVELS], term)

    score = signed_signal(SCORE_BITS)
    score_valid, score_first_t, score_last_t = bit_signal(), bit_signal(), bit_signal()
    score_t = unsigned_signal(len(sc.t))
    block_sum = score_block_sum(clk, rst, scores, valid[term_stage], term, first_blk8, last_blk8, t8, first_t8,
                                last_t8, score, score_valid, score_t, score_first_t, score_last_t)
    scaled_first_t, scaled_last_t = bit_signal(), bit_signal()
    scaling = score_scale(clk, rst, scale, score, score_valid, score_t, score_first_t, score_last_t,
                        scaled, scaled_valid, scaled_t, scaled_first_t, scaled_last_t)
    peak = running_max(clk, rst, scaled, scaled_valid, scaled_first_t, scaled_last_t, score_max, scores_last)
    return (valid_regs, tag_regs, lanes, exponents, shift_regs, tree, shifter, block_sum, scaling, peak)


@block
def dot_lane(clk, enable, q, k, product):
    @always(clk.posedge)
    def multiply():
        if enable:
            product.next = q.signed() * k.signed()

    return multiply


@block
def score_shift(clk, enable, eq, ek, shift):
    """eq + ek + SCORE_FRAC: the floor_shift that puts D_b at LSB 2**-16."""
    n, width = len(eq), len(shift)

    @always(clk.posedge)
    def add():
        if enable:
            q_wide = intbv(0, min=-(1 << (width - 1)), max=1 << (width - 1))
            k_wide = intbv(0, min=-(1 << (width - 1)), max=1 << (width - 1))
            if eq[n - 1]:  # sign-extend the 8-bit exponents
                q_wide[:] = -1
            else:
                q_wide[:] = 0
            q_wide[n:] = eq
            if ek[n - 1]:
                k_wide[:] = -1
            else:
                k_wide[:] = 0
            k_wide[n:] = ek
            shift.next = q_wide + k_wide + SCORE_FRAC

    return add


@block
def registered_adder_tree(clk, enables, leaves, total):
    """A balanced adder tree with a register after every level; level k (k = 0 next to the
    leaves) loads when enables[k] is high. Each level is one bit wider than the one below."""
    half = len(leaves) // 2
    if len(enables) != half.bit_length() or len(leaves) != 2 * half:
        raise HardwireError(f"adder tree of {len(leaves)} leaves with {len(enables)} levels")
    if half == 1:
        return guarded_add(clk, enables[0], leaves[0], leaves[1], total)
    low, high = signed_signal(len(total) - 1), signed_signal(len(total) - 1)
    return (registered_adder_tree(clk, enables[:-1], leaves[:half], low),
            registered_adder_tree(clk, enables[:-1], leaves[half:], high),
            guarded_add(clk, enables[-1], low, high, total))


@block
def saturating_shift(clk, enable, value, shift, result):
    """result = sat(floor_shift(value, shift), len(result)), registered. A left shift by s
    fits iff value >> (width - 1 - s) is 0 or -1 (only sign bits would leave the word), so
    no word wider than the result is needed."""
    vw, rw = len(value), len(result)

    @always(clk.posedge)
    def shift_and_clamp():
        if enable:
            wide = intbv(0, min=-(1 << (rw - 1)), max=1 << (rw - 1))
            amount = intbv(0)[len(shift):]
            above = intbv(0, min=-(1 << (rw - 1)), max=1 << (rw - 1))
            limit = intbv(0, min=-(1 << (rw - 1)), max=1 << (rw - 1))
            if value[vw - 1]:  # sign-extend the value to the result's width
                wide[:] = -1
            else:
                wide[:] = 0
            wide[vw:] = value
            limit[rw - 1] = 1  # the most negative word; its complement is the largest
            if not value[vw - 1]:
                limit[:] = ~limit
            if shift < 0:
                amount[:] = -shift
                if amount > rw - 1:
                    amount[:] = rw - 1  # the value is all sign by then
                result.next = wide >> amount
            elif shift > rw - 1:
                if value == 0:
                    result.next = 0
                else:
                    result.next = limit
            else:
                amount[:] = shift
                above[:] = wide >> (rw - 1 - amount)
                if above == 0 or above == -1:
                    result.next = wide << amount
                else:
                    result.next = limit

    return shift_and_clamp


@block
def score_block_sum(clk, rst, scores, enable, term, first_blk, last_blk, t, first_t, last_t,
                    score, score_valid, score_t, score_first_t, score_last_t):
    """s_t = sat40(sum_b term_b): the sum is exact (nbh terms), saturated once at the end."""
    top, bottom = (1 << (SCORE_BITS - 1)) - 1, -(1 << (SCORE_BITS - 1))
    running = _range_bits(bottom * scores.blocks, top * scores.blocks)
    width, tw = len(running), len(term)

    @always(clk.posedge)
    def accumulate():
        if enable:
            total = intbv(0, min=-(1 << (width - 1)), max=1 << (width - 1))
            limit = intbv(0, min=-(1 << (SCORE_BITS - 1)), max=1 << (SCORE_BITS - 1))
            if term[tw - 1]:  # sign-extend the term to the sum's width
                total[:] = -1
            else:
                total[:] = 0
            total[tw:] = term
            if not first_blk:
                total[:] = running + total
            if last_blk:
                limit[SCORE_BITS - 1] = 1
                if not total[width - 1]:
                    limit[:] = ~limit
                if total[width:SCORE_BITS - 1].signed() == 0 or total[width:SCORE_BITS - 1].signed() == -1:
                    score.next = total[SCORE_BITS:].signed()
                else:
                    score.next = limit
                score_t.next = t
                score_first_t.next = first_t
                score_last_t.next = last_t
            running.next = total

    @always_seq(clk.posedge, reset=rst)
    def mark():
        score_valid.next = enable and last_blk

    return accumulate, mark


@block
def score_scale(clk, rst, attn_scale, score, score_valid, score_t, score_first_t, score_last_t,
                scaled, scaled_valid, scaled_t, scaled_first_t, scaled_last_t):
    """s_t = floor_shift(s_t * ATTN_SCALE, -15); ATTN_SCALE is the run-time value latched at
    start_attn (any 16-bit value: `scaled` is sized for all of them)."""
    product_bits = len(scaled) + SCALE_FRAC  # s_t * ATTN_SCALE, exact: `scaled` holds its top

    @always(clk.posedge)
    def scale():
        if score_valid:
            product_unused_low = intbv(0, min=-(1 << (product_bits - 1)), max=1 << (product_bits - 1))
            product_unused_low[:] = score * attn_scale
            scaled.next = product_unused_low[product_bits:SCALE_FRAC].signed()  # the floor drops the rest
            scaled_t.next = score_t
            scaled_first_t.next = score_first_t
            scaled_last_t.next = score_last_t

    @always_seq(clk.posedge, reset=rst)
    def mark():
        scaled_valid.next = score_valid

    return scale, mark


@block
def running_max(clk, rst, scaled, scaled_valid, first_t, last_t, score_max, scores_last):
    @always(clk.posedge)
    def track():
        if scaled_valid and (first_t or scaled > score_max):
            score_max.next = scaled

    @always_seq(clk.posedge, reset=rst)
    def mark():
        scores_last.next = scaled_valid and last_t

    return track, mark


# --- softmax pass and the score buffer ---------------------------------------------------------

@block
def softmax_pipeline(clk, rst, scores, sb_rdata, score_max, sm, lut_addr, lut_data, p, p_valid, p_t, p_sum,
                     softmax_last):
    """Stages after the issue: 1 the score; 2 u = -floor_shift((s - max) * LOG2E_Q, -15), the
    table address and the octave n; 3 the table read; 4 p = EXP2_LUT[...] >> n and the sum."""
    valid = delay_taps(sm.valid, 3)
    valid_regs = delay_line(clk, rst, valid)
    tag = delay_taps(ConcatSignal(sm.t, sm.first, sm.last), 3)
    tag_regs = delay_line(clk, None, tag, valid[:3])
    t3, first3, last3 = tag[3](len(tag[3]), 2), tag[3](1), tag[3](0)
    octave2 = unsigned_signal(EXP2_ZERO_SHIFT.bit_length())
    octave = delay_taps(octave2, 1)
    octave_regs = delay_line(clk, None, octave, valid[2:3])
    numerator = exp2_argument(clk, valid[1], scores, sb_rdata, score_max, lut_addr, octave2)
    exp2 = exp2_stage(clk, rst, valid[3], lut_data, octave[1], first3, last3, t3, p, p_valid, p_t, p_sum,
                      softmax_last)
    return valid_regs, tag_regs, octave_regs, numerator, exp2


@block
def exp2_argument(clk, enable, scores, sb_rdata, score_max, lut_addr, octave):
    """u = -z_t >= 0 with z_t = floor_shift(d_t * LOG2E_Q, -15); f = u mod 2**16 indexes the
    table by its top 10 bits, n = u >> 16 counts octaves (17 or more give p = 0)."""
    # one word wide enough for d * LOG2E_Q (d <= 0, LOG2E_Q < 2**16)
    width = len(_range_bits(scores.scaled_min - scores.scaled_max, 0)) + EXP2_FRAC + 1
    n = len(sb_rdata)
    zero_octave = EXP2_ZERO_SHIFT << EXP2_FRAC

    @always(clk.posedge)
    def argument():
        if enable:
            d = intbv(0, min=-(1 << (width - 1)), max=1 << (width - 1))
            peak = intbv(0, min=-(1 << (width - 1)), max=1 << (width - 1))
            u = intbv(0, min=-(1 << (width - 1)), max=1 << (width - 1))
            if sb_rdata[n - 1]:  # sign-extend the score and the max
                d[:] = -1
            else:
                d[:] = 0
            d[n:] = sb_rdata
            if score_max[n - 1]:
                peak[:] = -1
            else:
                peak[:] = 0
            peak[n:] = score_max
            d[:] = (d - peak) * LOG2E_Q
            u[:] = -(d >> SCALE_FRAC)
            lut_addr.next = u[EXP2_FRAC:EXP2_FRAC - LUT_ADDR_BITS]
            if u >= zero_octave:
                octave.next = EXP2_ZERO_SHIFT
            else:
                octave.next = u[EXP2_FRAC + len(octave):EXP2_FRAC]

    return argument


@block
def exp2_stage(clk, rst, enable, lut_data, octave, first, last, t, p, p_valid, p_t, p_sum, softmax_last):
    sum_bits = len(p_sum)
    entry = zero_extended(lut_data, sum_bits)

    @always(clk.posedge)
    def exp2():
        if enable:
            value = intbv(0)[sum_bits:]
            value[:] = entry >> octave
            p.next = value[LUT_DATA_BITS:]
            p_t.next = t
            if first:
                p_sum.next = value
            else:
                p_sum.next = p_sum + value

    @always_seq(clk.posedge, reset=rst)
    def mark():
        p_valid.next = enable
        softmax_last.next = enable and last

    return exp2, mark


@block
def score_buffer_writer(clk, rst, scaled_word, scaled_valid, scaled_t, p_word, p_valid, p_t, sb_we, sb_waddr,
                        sb_wdata):
    """The score buffer's one write port: every engine's s_t in the scores pass, its p_t (over
    s_t) in the softmax pass, a field per engine (the engines run in lockstep)."""

    @always(clk.posedge)
    def write():
        if scaled_valid:
            sb_waddr.next = scaled_t
            sb_wdata.next = scaled_word
        elif p_valid:
            sb_waddr.next = p_t
            sb_wdata.next = p_word

    @always_seq(clk.posedge, reset=rst)
    def enable():
        sb_we.next = scaled_valid or p_valid

    return write, enable


@block
def divider(clk, rst, start, divisor, quotient, finished, bits_per_cycle: int = 1):
    """quotient = floor(2**48 / divisor) for divisor >= 2**16, restoring, `bits_per_cycle`
    quotient bits per cycle (divide_cycles(bits_per_cycle) after start; `finished` pulses with
    the last bits). The quotient has at most RCP_BITS bits, so the first partial remainder is the
    numerator's top bits, 2**48 >> (steps - 1) for `steps` quotient bits in all."""
    cycles = divide_cycles(bits_per_cycle)
    steps = cycles * bits_per_cycle  # >= RCP_BITS: the extra leading quotient bits are 0
    rem_bits = len(divisor) + 1
    remainder = unsigned_signal(rem_bits)
    divisor_wide = zero_extended(divisor, rem_bits)
    count = unsigned_signal(cycles.bit_length())
    first_remainder = 1 << (RCP_NUMERATOR_BITS - (steps - 1))

    @always(clk.posedge)
    def step():
        if start:
            remainder.next = first_remainder
            quotient.next = 0
        elif count != 0:
            partial = intbv(0)[rem_bits:]  # < divisor before each shift, so the shift loses nothing
            bits = intbv(0)[RCP_BITS:]
            partial[:] = remainder
            bits[:] = quotient
            for _step in range(bits_per_cycle):
                bits[RCP_BITS:1] = bits[RCP_BITS - 1:]
                bits[0] = partial >= divisor_wide
                if partial >= divisor_wide:
                    partial[:] = partial - divisor_wide
                partial[:] = partial << 1
            remainder.next = partial
            quotient.next = bits

    @always_seq(clk.posedge, reset=rst)
    def sequence():
        finished.next = 0
        if start:
            count.next = cycles
        elif count != 0:
            count.next = count - 1
            if count == 1:
                finished.next = 1

    return step, sequence


# --- weighted pass and the output ------------------------------------------------------------------

@block
def weighted_pipeline(clk, rst, sb_rdata, kv_rdata, rcp, wt, sums, o_valid, o_head_last):
    """Stages after the issue: 1 p_t (the controller issues the V read now); 2 w_t; 3 lane
    products w_t * v and the shift ev + 24; 4 the 73-bit lane sums; 5 sat63 after the last t
    (`sums`, with o_valid); then the output stage (rq(o, -48, 16) registered on the bus)."""
    valid = delay_taps(wt.valid, 4)
    valid_regs = delay_line(clk, rst, valid)
    tag = delay_taps(ConcatSignal(wt.first, wt.last, wt.head_last), 3)
    tag_regs = delay_line(clk, None, tag, valid[:3])
    late = delay_taps(ConcatSignal(tag[3](1), tag[3](0)), 1)  # `first` is done with at stage 3
    late_regs = delay_line(clk, None, late, valid[3:4])
    first3, last4, head_last4 = tag[3](2), late[1](1), late[1](0)
    weight = unsigned_signal(WEIGHT_FRAC + 1)
    weights = weight_stage(clk, valid[1], sb_rdata, rcp, weight)
    value_shift = unsigned_signal(VALUE_SHIFT_MAX.bit_length())
    shifts = value_shift_stage(clk, valid[2], _exponent_field(kv_rdata), value_shift)

    sat_enable = bit_signal()
    lanes = [weighted_lane(clk, valid[2], valid[3], sat_enable, o_valid, weight, v, value_shift, first3, o)
             for v, o in zip(_mantissa_lanes(kv_rdata), sums, strict=True)]
    finish = block_finish(clk, rst, valid[4], last4, head_last4, sat_enable, o_valid, o_head_last)
    return valid_regs, tag_regs, late_regs, weights, shifts, lanes, finish


@block
def weight_stage(clk, enable, sb_rdata, rcp, weight):
    """w_t = (p_t * RCP) >> 24 <= 2**24 (p_t <= 2**16, RCP <= 2**32). The low 24 bits of the
    product are dropped by the spec's floor; the name `unused` tells Verilator so."""
    product_bits = LUT_DATA_BITS + RCP_BITS
    p = sb_rdata(LUT_DATA_BITS, 0)

    @always(clk.posedge)
    def normalise():
        if enable:
            product_unused_low = intbv(0)[product_bits:]
            product_unused_low[:] = p * rcp
            weight.next = product_unused_low[WEIGHT_FRAC + len(weight):WEIGHT_FRAC]

    return normalise


@block
def value_shift_stage(clk, enable, ev, shift):
    """ev + 24, clamped to the contract's 0..33 (values come from rq(acc, -24, 16))."""

    @always(clk.posedge)
    def offset():
        if enable:
            e = intbv(0, min=-(1 << (EXP_BITS - 1)), max=1 << (EXP_BITS - 1))
            e[:] = ev.signed()
            if e < VALUE_EXP_MIN:
                shift.next = 0
            elif e > VALUE_EXP_MAX:
                shift.next = VALUE_SHIFT_MAX
            else:
                e[:] = e - VALUE_EXP_MIN
                shift.next = e[len(shift):]

    return offset


@block
def weighted_lane(clk, product_enable, sum_enable, sat_enable, clear, weight, v, shift, first, o):
    """One output element: sum_t (w_t * v_t) << (ev_t + 24), exact in WSUM_BITS, then sat63.
    The product stays within 64 bits (a simulator's native word); only the shifted term and the
    sum are wide. Each register is read before it is written in the process (no shadow copies)."""
    product = Signal(intbv(0, min=TERM_MIN, max=TERM_MAX + 1))
    pw = len(product)
    total = signed_signal(WSUM_BITS)
    ow = OUT_WORD_BITS

    @always(clk.posedge)
    def lane():
        if clear:
            o.next = 0  # the requantizer idles on zeros: no toggling, and its cheap path in a simulator
        if sat_enable:
            limit = intbv(0, min=-(1 << (ow - 1)), max=1 << (ow - 1))
            limit[ow - 1] = 1  # the most negative word; its complement is the largest
            if not total[WSUM_BITS - 1]:
                limit[:] = ~limit
            if total[WSUM_BITS:ow - 1].signed() == 0 or total[WSUM_BITS:ow - 1].signed() == -1:
                o.next = total[ow:].signed()
            else:
                o.next = limit
        if sum_enable:
            term = intbv(0, min=-(1 << (WSUM_BITS - 1)), max=1 << (WSUM_BITS - 1))
            if product[pw - 1]:  # sign-extend the product to the sum's width
                term[:] = -1
            else:
                term[:] = 0
            term[pw:] = product
            if first:
                total.next = term << shift
            else:
                total.next = total + (term << shift)
        if product_enable:
            product.next = weight * v.signed()

    return lane


@block
def block_finish(clk, rst, valid, last, head_last, sat_enable, o_valid, o_head_last):
    """After the last t of a block: saturate the lane sums (sat_enable), then it is output."""

    @always_comb
    def saturate_now():
        sat_enable.next = valid and last

    @always_seq(clk.posedge, reset=rst)
    def mark():
        o_valid.next = valid and last
        o_head_last.next = valid and head_last

    return saturate_now, mark


@block
def output_stage(clk, rst, o_bus, o_valid, o_head_last, out_valid, out_data, out_exp, out_head_last):
    """rq(o, -48, 16) (the requantizer cell) of the 32 lane sums in `o_bus` (a plain signal: the
    cell slices its input), registered and sign-extended onto the output bus."""
    e_in = signed_signal(EXP_BITS)  # undriven: the constant 0, rq(o, 0, 16); -48 is added after
    mantissas, e_out = unsigned_signal(BLOCK * ACT_BITS), signed_signal(EXP_BITS)
    rq = requant(o_bus, e_in, mantissas, e_out, bits=ACT_BITS, in_width=OUT_WORD_BITS)

    @always(clk.posedge)
    def emit():
        if o_valid:
            word = intbv(0)[BLOCK * WORD:]
            for j in range(BLOCK):
                for b in range(WORD):  # sign extension, bit by bit
                    if b < ACT_BITS:
                        word[WORD * j + b] = mantissas[ACT_BITS * j + b]
                    else:
                        word[WORD * j + b] = mantissas[ACT_BITS * j + ACT_BITS - 1]
            out_data.next = word
            out_exp.next = e_out - ATTN_OUT_FRAC

    @always_seq(clk.posedge, reset=rst)
    def mark():
        out_valid.next = o_valid
        out_head_last.next = o_head_last

    return rq, emit, mark


def _check_ports(die, pos, shape, in_data, in_exp, out_data, out_exp, lut_addr, lut_data) -> None:
    expected = {"pos": (pos, die.position_bits), "heads": (shape.heads, die.heads_bits),
                "kv_heads": (shape.kv_heads, die.heads_bits), "head_blocks": (shape.head_blocks, die.head_blocks_bits),
                "attn_scale": (shape.attn_scale, ATTN_SCALE_BITS), "in_data": (in_data, BLOCK * WORD),
                "in_exp": (in_exp, EXP_BITS), "out_data": (out_data, BLOCK * WORD),
                "out_exp": (out_exp, EXP_BITS), "lut_addr": (lut_addr, die.engines * LUT_ADDR_BITS),
                "lut_data": (lut_data, die.engines * LUT_DATA_BITS)}
    for name, (port, width) in expected.items():
        if len(port) != width:
            raise HardwireError(f"attention_unit port {name} is {len(port)} bits; it must be {width}")
