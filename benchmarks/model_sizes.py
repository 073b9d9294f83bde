"""Download size and fp16 GPU weight floor of each built-in preset, computed from the real
architectures, not guessed.

    .venv/bin/python benchmarks/model_sizes.py [--json] [--write]

``--write`` rewrites ``src/castbook/models/estimated_sizes.json``: the computed size of each
weight file, which castbook shows (marked ≈) until the hub has reported the real sizes.

For every weight file castbook downloads for a built-in diffusers preset (the files
``castbook.models.parts.preset_parts`` names), the model is built at full size on torch's
``meta`` device (shapes only, nothing allocated: runs in seconds on a CPU) from the
published model's config, and the file's size is computed exactly as safetensors writes it:
8 bytes + the JSON header (tensor names, dtypes, shapes, offsets, ``{"format": "pt"}``
metadata, padded to 8 bytes) + elements × bytes per element in the dtype the file is
published in. The header formula is checked here against ``safetensors.torch.save_file`` on
a small model. The IP-Adapter files are not diffusers models; their tensors are listed the
way the IP-Adapter code names them (checked against diffusers' own projection classes).

Also printed per preset: the fp16 weights that sit in GPU memory while generating (every
component, cast to fp16 as castbook loads them). That is a floor for VRAM, not a
measurement of peak VRAM: activations, the VAE decode and CUDA's context come on top.
Only the weight files are sized; each preset also downloads JSON configs and, for the text
encoders, tokenizer files (about 1.6 MB per CLIP tokenizer), left out of the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
ESTIMATES = ROOT / "src" / "castbook" / "models" / "estimated_sizes.json"

from castbook.generation.presets import BUILTIN_PRESETS  # noqa: E402
from castbook.models.parts import preset_parts  # noqa: E402

GB = 10**9
Spec = dict[str, tuple[tuple[int, ...], torch.dtype]]  # tensor name → shape, dtype as stored

# safetensors' names, and its order when it lays tensors out (larger alignment first).
_ST_DTYPE = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.int64: "I64"}
_ST_ORDER = ["F16", "BF16", "F32", "I64"]


# ---------------------------------------------------------------------------- safetensors


def safetensors_bytes(spec: Spec, metadata: dict[str, str] | None = None) -> tuple[int, int]:
    """(file size, header size) of ``spec`` saved by safetensors: tensors sorted by dtype
    (descending) then name, a compact JSON header padded with spaces to 8 bytes."""
    metadata = {"format": "pt"} if metadata is None else metadata
    items = sorted(spec.items(), key=lambda kv: (-_ST_ORDER.index(_ST_DTYPE[kv[1][1]]), kv[0]))
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, (shape, dtype) in items:
        nbytes = dtype.itemsize
        for n in shape:
            nbytes *= n
        header[name] = {
            "dtype": _ST_DTYPE[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    padded = len(text) + (-len(text)) % 8
    return 8 + padded + offset, 8 + padded


def check_header_formula() -> str:
    """Save a small real model with safetensors and compare its size with the formula."""
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    model = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=3,
            vocab_size=1000,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        )
    ).half()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["int64_buffer"] = torch.arange(77).unsqueeze(0)  # a mixed-dtype file too
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_file(tensors, path, metadata={"format": "pt"})
        actual = path.stat().st_size
        with path.open("rb") as fh:
            (header,) = struct.unpack("<Q", fh.read(8))
    predicted, predicted_header = safetensors_bytes(spec_of(tensors, None))
    if (actual, header + 8) != (predicted, predicted_header):
        raise SystemExit(f"safetensors header formula is off: {predicted} vs {actual} bytes")
    return f"safetensors size formula = save_file's size on a small model ({actual} bytes)"


def spec_of(state: dict[str, torch.Tensor], stored: torch.dtype | None) -> Spec:
    """Shapes and stored dtypes of a state dict: floating tensors in ``stored`` (the published
    file's dtype), integer buffers as they are."""
    return {
        name: (tuple(t.shape), stored if stored is not None and t.is_floating_point() else t.dtype)
        for name, t in state.items()
    }


# ---------------------------------------------------------------------------- the models


def sd15_unet():
    from diffusers import UNet2DConditionModel

    # stable-diffusion-v1-5 unet/config.json: the class defaults but these two.
    return UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)


def sdxl_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(  # stable-diffusion-xl-base-1.0 unet/config.json
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        use_linear_projection=True,
        layers_per_block=2,
    )


def sd_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(  # the SD 1.5 and SDXL VAE (same architecture)
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )


def clip_l_text():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(  # openai/clip-vit-large-patch14's text tower (SD 1.5, SDXL #1)
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )


def clip_bigg_text():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(  # OpenCLIP ViT-bigG/14 text (SDXL text_encoder_2)
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=20,
            max_position_embeddings=77,
            projection_dim=1280,
            hidden_act="gelu",
        )
    )


def clip_h_vision():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(  # OpenCLIP ViT-H/14 image tower (IP-Adapter, SVD)
        CLIPVisionConfig(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            patch_size=14,
            image_size=224,
            projection_dim=1024,
            hidden_act="gelu",
        )
    )


def motion_adapter_v152():
    from diffusers import MotionAdapter

    # guoyww/animatediff-motion-adapter-v1-5-2 config.json: block_out_channels
    # (320, 640, 1280, 1280), 2 motion layers per block, a mid-block motion layer, 8 heads,
    # norm groups 32, max_seq_length 32: all MotionAdapter's defaults.
    return MotionAdapter()


def svd_unet():
    from diffusers import UNetSpatioTemporalConditionModel

    return UNetSpatioTemporalConditionModel()  # the defaults are img2vid-xt's config


def svd_vae():
    from diffusers import AutoencoderKLTemporalDecoder

    return AutoencoderKLTemporalDecoder(  # img2vid-xt vae/config.json (not the defaults)
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=768,
    )


def ip_adapter_layers(unet: torch.nn.Module, count: int) -> Spec:
    """``to_k_ip``/``to_v_ip`` for each of the ``count`` cross-attentions, numbered as the
    IP-Adapter code numbers them: the index in ``unet.attn_processors`` (self-attentions
    included, so 1, 3, 5, …)."""
    spec: Spec = {}
    for index, name in enumerate(unet.attn_processors):  # type: ignore[attr-defined]
        if name.endswith("attn2.processor"):
            to_k = unet.get_submodule(name.removesuffix(".processor")).to_k
            shape = tuple(to_k.weight.shape)  # (hidden, cross_attention_dim)
            spec[f"ip_adapter.{index}.to_k_ip.weight"] = (shape, torch.float16)
            spec[f"ip_adapter.{index}.to_v_ip.weight"] = (shape, torch.float16)
    if len(spec) != 2 * count:
        raise SystemExit(f"expected {count} cross-attention layers, found {len(spec) // 2}")
    return spec


def ip_adapter_sd15() -> Spec:
    """models/ip-adapter_sd15.safetensors: ImageProjModel (Linear 1024 → 4×768, LayerNorm)
    and the 16 cross-attention layers' to_k_ip/to_v_ip, fp16."""
    from diffusers.models.embeddings import ImageProjection

    f16 = torch.float16
    spec: Spec = {
        "image_proj.proj.weight": ((4 * 768, 1024), f16),
        "image_proj.proj.bias": ((4 * 768,), f16),
        "image_proj.norm.weight": ((768,), f16),
        "image_proj.norm.bias": ((768,), f16),
    }
    check = ImageProjection(image_embed_dim=1024, cross_attention_dim=768, num_image_text_embeds=4)
    assert_same_count(spec, check, "image_proj")
    return spec | ip_adapter_layers(sd15_unet(), 16)


def ip_adapter_plus_face_sdxl() -> Spec:
    """sdxl_models/ip-adapter-plus-face_sdxl_vit-h.safetensors: the Resampler (dim 1280,
    depth 4, 20 heads of 64, 16 queries, in 1280 = ViT-H's hidden size, out 2048, ff ×4) and
    SDXL's 70 cross-attention layers' to_k_ip/to_v_ip, fp16."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    f16 = torch.float16
    dim, depth, heads, dim_head, queries, embed, out, mult = 1280, 4, 20, 64, 16, 1280, 2048, 4
    inner = heads * dim_head
    spec: Spec = {
        "image_proj.latents": ((1, queries, dim), f16),
        "image_proj.proj_in.weight": ((dim, embed), f16),
        "image_proj.proj_in.bias": ((dim,), f16),
        "image_proj.proj_out.weight": ((out, dim), f16),
        "image_proj.proj_out.bias": ((out,), f16),
        "image_proj.norm_out.weight": ((out,), f16),
        "image_proj.norm_out.bias": ((out,), f16),
    }
    for i in range(depth):
        attention, ff = f"image_proj.layers.{i}.0", f"image_proj.layers.{i}.1"
        for norm in ("norm1", "norm2"):
            spec[f"{attention}.{norm}.weight"] = ((dim,), f16)
            spec[f"{attention}.{norm}.bias"] = ((dim,), f16)
        spec[f"{attention}.to_q.weight"] = ((inner, dim), f16)
        spec[f"{attention}.to_kv.weight"] = ((2 * inner, dim), f16)
        spec[f"{attention}.to_out.weight"] = ((dim, inner), f16)
        spec[f"{ff}.0.weight"] = ((dim,), f16)  # LayerNorm, Linear, GELU, Linear
        spec[f"{ff}.0.bias"] = ((dim,), f16)
        spec[f"{ff}.1.weight"] = ((dim * mult, dim), f16)
        spec[f"{ff}.3.weight"] = ((dim, dim * mult), f16)
    check = IPAdapterPlusImageProjection(
        embed_dims=embed,
        output_dims=out,
        hidden_dims=dim,
        depth=depth,
        dim_head=dim_head,
        heads=heads,
        num_queries=queries,
        ffn_ratio=mult,
    )
    assert_same_count(spec, check, "image_proj")
    return spec | ip_adapter_layers(sdxl_unet(), 70)


def assert_same_count(spec: Spec, module: torch.nn.Module, prefix: str) -> None:
    ours = sum(numel(shape) for name, (shape, _) in spec.items() if name.startswith(prefix))
    theirs = sum(p.numel() for p in module.parameters())
    if ours != theirs:
        raise SystemExit(f"{prefix}: {ours} elements listed, diffusers' class has {theirs}")


def numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ---------------------------------------------------------------------------- the files


@dataclass(frozen=True)
class Weights:
    """How to size one published weight file."""

    build: Callable[[], torch.nn.Module | Spec]  # a model, or its tensors listed
    stored: torch.dtype  # the published file's dtype (floating tensors)
    what: str
    assumption: str = ""


# (repository, file) → how it is built. The repositories and files are the ones
# preset_parts() names; anything it names that is not here is an error.
FILES: dict[tuple[str, str], Weights] = {}
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
SVD = "stabilityai/stable-video-diffusion-img2vid-xt"
IPA = "h94/IP-Adapter"
MOTION = "guoyww/animatediff-motion-adapter-v1-5-2"
F16, F32 = torch.float16, torch.float32
for repo, unet in ((SD15, sd15_unet), (SDXL, sdxl_unet)):
    FILES[repo, "unet/diffusion_pytorch_model.fp16.safetensors"] = Weights(unet, F16, "UNet")
    FILES[repo, "vae/diffusion_pytorch_model.fp16.safetensors"] = Weights(sd_vae, F16, "VAE")
    FILES[repo, "text_encoder/model.fp16.safetensors"] = Weights(
        clip_l_text, F16, "CLIP ViT-L/14 text"
    )
FILES[SDXL, "text_encoder_2/model.fp16.safetensors"] = Weights(
    clip_bigg_text, F16, "OpenCLIP ViT-bigG/14 text + projection"
)
FILES[SVD, "unet/diffusion_pytorch_model.fp16.safetensors"] = Weights(
    svd_unet, F16, "spatio-temporal UNet"
)
FILES[SVD, "vae/diffusion_pytorch_model.fp16.safetensors"] = Weights(
    svd_vae, F16, "VAE, temporal decoder"
)
FILES[SVD, "image_encoder/model.fp16.safetensors"] = Weights(
    clip_h_vision, F16, "OpenCLIP ViT-H/14 vision + projection"
)
FILES[IPA, "models/ip-adapter_sd15.safetensors"] = Weights(
    ip_adapter_sd15, F16, "IP-Adapter SD 1.5", "published in fp16 (44.6 MB on the hub page)"
)
FILES[IPA, "sdxl_models/ip-adapter-plus-face_sdxl_vit-h.safetensors"] = Weights(
    ip_adapter_plus_face_sdxl, F16, "IP-Adapter Plus Face SDXL", "published in fp16"
)
FILES[IPA, "models/image_encoder/model.safetensors"] = Weights(
    clip_h_vision, F32, "OpenCLIP ViT-H/14 vision + projection", "published in fp32 (2.53 GB)"
)
FILES[MOTION, "diffusion_pytorch_model.safetensors"] = Weights(
    motion_adapter_v152, F32, "AnimateDiff motion modules", "no variant: fp32"
)


@dataclass
class Sized:
    repo: str
    file: str
    what: str
    parameters: int  # nn.Parameter elements (for IP-Adapter files: every tensor's)
    elements: int  # every tensor stored (parameters + persistent buffers)
    dtype: str
    header: int
    bytes: int
    gpu_fp16_bytes: int  # its floating tensors in fp16: what sits in GPU memory
    assumption: str


def size_file(repo: str, file: str, weights: Weights) -> Sized:
    with torch.device("meta"):
        built = weights.build()
    if isinstance(built, torch.nn.Module):
        spec = spec_of(built.state_dict(), weights.stored)
        parameters = sum(p.numel() for p in built.parameters())
    else:
        spec = built
        parameters = sum(numel(shape) for shape, _ in spec.values())
    total, header = safetensors_bytes(spec)
    floating = sum(numel(s) for s, d in spec.values() if d.is_floating_point)
    dtypes = sorted({_ST_DTYPE[d] for _, d in spec.values()}, key=_ST_ORDER.index)
    return Sized(
        repo=repo,
        file=file,
        what=weights.what,
        parameters=parameters,
        elements=sum(numel(s) for s, _ in spec.values()),
        dtype="+".join(dtypes),
        header=header,
        bytes=total,
        gpu_fp16_bytes=2 * floating,
        assumption=weights.assumption,
    )


def weight_files(preset_id: str) -> list[tuple[str, str]]:
    preset = next(p for p in BUILTIN_PRESETS if p.id == preset_id)
    files = []
    for part in preset_parts(preset):
        for pattern in part.files:
            if pattern.endswith(".safetensors"):
                files.append((part.location, pattern))
    return files


# Figures known from elsewhere, checked here: parameter counts from the models' papers and
# cards (ViT-H/14: OpenCLIP's 632.08 M for its image tower with projection); byte sizes as
# the hub's file pages show them, recalled (the hub cannot be reached where this was written).
KNOWN_PARAMETERS = {
    (SD15, "unet/diffusion_pytorch_model.fp16.safetensors"): 859_520_964,
    (SDXL, "unet/diffusion_pytorch_model.fp16.safetensors"): 2_567_463_684,
    (SD15, "vae/diffusion_pytorch_model.fp16.safetensors"): 83_653_863,
    (SD15, "text_encoder/model.fp16.safetensors"): 123_060_480,
    (SDXL, "text_encoder_2/model.fp16.safetensors"): 694_659_840,
    (IPA, "models/image_encoder/model.safetensors"): 632_076_800,  # OpenCLIP ViT-H-14 visual
}
KNOWN_BYTES = {  # the hub's file pages, 3 significant figures
    (SD15, "unet/diffusion_pytorch_model.fp16.safetensors"): 1.72 * GB,
    (SDXL, "unet/diffusion_pytorch_model.fp16.safetensors"): 5.14 * GB,
    (SDXL, "text_encoder_2/model.fp16.safetensors"): 1.39 * GB,
    (IPA, "models/image_encoder/model.safetensors"): 2.53 * GB,
    (IPA, "models/ip-adapter_sd15.safetensors"): 44.6e6,
}
EXACT_BYTES = {  # byte-exact sizes of published files
    (SD15, "vae/diffusion_pytorch_model.fp16.safetensors"): 167_335_342,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--write", action="store_true", help=f"rewrite {ESTIMATES.relative_to(ROOT)}"
    )
    options = parser.parse_args()
    started = time.perf_counter()
    formula = check_header_formula()
    presets = [p.id for p in BUILTIN_PRESETS if p.backend == "diffusers"]
    sized: dict[tuple[str, str], Sized] = {}
    per_preset: dict[str, list[Sized]] = {}
    for preset_id in presets:
        per_preset[preset_id] = []
        for repo, file in weight_files(preset_id):
            if (repo, file) not in FILES:
                raise SystemExit(f"{preset_id}: no model here for {repo}/{file}; add it")
            if (repo, file) not in sized:
                sized[repo, file] = size_file(repo, file, FILES[repo, file])
            per_preset[preset_id].append(sized[repo, file])
    checks = []
    for key, expected in KNOWN_PARAMETERS.items():
        got = sized[key].parameters
        checks.append((f"{key[1]} ({key[0]}) parameters", expected, got, got == expected))
    for key, expected in KNOWN_BYTES.items():
        got = sized[key].bytes
        ok = abs(got / expected - 1) < 0.005
        checks.append((f"{key[1]} ({key[0]}) bytes, ±0.5 %", expected, got, ok))
    for key, expected in EXACT_BYTES.items():
        got = sized[key].bytes
        checks.append((f"{key[1]} ({key[0]}) bytes, exactly", expected, got, got == expected))
    seconds = time.perf_counter() - started
    if options.write:
        if not all(ok for *_, ok in checks):
            raise SystemExit("a check failed; not writing the estimates")
        table = {f"{repo}/{file}": s.bytes for (repo, file), s in sorted(sized.items())}
        document = {"source": "benchmarks/model_sizes.py", "bytes": table}
        ESTIMATES.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")

    if options.json:
        print(
            json.dumps(
                {
                    "presets": {
                        preset_id: {
                            "files": [vars(s) for s in files],
                            "download_bytes": sum(s.bytes for s in files),
                            "gpu_fp16_weight_bytes": sum(s.gpu_fp16_bytes for s in files),
                        }
                        for preset_id, files in per_preset.items()
                    },
                    "checks": [
                        {"what": w, "expected": e, "computed": g, "ok": ok}
                        for w, e, g, ok in checks
                    ],
                    "header_formula": formula,
                    "torch": torch.__version__,
                },
                indent=2,
            )
        )
        if not all(ok for *_, ok in checks):
            raise SystemExit(1)
        return
    import diffusers
    import transformers

    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers "
        f"{transformers.__version__}; {os.cpu_count()} cores; built on the meta device in "
        f"{seconds:.1f} s"
    )
    print(f"{formula}\n")
    for preset_id, files in per_preset.items():
        print(f"{preset_id:<62} {'parameters':>14} {'dtype':>5} {'bytes':>15}")
        repo = ""
        for s in files:
            if s.repo != repo:
                repo = s.repo
                print(f"  {repo}")
            print(f"    {s.file:<58} {s.parameters:>14,} {s.dtype:>5} {s.bytes:>15,}")
            if s.elements != s.parameters:
                print(f"    {'':<58} {s.elements - s.parameters:>+14,} elements in buffers")
        download = sum(s.bytes for s in files)
        gpu = sum(s.gpu_fp16_bytes for s in files)
        print(
            f"  download: {download / GB:.2f} GB (weights; + configs and tokenizers, a few MB)"
            f"   fp16 weights on the GPU: {gpu / GB:.2f} GB ({gpu / 2**30:.2f} GiB), a floor "
            "for VRAM, not its peak\n"
        )
    print("checks against published figures:")
    for what, expected, got, ok in checks:
        print(f"  {'ok  ' if ok else 'DIFF'} {what}: expected {expected:,.0f}, computed {got:,}")
    print("\nassumptions:")
    for s in sized.values():
        if s.assumption:
            print(f"  {s.repo}/{s.file}: {s.assumption}")
    print(
        "  fp16 variants: every floating tensor in fp16. Headers computed with "
        '{"format": "pt"} metadata; a publisher\'s own metadata changes a file by some bytes.'
    )
    print(
        "  text encoders: no int64 position_ids buffer (transformers stopped saving it in "
        "4.31; a file written before has it: +712 bytes)"
    )
    if not all(ok for *_, ok in checks):
        raise SystemExit("a check failed")


if __name__ == "__main__":
    main()
