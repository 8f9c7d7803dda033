"""``onnx``: a trained agent exported to ONNX, run with ``onnxruntime`` (no deep-learning
framework at run time; stable-baselines3, CleanRL and RLlib policies export to it).

Beside the model, a pipeline file (``MODEL.json`` by default, written by
:meth:`scalelab.experiments.env.SandboxScalingEnv.observation_pipeline`) says how the agent saw
the world when it was trained: ``observation`` (``raw`` or ``normalized``), the raw
clip bounds ``clip_high`` and the divisors ``scale`` of the normalised features, optional
``VecNormalize``-style statistics (``obs_mean``, ``obs_var``, ``clip_obs``, ``epsilon``),
the action set (``{"kind": "incremental", "steps": [-1, 0, 1]}`` or ``{"kind": "fixed",
"low": 1, "high": 10}``) and the model's ``output`` (``logits``: argmax of
``(1, n_actions)``; ``action``: the action index itself). The model's input is
``float32 (1, 7)``, the paper's 7 features after that pipeline.

    policies:
      - {name: onnx, label: ppo, model: ppo-staircase.onnx}   # and ppo-staircase.json beside it

Deterministic (the greedy action, probability 1). The model's SHA-256 is part of the
state, so a run resumed with another model is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from scalelab.agent.actions import ActionSet
from scalelab.agent.base import BasePolicy, Decision, MissingDependency, PolicyError
from scalelab.orchestrator import plugins
from scalelab.orchestrator.context import Context


class OnnxPolicy(BasePolicy):
    """A trained agent exported to ONNX, with the observation pipeline it was trained on."""

    name = "onnx"

    def __init__(self, model: str = "", pipeline: str | None = None, seed=None) -> None:
        if not model:
            raise PolicyError("onnx: give the model file: {name: onnx, model: agent.onnx}")
        try:
            import onnxruntime
        except ImportError:
            raise MissingDependency("onnx: needs onnxruntime: pip install onnxruntime (or the onnx extra)") from None
        path = plugins.find_file(model, "onnx model")
        pipe_path = plugins.find_file(pipeline, "onnx pipeline") if pipeline else path.with_suffix(".json")
        if not pipe_path.is_file():
            raise PolicyError(f"onnx: no pipeline file {str(pipe_path)!r} beside the model (write it with "
                              "SandboxScalingEnv.observation_pipeline)")
        try:
            self.pipeline = json.loads(pipe_path.read_text())
        except json.JSONDecodeError as exc:
            raise PolicyError(f"onnx: pipeline {str(pipe_path)!r} is not JSON: {exc}") from None
        p = self.pipeline
        acts = p.get("actions", {"kind": "incremental", "steps": [-1, 0, 1]})
        if acts.get("kind") == "fixed":
            actions = ActionSet.fixed(int(acts["low"]), int(acts["high"]))
        elif acts.get("kind") == "incremental":
            actions = ActionSet.incremental(*acts["steps"])
        else:
            raise PolicyError(f"onnx: pipeline actions {acts!r}: kind must be incremental or fixed")
        if p.get("observation") not in ("raw", "normalized") or p.get("output", "logits") not in ("logits", "action"):
            raise PolicyError(f"onnx: pipeline {str(pipe_path)!r}: observation must be raw or normalized and "
                              "output logits or action")
        super().__init__(actions, seed)
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise PolicyError(f"onnx: cannot load {str(path)!r}: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.clip_high = np.asarray(p.get("clip_high", [np.inf] * 7), dtype=np.float64)
        self.scale = np.asarray(p.get("scale", [1.0] * 7), dtype=np.float64)
        self.mean = np.asarray(p["obs_mean"], dtype=np.float64) if "obs_mean" in p else None
        self.var = np.asarray(p["obs_var"], dtype=np.float64) if "obs_var" in p else None

    def observe(self, context: Context) -> np.ndarray:
        """The model's input for ``context``: shape ``(1, 7)``, float32."""
        v = np.clip(context.vector(), 0.0, self.clip_high)
        if self.pipeline["observation"] == "normalized":
            v = np.clip(v / self.scale, 0.0, 1.0)
        if self.mean is not None:
            eps = float(self.pipeline.get("epsilon", 1e-8))
            clip = float(self.pipeline.get("clip_obs", 10.0))
            v = np.clip((v - self.mean) / np.sqrt(self.var + eps), -clip, clip)
        return v.astype(np.float32)[None, :]

    def decide(self, context: Context, info: Mapping[str, Any] | None = None) -> Decision:
        out = np.asarray(self.session.run(None, {self.input_name: self.observe(context)})[0])
        action = int(np.argmax(out[0])) if self.pipeline.get("output", "logits") == "logits" else int(out.ravel()[0])
        if not 0 <= action < len(self.actions):
            raise PolicyError(f"onnx: the model chose action {action}, outside its {len(self.actions)} actions")
        n = len(self.actions)
        return Decision(action=action, probability=1.0, probabilities=tuple(float(a == action) for a in range(n)))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "model_sha256": self.sha256}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state.get("model_sha256") not in (None, self.sha256):
            raise PolicyError("onnx: the saved state is for another model (its SHA-256 differs)")
