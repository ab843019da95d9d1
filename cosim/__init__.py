"""Verilator builds and cache, the pyverilator driver, monitors and scoreboards."""
