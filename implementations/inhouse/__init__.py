"""The ComfyUI node pack fblissjr/ComfyUI-QwenImageWanBridge 2.9.12, prompt path re-implemented."""
