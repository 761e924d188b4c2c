"""A TF.js graph model (``model.json`` + weight shards) → an ONNX model, for the few ops a MobileNet-style
detector uses, including TF.js's fused ones that stock converters refuse (``_FusedConv2D``,
``FusedDepthwiseConv2dNative``).

Tensors stay NHWC as in TensorFlow; each convolution and resize is wrapped in a pair of transposes to
ONNX's NCHW (ONNX Runtime's transpose optimiser folds the pairs away). Only the nodes the requested
outputs depend on are converted; an op outside ``_CONVERTERS`` is a ValueError naming it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["convert_graph_model"]

_TO_NCHW, _TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def convert_graph_model(model_json: Path, outputs: list[str]) -> onnx.ModelProto:
    """The ONNX model computing ``outputs`` (TF node names, kept as the ONNX output names) from the
    graph's placeholders (float32 inputs of their TF names and shapes)."""
    graph = json.loads(Path(model_json).read_text())
    nodes = {n["name"]: n for n in graph["modelTopology"]["node"]}
    constants = _weights(graph["weightsManifest"], Path(model_json).parent)
    builder = _Builder(constants)
    for node in _needed(nodes, outputs):
        op = node["op"]
        if op == "Const":
            continue
        if op not in _CONVERTERS:
            raise ValueError(f"{model_json}: op {op} of node {node['name']} has no ONNX conversion")
        _CONVERTERS[op](builder, node, [i.split(":")[0] for i in node.get("input", []) if not i.startswith("^")])
    signature = graph.get("signature", {}).get("outputs", {})
    out = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [
        int(d["size"]) for d in signature[name]["tensorShape"]["dim"]] if name in signature else [None] * 4)
        for name in outputs]
    model = helper.make_model(helper.make_graph(builder.nodes, "tfjs", builder.inputs, out, builder.initializers),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="deskgen.common.detect.tfjs")
    onnx.checker.check_model(model)
    return model


def _weights(manifest: list[dict], folder: Path) -> dict[str, np.ndarray]:
    """Every constant of the weight shards, dequantised to its original dtype."""
    found: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join((folder / path).read_bytes() for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            stored = np.dtype((spec.get("quantization") or {}).get("dtype", spec["dtype"]))
            count = int(np.prod(spec["shape"], dtype=np.int64))
            values = np.frombuffer(data, stored, count, offset)
            offset += count * stored.itemsize
            found[spec["name"]] = values.astype(spec["dtype"]).reshape(spec["shape"])
    return found


def _needed(nodes: dict[str, dict], outputs: list[str]) -> list[dict]:
    """The nodes ``outputs`` depend on, each after its inputs."""
    order: list[dict] = []
    seen: set[str] = set()
    stack = [(name, False) for name in reversed(outputs)]
    while stack:
        name, expanded = stack.pop()
        if expanded:
            order.append(nodes[name])
            continue
        if name in seen:
            continue
        seen.add(name)
        stack.append((name, True))
        stack += [(i.split(":")[0].lstrip("^"), False) for i in reversed(nodes[name].get("input", []))]
    return order


class _Builder:
    def __init__(self, constants: dict[str, np.ndarray]):
        self.constants = constants
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._made: set[str] = set()

    def const(self, name: str, value: np.ndarray | None = None) -> str:
        """An initializer (the graph constant ``name`` unless ``value`` is given)."""
        if name not in self._made:
            self.initializers.append(numpy_helper.from_array(self.constants[name] if value is None else value, name))
            self._made.add(name)
        return name

    def add(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _attr(node: dict, key: str) -> list[int] | str | bool | None:
    value = node.get("attr", {}).get(key, {})
    if "list" in value:
        return [int(i) for i in value["list"].get("i", [])] or [base64.b64decode(s).decode()
                                                               for s in value["list"].get("s", [])]
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    return value.get("b")


def _conv(b: _Builder, node: dict, inputs: list[str]) -> None:
    """Conv2D / DepthwiseConv2dNative, optionally fused with BiasAdd and Relu/Relu6."""
    name = node["name"]
    depthwise = "Depthwise" in node["op"]
    kernel = b.constants[inputs[1]]  # HWIO; depthwise: H, W, channels, multiplier
    if depthwise:
        h, w, channels, multiplier = kernel.shape
        weights = kernel.reshape(h, w, channels * multiplier, 1).transpose(2, 3, 0, 1)
        group = channels
    else:
        weights, group = kernel.transpose(3, 2, 0, 1), 1
    strides = _attr(node, "strides")
    dilations = _attr(node, "dilations")
    padding = _attr(node, "padding")
    if padding not in ("SAME", "VALID") or _attr(node, "data_format") not in (None, "NHWC"):
        raise ValueError(f"node {name}: padding {padding} / data format {_attr(node, 'data_format')} not converted")
    fused = _attr(node, "fused_ops") or []
    conv_inputs = [b.add("Transpose", [inputs[0]], f"{name}/nchw", perm=_TO_NCHW), b.const(f"{name}/W", weights)]
    if "BiasAdd" in fused:
        conv_inputs.append(b.const(inputs[2]))
    activation = [op for op in fused if op != "BiasAdd"]
    out = b.add("Conv", conv_inputs, f"{name}/conv", group=group, strides=strides[1:3], dilations=dilations[1:3],
                auto_pad="SAME_UPPER" if padding == "SAME" else "VALID")
    for op in activation:
        out = _activation(b, op, out, f"{name}/{op}")
    b.add("Transpose", [out], name, perm=_TO_NHWC)


def _activation(b: _Builder, op: str, x: str, output: str) -> str:
    if op == "Relu":
        return b.add("Relu", [x], output)
    if op == "Relu6":
        return b.add("Clip", [x, b.const("relu6/min", np.float32(0)), b.const("relu6/max", np.float32(6))], output)
    raise ValueError(f"fused activation {op} not converted")


def _resize(b: _Builder, node: dict, inputs: list[str]) -> None:
    if _attr(node, "align_corners") or _attr(node, "half_pixel_centers"):
        raise ValueError(f"node {node['name']}: only ResizeBilinear without align_corners/half_pixel_centers")
    size = b.constants[inputs[1]].astype(np.int64)
    name = node["name"]
    nchw = b.add("Transpose", [inputs[0]], f"{name}/nchw", perm=_TO_NCHW)
    shape = b.add("Shape", [nchw], f"{name}/shape")
    batch_channels = b.add("Slice", [shape, b.const(f"{name}/start", np.array([0], np.int64)),
                                     b.const(f"{name}/end", np.array([2], np.int64))], f"{name}/nc")
    sizes = b.add("Concat", [batch_channels, b.const(f"{name}/hw", size)], f"{name}/sizes", axis=0)
    resized = b.add("Resize", [nchw, "", "", sizes], f"{name}/resize", mode="linear",
                    coordinate_transformation_mode="asymmetric")
    b.add("Transpose", [resized], name, perm=_TO_NHWC)


def _elementwise(onnx_op: str) -> Callable[[_Builder, dict, list[str]], None]:
    def convert(b: _Builder, node: dict, inputs: list[str]) -> None:
        b.add(onnx_op, [b.const(i) if i in b.constants else i for i in inputs], node["name"])
    return convert


def _mean(b: _Builder, node: dict, inputs: list[str]) -> None:
    axes = b.constants[inputs[1]].astype(np.int64).reshape(-1)
    b.add("ReduceMean", [inputs[0]], node["name"], axes=axes.tolist(), keepdims=int(bool(_attr(node, "keep_dims"))))


def _concat(b: _Builder, node: dict, inputs: list[str]) -> None:
    axis = int(b.constants[inputs[-1]])
    b.add("Concat", inputs[:-1], node["name"], axis=axis)


def _relu6(b: _Builder, node: dict, inputs: list[str]) -> None:
    _activation(b, "Relu6", inputs[0], node["name"])


def _placeholder(b: _Builder, node: dict, inputs: list[str]) -> None:
    dims = [int(d["size"]) for d in node["attr"]["shape"]["shape"]["dim"]]
    b.inputs.append(helper.make_tensor_value_info(node["name"], TensorProto.FLOAT, dims))


_CONVERTERS: dict[str, Callable[[_Builder, dict, list[str]], None]] = {
    "Placeholder": _placeholder,
    "_FusedConv2D": _conv,
    "Conv2D": _conv,
    "FusedDepthwiseConv2dNative": _conv,
    "DepthwiseConv2dNative": _conv,
    "ResizeBilinear": _resize,
    "Mean": _mean,
    "ConcatV2": _concat,
    "Mul": _elementwise("Mul"),
    "Add": _elementwise("Add"),
    "Sub": _elementwise("Sub"),
    "Relu": _elementwise("Relu"),
    "Relu6": _relu6,
    "Sigmoid": _elementwise("Sigmoid"),
    "Identity": _elementwise("Identity"),
}
