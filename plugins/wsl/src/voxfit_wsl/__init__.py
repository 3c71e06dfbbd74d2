"""WSL2 plugin for voxfit: adjusts CUDA proposals under Windows Subsystem for Linux."""
