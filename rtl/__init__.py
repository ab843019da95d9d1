"""MyHDL hardware: cells, the base grid and the per-model metal generator."""
