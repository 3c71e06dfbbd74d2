"""NVIDIA CUDA plugin for voxfit: NVML detection, memory-fit proposals, GPU environment."""
