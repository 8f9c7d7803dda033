"""Write ``agent/policies/data/p95-rule.onnx`` and its pipeline ``p95-rule.json``: a
tiny "trained agent" (one Gemm layer, no deep-learning framework) for the ``onnx``
policy's tests and its checker. On normalised observations (``f1`` = p95 / (10 · SLO)) its three logits
are ``down = 100 (0.03 − f1)``, ``stay = 0``, ``up = 100 (f1 − 0.08)``: up above
0.8 · SLO, down below 0.3 · SLO, otherwise stay. Needs ``pip install onnx`` to rerun.

    python scripts/make_onnx_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parents[1] / "agent" / "policies" / "data"


def main() -> None:
    w = np.zeros((7, 3), dtype=np.float32)  # obs (1, 7) @ W (7, 3) + b (3,)
    w[1] = [-100.0, 0.0, 100.0]
    b = np.array([3.0, 0.0, -8.0], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["obs", "W", "b"], ["logits"])],
        "p95-rule",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 7])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="scalelab")
    model.ir_version = 8
    onnx.checker.check_model(model)
    OUT.mkdir(parents=True, exist_ok=True)
    onnx.save(model, OUT / "p95-rule.onnx")
    pipeline = {"observation": "normalized", "slo_ms": 600.0, "max_replicas": 10,
                "scale": [10.0, 6000.0, 2000.0, 2.0, 2.0, 2.0, 2.0],
                "clip_high": [10.0, 1e7, 1e7, 1e3, 1e3, 1e3, 1e3],
                "actions": {"kind": "incremental", "steps": [-1, 0, 1]}, "output": "logits"}
    (OUT / "p95-rule.json").write_text(json.dumps(pipeline, indent=1) + "\n")
    print(f"wrote {OUT / 'p95-rule.onnx'} and {OUT / 'p95-rule.json'}")


if __name__ == "__main__":
    main()
