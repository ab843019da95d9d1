"""Tile units built from the cells: the vector unit (RMSNorm, RoPE, SiLU gate, residual add, requantizer)."""
