"""The tabular MLP as an ONNX graph, written beside its safetensors so any ONNX runtime can serve it.

The graph is spelled out with `onnx.helper` from the config and the state dict rather than traced with
`torch.onnx.export`: the network is a handful of operators (Gather, Concat, Gemm, Relu), and tracing cost
10 to 25 s per export on a 2-core host (the dynamo exporter; the TorchScript one is deprecated), which every
tune trial would pay. Writing it takes milliseconds, and the bytes depend on the weights only, so a rebuild
gives the same file. tests/builders/test_train.py checks onnxruntime's outputs against torch's.

Inputs and output are the module's: `numeric` float32 [rows, n] and `categorical` int64 [rows, k], as
`modelbuild.training.tabular.encode` makes them (config.json holds the preprocessing); `output` is the
logits [rows, classes] of a classifier, or the predictions [rows] of a regressor in the target's units.
"""

from __future__ import annotations

import json

OPSET = 17
PRODUCER = "modelbuild"


def to_onnx(config: dict, state: dict) -> bytes:
    """The serialised ONNX model of a TabularMLP with this config.json and state dict (tensors or arrays)."""
    from onnx import TensorProto, helper, numpy_helper

    def weight(name: str):
        value = state[name]
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else value
        return numpy_helper.from_array(array.astype("float32"), name)

    nodes, inits = [], []
    parts = ["numeric"]
    for i, _ in enumerate(config["categorical"]):
        inits += [numpy_helper.from_array(_int64(i), f"column_{i}"), weight(f"embeddings.{i}.weight")]
        nodes += [helper.make_node("Gather", ["categorical", f"column_{i}"], [f"index_{i}"], axis=1),  # [rows]
                  helper.make_node("Gather", [f"embeddings.{i}.weight", f"index_{i}"], [f"embedded_{i}"], axis=0)]
        parts.append(f"embedded_{i}")
    nodes.append(helper.make_node("Concat", parts, ["x_0"], axis=1))
    x = "x_0"
    for j in range(len(config["hidden"]) + 1):
        layer = 3 * j  # Linear, ReLU, Dropout per hidden layer: torch's Sequential numbering
        inits += [weight(f"layers.{layer}.weight"), weight(f"layers.{layer}.bias")]
        out = f"linear_{j}"
        nodes.append(helper.make_node("Gemm", [x, f"layers.{layer}.weight", f"layers.{layer}.bias"], [out], transB=1))
        if j < len(config["hidden"]):
            nodes.append(helper.make_node("Relu", [out], [f"relu_{j}"]))
            out = f"relu_{j}"
        x = out
    regression = config["task"] == "tabular-regression"
    if regression:  # standardised prediction -> target units, as TabularMLP.forward
        target = config["target"]
        inits += [numpy_helper.from_array(_int64([1]), "axis_1"),
                  numpy_helper.from_array(_float32(target["std"]), "target_std"),
                  numpy_helper.from_array(_float32(target["mean"]), "target_mean")]
        nodes += [helper.make_node("Squeeze", [x, "axis_1"], ["squeezed"]),
                  helper.make_node("Mul", ["squeezed", "target_std"], ["scaled"]),
                  helper.make_node("Add", ["scaled", "target_mean"], ["output"])]
    else:
        nodes.append(helper.make_node("Identity", [x], ["output"]))
    inputs = [helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["rows", len(config["numeric"])]),
              helper.make_tensor_value_info("categorical", TensorProto.INT64, ["rows", len(config["categorical"])])]
    shape = ["rows"] if regression else ["rows", config["outputs"]]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)]
    graph = helper.make_graph(nodes, config["task"], inputs, outputs, initializer=inits)
    model = helper.make_model(graph, producer_name=PRODUCER, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=8)
    helper.set_model_props(model, {"config.json": json.dumps(config, sort_keys=True)})
    from onnx import checker

    checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def _int64(values):
    import numpy as np

    return np.asarray(values, dtype=np.int64)


def _float32(value):
    import numpy as np

    return np.asarray(value, dtype=np.float32)
