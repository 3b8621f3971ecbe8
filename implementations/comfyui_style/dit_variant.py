"""ComfyUI's Z-Image DiT (`NextDiT`, `comfy/ldm/lumina/model.py`) as a `DiTVariant` of the shared DiT.

The same weights and the same model; what ComfyUI writes differently: the joint sequence is
[caption, image], RoPE is applied as 2x2 rotation matrices (Flux's form), q, k and v come from one
fused matmul, the q/k RMSNorm is built without an eps (the input dtype's machine epsilon), and
RMSNorm is `torch.nn.functional.rms_norm`, which normalises and weights in fp32.
"""

from __future__ import annotations

from implementations.zimage.dit import DiTVariant

COMFYUI = DiTVariant(joint_order="caption_image", rope="rotation", fused_qkv=True, qk_norm_eps=None, norm_cast="fp32")
