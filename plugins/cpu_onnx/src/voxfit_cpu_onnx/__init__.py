"""CPU plugin for voxfit: ONNX Runtime proposals tuned to the processor."""
