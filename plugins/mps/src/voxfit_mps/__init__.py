"""Apple Silicon (MPS) plugin for voxfit."""
