"""Using a trained network: the tiler that streams any image through a network into a uint8
result, the torch and ONNX Runtime backends, the network rewritten for inference (folded, run
on buffers), the ONNX cache that keys exported graphs by the checkpoint's hash, ``deconas
export`` and ``deconas upscale`` over files and folders."""
