"""Tiny random-weight diffusion models, saved like a user's local model folders.

Built from configs with fixed seeds, the way diffusers' own tests build their
``get_dummy_components()``, so nothing is downloaded and a whole pipeline runs on a CPU in a
fraction of a second. Each maker writes a folder that the diffusers backend loads through the
same code path as a real model (``preset.model = "/path"``):

``make_tiny_sd15(path)``            a StableDiffusionPipeline folder (DDIM scheduler)
``make_tiny_sdxl(path)``            a StableDiffusionXLPipeline folder (two text encoders)
``make_tiny_ip_adapter(path)``      ``ip_adapter.safetensors`` + ``image_encoder/`` for one of them
``make_tiny_motion_adapter(path)``  an AnimateDiff MotionAdapter folder for the SD 1.5 UNet
``make_tiny_animatediff(path)``     ``model/``, ``motion_adapter/`` and ``ip_adapter/`` together
``make_tiny_svd(path)``             a StableVideoDiffusionPipeline folder

The VAEs have four blocks, so like the real ones they downsample 8×: a 256×256 image is a
32×32 latent and the UNet stays cheap at the sizes requests allow.

Needs ``torch``, ``diffusers`` and ``transformers``; import this module only after checking
that they exist (``pytest.importorskip``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    DDIMScheduler,
    EulerDiscreteScheduler,
    MotionAdapter,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    StableVideoDiffusionPipeline,
    UNet2DConditionModel,
    UNetSpatioTemporalConditionModel,
)
from safetensors.torch import save_file
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

__all__ = [
    "IMAGE_ENCODER_SIZE",
    "IP_ADAPTER_WEIGHT",
    "make_tiny_animatediff",
    "make_tiny_ip_adapter",
    "make_tiny_motion_adapter",
    "make_tiny_sd15",
    "make_tiny_sdxl",
    "make_tiny_svd",
]

IP_ADAPTER_WEIGHT = "ip_adapter.safetensors"
IMAGE_ENCODER_SIZE = 32
_IMAGE_EMBED_DIM = 32  # the image encoder's projection_dim, the IP-Adapter's input

_SD15_UNET: dict[str, Any] = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
}
_SDXL_UNET: dict[str, Any] = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "transformer_layers_per_block": (1, 2),
    "projection_class_embeddings_input_dim": 80,  # 6 time ids × 8 + the pooled text (32)
    "cross_attention_dim": 64,  # both text encoders' hidden states side by side
    "norm_num_groups": 8,
}
_UNET_CONFIGS = {"sd15": _SD15_UNET, "sdxl": _SDXL_UNET}
_TEXT: dict[str, Any] = {
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
    "hidden_size": 32,
    "intermediate_size": 37,
    "layer_norm_eps": 1e-05,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 77,
    "projection_dim": 32,
}
_SD_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def _tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with one token per byte (no merges): built offline."""
    # GPT-2's byte-to-unicode table, so every UTF-8 byte has a printable symbol.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in symbols.values():
        vocab[symbol] = len(vocab)
        vocab[symbol + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def make_tiny_sd15(path: Path | str) -> Path:
    """Save a tiny Stable Diffusion 1.5-shaped pipeline (no safety checker) into ``path``."""
    path = Path(path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_SD15_UNET)
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**_TEXT))
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=_vae(2),
        text_encoder=text_encoder,
        tokenizer=_tokenizer(),
        scheduler=DDIMScheduler(**_SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def make_tiny_sdxl(path: Path | str) -> Path:
    """Save a tiny SDXL-shaped pipeline (two text encoders, text-time conditioning)."""
    path = Path(path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_SDXL_UNET)
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**_TEXT))
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**_TEXT))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=_vae(2),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=_tokenizer(),
        tokenizer_2=_tokenizer(),
        scheduler=scheduler,
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.save_pretrained(path)
    return path


def _cross_attention_sizes(unet_config: dict[str, Any]) -> list[int]:
    """Hidden sizes of the UNet's cross-attention processors, in the order diffusers numbers them.

    The original IP-Adapter files number every attention processor (self-attention ``attn1``
    takes 0, 2, 4, …) but only the cross-attention ones carry weights, so diffusers reads keys
    1, 3, 5, … in ``unet.attn_processors`` order, skipping ``attn1``.
    """
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config)
    channels = list(unet_config["block_out_channels"])
    sizes = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            sizes.append(channels[-1])
        elif name.startswith("up_blocks"):
            sizes.append(list(reversed(channels))[int(name[len("up_blocks.")])])
        else:
            sizes.append(channels[int(name[len("down_blocks.")])])
    return sizes


def make_tiny_ip_adapter(path: Path | str, family: str = "sd15", seed: int = 7) -> Path:
    """Save a tiny IP-Adapter for :func:`make_tiny_sd15` (or ``family="sdxl"``) into ``path``.

    Layout, as ``pipe.load_ip_adapter(path, subfolder="", weight_name=IP_ADAPTER_WEIGHT,
    image_encoder_folder="image_encoder")`` reads it::

        ip_adapter.safetensors   image_proj.proj.{weight,bias}   Linear(embed → 4 × cross_dim)
                                 image_proj.norm.{weight,bias}   LayerNorm(cross_dim)
                                 ip_adapter.{1,3,5…}.to_{k,v}_ip.weight   (hidden, cross_dim)
        image_encoder/           CLIPVisionModelWithProjection + preprocessor_config.json
    """
    path = Path(path)
    unet_config = _UNET_CONFIGS[family]
    cross_dim = int(unet_config["cross_attention_dim"])
    generator = torch.Generator().manual_seed(seed)

    def weights(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.2

    tensors = {
        "image_proj.proj.weight": weights(4 * cross_dim, _IMAGE_EMBED_DIM),
        "image_proj.proj.bias": weights(4 * cross_dim),
        "image_proj.norm.weight": 1.0 + weights(cross_dim),
        "image_proj.norm.bias": weights(cross_dim),
    }
    for index, hidden in enumerate(_cross_attention_sizes(unet_config)):
        key = 2 * index + 1
        tensors[f"ip_adapter.{key}.to_k_ip.weight"] = weights(hidden, cross_dim)
        tensors[f"ip_adapter.{key}.to_v_ip.weight"] = weights(hidden, cross_dim)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / IP_ADAPTER_WEIGHT))

    torch.manual_seed(seed + 1)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=_IMAGE_EMBED_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=IMAGE_ENCODER_SIZE,
            patch_size=4,
        )
    )
    encoder.save_pretrained(path / "image_encoder")
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_ENCODER_SIZE},
        crop_size={"height": IMAGE_ENCODER_SIZE, "width": IMAGE_ENCODER_SIZE},
    ).save_pretrained(path / "image_encoder")
    return path


def make_tiny_motion_adapter(path: Path | str) -> Path:
    """Save a tiny AnimateDiff MotionAdapter matching :func:`make_tiny_sd15`'s UNet."""
    path = Path(path)
    torch.manual_seed(4)
    adapter = MotionAdapter(
        block_out_channels=_SD15_UNET["block_out_channels"],
        motion_layers_per_block=2,
        motion_norm_num_groups=2,
        motion_num_attention_heads=4,
    )
    adapter.save_pretrained(path)
    return path


def make_tiny_animatediff(path: Path | str) -> Path:
    """An SD 1.5 base (``model/``), its motion adapter and IP-Adapter, side by side in ``path``.

    The matching preset: ``model = path/"model"``, options ``family = "animatediff"``,
    ``motion_adapter = path/"motion_adapter"``, ``ip_adapter = path/"ip_adapter"``.
    """
    path = Path(path)
    make_tiny_sd15(path / "model")
    make_tiny_motion_adapter(path / "motion_adapter")
    make_tiny_ip_adapter(path / "ip_adapter")
    return path


def make_tiny_svd(path: Path | str) -> Path:
    """Save a tiny StableVideoDiffusionPipeline into ``path``.

    Its image encoder works at 224 px because the pipeline resizes the conditioning image to
    224×224 itself; large patches keep that cheap.
    """
    path = Path(path)
    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    torch.manual_seed(5)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        latent_channels=4,
    )
    torch.manual_seed(6)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            intermediate_size=37,
            patch_size=32,
        )
    )
    feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    )
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=feature_extractor,
    )
    pipe.save_pretrained(path)
    return path


def make_sd15_sized(path: Path | str, dtype: torch.dtype = torch.float16) -> Path:
    """An SD 1.5-*sized* pipeline with random weights (same compute as the real model).

    For throughput measurements on a GPU without downloading weights: UNet 320/640/1280/1280
    with 768-wide cross-attention, the SD VAE, a 12-layer 768-wide CLIP text encoder. The
    pictures are noise; the time per step is the real model's. Saved in ``dtype`` (~2 GB in
    fp16).
    """
    path = Path(path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            **{
                **_TEXT,
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_attention_heads": 12,
                "num_hidden_layers": 12,
                "projection_dim": 768,
            }
        )
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tokenizer(),
        scheduler=DDIMScheduler(**_SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.to(dtype)
    pipe.save_pretrained(path)
    return path
