"""hardwire: print a quantized Llama-family LLM onto a chip and prove it bit for bit.

This package is the face (the `hardwire` command); the layers below it are
`hardwire.golden` (numpy reference), `hardwire.rtl` (MyHDL hardware) and
`hardwire.cosim` (Verilator co-simulation). Imports run golden <- rtl <- cosim <- tools.
"""

__version__ = "0.1.0"
