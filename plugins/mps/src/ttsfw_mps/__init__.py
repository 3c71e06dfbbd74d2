"""Apple Silicon (MPS) plugin for ttsfw."""
