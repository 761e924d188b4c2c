"""The TF.js graph → ONNX converter on a small graph written the way TF.js writes one (fused convolutions, fp16-
quantised weights), against a numpy reference of TensorFlow's ops; and on the real CenterNet it converts."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from deskgen.common.detect.tfjs import convert_graph_model

FOLDER = Path(__file__).resolve().parents[3] / ".cache" / "detectors"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _conv_attrs(strides: int, padding: str, fused: list[str] | None = None) -> dict:
    attrs = {"strides": {"list": {"i": ["1", str(strides), str(strides), "1"]}},
             "dilations": {"list": {"i": ["1", "1", "1", "1"]}}, "padding": {"s": _b64(padding)},
             "data_format": {"s": _b64("NHWC")}}
    if fused:
        attrs["fused_ops"] = {"list": {"s": [_b64(op) for op in fused]}}
    return attrs


def _write_graph(folder: Path, weights: dict[str, np.ndarray]) -> Path:
    """x [1,10,10,3] (odd padding: TF pads the end) → fused conv 3×3 /2 SAME + bias + Relu → depthwise 3×3 SAME → ×(hard-swish style) add/Relu6/mul
    → resize ×2 → concat with itself → mean over H, W (keep dims) → sigmoid."""
    nodes = [
        {"name": "x", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": [{"size": s} for s in ("1", "10", "10", "3")]}}}},
        {"name": "conv", "op": "_FusedConv2D", "input": ["x", "k", "b"], "attr": _conv_attrs(2, "SAME", ["BiasAdd", "Relu"])},
        {"name": "dw", "op": "DepthwiseConv2dNative", "input": ["conv", "dk"], "attr": _conv_attrs(1, "SAME")},
        {"name": "add", "op": "Add", "input": ["dw", "three"]},
        {"name": "relu6", "op": "Relu6", "input": ["add"]},
        {"name": "mul", "op": "Mul", "input": ["relu6", "dw"]},
        {"name": "up", "op": "ResizeBilinear", "input": ["mul", "size"], "attr": {"align_corners": {"b": False},
                                                                                 "half_pixel_centers": {"b": False}}},
        {"name": "cat", "op": "ConcatV2", "input": ["up", "up", "axis"]},
        {"name": "mean", "op": "Mean", "input": ["cat", "axes"], "attr": {"keep_dims": {"b": True}}},
        {"name": "out", "op": "Sigmoid", "input": ["mean"]},
    ] + [{"name": name, "op": "Const"} for name in weights]
    manifest, blobs = [], []
    for name, value in weights.items():
        if value.dtype == np.float32:
            manifest.append({"name": name, "shape": list(value.shape), "dtype": "float32",
                             "quantization": {"dtype": "float16", "original_dtype": "float32"}})
            blobs.append(value.astype(np.float16).tobytes())
        else:
            manifest.append({"name": name, "shape": list(value.shape), "dtype": "int32"})
            blobs.append(value.astype(np.int32).tobytes())
    (folder / "w.bin").write_bytes(b"".join(blobs))
    path = folder / "model.json"
    path.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": nodes},
                                "weightsManifest": [{"paths": ["w.bin"], "weights": manifest}]}))
    return path


def _conv_same(x: np.ndarray, kernel: np.ndarray, stride: int, depthwise: bool = False) -> np.ndarray:
    """TensorFlow's SAME convolution (NHWC; kernel HWIO, depthwise H, W, C, 1): the extra padding goes last."""
    _, height, width, _ = x.shape
    kh, kw = kernel.shape[:2]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h, pad_w = max((out_h - 1) * stride + kh - height, 0), max((out_w - 1) * stride + kw - width, 0)
    padded = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((1, out_h, out_w, kernel.shape[2] if depthwise else kernel.shape[3]), np.float64)
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[0, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[0, i, j] = (np.einsum("hwc,hwc->c", patch, kernel[..., 0]) if depthwise
                            else np.einsum("hwc,hwco->o", patch, kernel))
    return out


def _resize_asymmetric(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """TensorFlow's ResizeBilinear without align_corners or half-pixel centres."""
    _, height, width, _ = x.shape
    out = np.zeros((1, *size, x.shape[3]))
    for i in range(size[0]):
        for j in range(size[1]):
            y, xx = i * height / size[0], j * width / size[1]
            y0, x0 = int(y), int(xx)
            y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
            dy, dx = y - y0, xx - x0
            out[0, i, j] = ((1 - dy) * ((1 - dx) * x[0, y0, x0] + dx * x[0, y0, x1])
                            + dy * ((1 - dx) * x[0, y1, x0] + dx * x[0, y1, x1]))
    return out


def test_a_fused_tfjs_graph_converts_to_onnx_that_computes_what_tensorflow_computes(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"k": rng.normal(size=(3, 3, 3, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32),
               "dk": rng.normal(size=(3, 3, 4, 1)).astype(np.float32), "three": np.float32(3.0).reshape(()),
               "size": np.array([10, 10], np.int32), "axis": np.array(3, np.int32), "axes": np.array([1, 2], np.int32)}
    model = convert_graph_model(_write_graph(tmp_path, weights), ["out"])
    x = rng.normal(size=(1, 10, 10, 3)).astype(np.float32)
    [got] = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})

    as16 = {k: v.astype(np.float16).astype(np.float64) if v.dtype == np.float32 else v for k, v in weights.items()}
    conv = np.maximum(_conv_same(x.astype(np.float64), as16["k"], 2) + as16["b"], 0)
    dw = _conv_same(conv, as16["dk"], 1, depthwise=True)
    hard = np.clip(dw + 3, 0, 6) * dw
    up = _resize_asymmetric(hard, (10, 10))
    mean = np.concatenate([up, up], axis=3).mean(axis=(1, 2), keepdims=True)
    expected = 1 / (1 + np.exp(-mean))
    assert got.shape == (1, 1, 1, 8)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_an_op_without_conversion_is_named(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"modelTopology": {"node": [
        {"name": "x", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": [{"size": "1"}]}}}},
        {"name": "y", "op": "TopKV2", "input": ["x"]}]}, "weightsManifest": []}))
    with pytest.raises(ValueError, match="op TopKV2 of node y has no ONNX conversion"):
        convert_graph_model(path, ["y"])


def test_the_converted_centernet_has_the_graphs_outputs():
    session = onnxruntime.InferenceSession(str(FOLDER / "centernet-coco.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("tower_0/images", [1, 512, 512, 3])]
    heatmap, sides = session.run(["tower_0/keypoints", "tower_0/wh"],
                                 {"tower_0/images": np.zeros((1, 512, 512, 3), np.float32)})
    assert heatmap.shape == (1, 128, 128, 80) and sides.shape == (1, 128, 128, 4)
    assert 0 <= heatmap.min() and heatmap.max() < 0.3  # a blank image: nothing confident
