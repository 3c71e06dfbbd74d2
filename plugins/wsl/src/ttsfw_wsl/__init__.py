"""WSL2 plugin for ttsfw: adjusts CUDA proposals under Windows Subsystem for Linux."""
