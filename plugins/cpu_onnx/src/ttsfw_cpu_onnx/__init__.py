"""CPU plugin for ttsfw: ONNX Runtime proposals tuned to the processor."""
