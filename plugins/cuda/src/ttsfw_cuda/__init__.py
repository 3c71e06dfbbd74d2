"""NVIDIA CUDA plugin for ttsfw: NVML detection, memory-fit proposals, GPU environment."""
