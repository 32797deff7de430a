"""Does each SDPA kernel on this machine give NaN for a fully masked query row — in its output or its gradients?

The open GPU NaN (benchmarks/README.md, "The first GPU check"): a left-padded row's leading pad tokens attend to no
key in the boolean mask transformers builds, and one guess is that a fused CUDA kernel's backward turns such rows
into NaN. hf_prefs now gives SDPA a mask without empty rows (``hf_prefs.models.attention.attention_mask_for``);
this probe says, in seconds, whether the guess holds where it runs. For every backend PyTorch has on the device
(math, memory-efficient, flash, cuDNN; on CPU math and its flash kernel), in float32 and bf16 (and fp16 on CUDA):

    out      forward output of the real rows / of the empty row finite?
    grad     q, k, v gradients of a loss on the real rows only finite?
    fixed    the same with the empty row given its diagonal (this project's mask): finite, and the real rows'
             output equal to the math kernel's?

    python benchmarks/sdpa_empty_rows.py            # ~5 s; `gpu_check.sh` runs it first on a GPU

A kernel that refuses the inputs (no boolean mask, dtype, head size) prints ``unsupported``.
"""

from __future__ import annotations

import argparse

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"math": SDPBackend.MATH, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def masks(batch: int, length: int, pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 1, L, L)`` boolean causal masks with ``pad`` leading pad tokens in row 0: transformers' (rows
    ``0..pad-1`` of batch 0 empty) and this project's (those rows attend to themselves)."""
    padding = torch.ones(batch, length, dtype=torch.bool, device=device)
    padding[0, :pad] = False
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    theirs = (causal & padding[:, None, :])[:, None]
    ours = theirs | torch.eye(length, dtype=torch.bool, device=device)
    return theirs, ours


def probe(backend: SDPBackend, dtype: torch.dtype, device: torch.device, mask: torch.Tensor, real: torch.Tensor,
          seed: int = 0) -> tuple[torch.Tensor, bool, bool, bool]:
    """``(output, real rows finite, empty rows finite, gradients finite)`` of one forward + backward; the loss
    reads the real rows only (as PPO's loss never reads a pad position)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    b, _, length, _ = mask.shape
    q, k, v = (torch.randn(b, 4, length, 64, generator=g).to(device, dtype).requires_grad_() for _ in range(3))
    with sdpa_kernel([backend]):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    rows = real[:, None, :, None].expand_as(out)  # (B, H, L, D): the real tokens' rows
    (out.float() * rows).sum().backward()
    grads_finite = all(bool(torch.isfinite(t.grad).all()) for t in (q, k, v))
    return (out.detach(), bool(torch.isfinite(out[rows]).all()), bool(torch.isfinite(out[~rows]).all()),
            grads_finite)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--pad", type=int, default=16)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
    names = list(BACKENDS) if device.type == "cuda" else ["math", "flash"]
    theirs, ours = masks(2, args.length, args.pad, device)
    real = torch.ones(2, args.length, dtype=torch.bool, device=device)
    real[0, : args.pad] = False
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; "
          f"row 0 has {args.pad} leading pad tokens of {args.length}")
    for dtype in dtypes:
        reference = probe(SDPBackend.MATH, dtype, device, ours, real)[0]
        for name in names:
            try:
                _, real_ok, empty_ok, grads_ok = probe(BACKENDS[name], dtype, device, theirs, real)
                out, f_real, f_empty, f_grads = probe(BACKENDS[name], dtype, device, ours, real)
            except RuntimeError as err:  # the kernel does not take these inputs
                print(f"{str(dtype)[6:]:>9} {name:>9}: unsupported ({str(err).splitlines()[0][:90]})")
                continue
            ok = lambda flag: "finite" if flag else "NaN/inf"  # noqa: E731
            rows = real[:, None, :, None].expand_as(out)
            same = torch.allclose(out[rows].float(), reference[rows].float(), atol=2e-2 if dtype != torch.float32 else 1e-5)
            print(f"{str(dtype)[6:]:>9} {name:>9}: empty rows -> out {ok(real_ok)} (real rows) / {ok(empty_ok)} "
                  f"(empty rows), grad {ok(grads_ok)} | fixed mask -> out {ok(f_real and f_empty)}, "
                  f"grad {ok(f_grads)}, real rows {'equal to math' if same else 'DIFFERENT from math'}")


if __name__ == "__main__":
    main()
