"""Datapath cells of the base grid: requantizer, block dot-product lane, via-programmable ROM."""
