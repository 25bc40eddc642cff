"""Build the example model repository, deterministically and offline.

    python examples/build_repository.py [OUT_DIR]     (default: examples/model_repository)

* ``fraud``        ONNX Runtime: an MLP trained on synthetic card transactions (batching on).
* ``credit_score`` TensorFlow SavedModel: a small network trained on synthetic loan applicants.
* ``resnet50``     TorchScript: the ResNet-50 architecture with seeded random weights.
* ``risk_ensemble`` a config-driven ensemble: fraud and credit_score in parallel on one request.
* ``loan_decision`` the Python pipeline ``pipelines.loan_decision``: raw application fields in,
                   approve / review / decline out.

Nothing is downloaded. A model whose files already exist is left alone (``--force`` rebuilds), so
``make install`` stays quick after the first run. The builders are importable: tests use them to
write extra versions (``build_fraud(dir, seed=...)``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

FRAUD_FEATURES = 16
CREDIT_FEATURES = 8
HERE = Path(__file__).resolve().parent

FRAUD_CONFIG = """\
name: "fraud"
backend: "onnxruntime"
max_batch_size: 64
# 16 standardised transaction features: amount, merchant risk, account age, hour, distance, ...
input [ { name: "features" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "fraud_probability" data_type: TYPE_FP32 dims: [ 1 ] } ]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_AUTO } ]
version_policy: { latest { num_versions: 1 } }
"""

CREDIT_CONFIG = """\
name: "credit_score"
platform: "tensorflow_savedmodel"
max_batch_size: 32
# 8 standardised applicant features: income, debts, history length, utilisation, ...
input [ { name: "applicant" data_type: TYPE_FP32 dims: [ 8 ] } ]
output [ { name: "credit_score" data_type: TYPE_FP32 dims: [ 1 ] } ]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_AUTO } ]
"""

RESNET_CONFIG = """\
name: "resnet50"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "image" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 1000 ] } ]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_AUTO } ]
parameters { key: "half" value: { string_value: "true" } }
"""


RISK_ENSEMBLE_CONFIG = """\
name: "risk_ensemble"
platform: "ensemble"
max_batch_size: 64
# Both risk models on one request: the steps share no tensor, so they run in parallel.
input [
  { name: "transaction" data_type: TYPE_FP32 dims: [ 16 ] },
  { name: "applicant" data_type: TYPE_FP32 dims: [ 8 ] }
]
output [
  { name: "fraud_probability" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "credit_score" data_type: TYPE_FP32 dims: [ 1 ] }
]
# Two replicas: this application parses every request's HTTP itself (the work the members' two
# endpoints would share if a client called them one by one); the members batch across both.
instance_group [ { count: 2 } ]
ensemble_scheduling {
  step [
    {
      model_name: "fraud"
      model_version: -1
      input_map { key: "features" value: "transaction" }
      output_map { key: "fraud_probability" value: "fraud_probability" }
    },
    {
      model_name: "credit_score"
      model_version: -1
      input_map { key: "applicant" value: "applicant" }
      output_map { key: "credit_score" value: "credit_score" }
    }
  ]
}
"""

LOAN_DECISION_CONFIG = """\
name: "loan_decision"
backend: "python"
max_batch_size: 64
# One tensor per raw field of an application (see pipelines/loan_decision.py).
input [
  { name: "amount" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "merchant_category" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "hour" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "account_age_days" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "distance_km" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "transactions_24h" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "annual_income" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "monthly_debt" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "credit_history_years" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "credit_utilization" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "late_payments" data_type: TYPE_FP32 dims: [ 1 ] }
]
output [
  { name: "decision" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "fraud_probability" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "credit_score" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "reasons" data_type: TYPE_STRING dims: [ 1 ] }
]
instance_group [ { count: 2 } ]  # as risk_ensemble
parameters { key: "pipeline" value: { string_value: "pipelines.loan_decision:LoanDecision" } }
"""

# Composite models: a config and an empty version folder (as Triton expects for ensembles).
COMPOSITES = {"risk_ensemble": RISK_ENSEMBLE_CONFIG, "loan_decision": LOAN_DECISION_CONFIG}


def synthetic_transactions(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised transaction features and a fraud label from a fixed nonlinear rule."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FRAUD_FEATURES)).astype(np.float32)
    risk = 1.6 * x[:, 0] + 1.2 * x[:, 1] - 0.9 * x[:, 2] + 0.8 * x[:, 3] * x[:, 4] + 0.5 * np.abs(x[:, 5])
    y = (risk + 0.3 * rng.standard_normal(rows) > 1.8).astype(np.float32)
    return x, y[:, None]


def train_fraud_weights(seed: int) -> list[np.ndarray]:
    """Train the 16-32-16-1 MLP with numpy gradient descent; returns [W1, b1, W2, b2, W3, b3]."""
    x, y = synthetic_transactions(4096, seed=1234)
    rng = np.random.default_rng(seed)
    sizes = [(FRAUD_FEATURES, 32), (32, 16), (16, 1)]
    params = []
    for fan_in, fan_out in sizes:
        params += [rng.normal(0, np.sqrt(2 / fan_in), (fan_in, fan_out)).astype(np.float32),
                   np.zeros(fan_out, np.float32)]
    lr = 0.05
    for _ in range(300):
        w1, b1, w2, b2, w3, b3 = params
        h1 = np.maximum(x @ w1 + b1, 0)
        h2 = np.maximum(h1 @ w2 + b2, 0)
        p = 1 / (1 + np.exp(-(h2 @ w3 + b3)))
        g3 = (p - y) / len(x)
        g2 = (g3 @ w3.T) * (h2 > 0)
        g1 = (g2 @ w2.T) * (h1 > 0)
        grads = [x.T @ g1, g1.sum(0), h1.T @ g2, g2.sum(0), h2.T @ g3, g3.sum(0)]
        params = [w - lr * g for w, g in zip(params, grads)]
    return [p.astype(np.float32) for p in params]


def build_fraud(version_dir: Path, seed: int = 0) -> None:
    """Write ``model.onnx`` for the fraud MLP; ``seed`` changes the weights (for new versions)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2, w3, b3 = train_fraud_weights(seed)
    inits = [numpy_helper.from_array(a, n) for a, n in
             zip((w1, b1, w2, b2, w3, b3), ("w1", "b1", "w2", "b2", "w3", "b3"))]
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["g1"]),
        helper.make_node("Relu", ["g1"], ["h1"]),
        helper.make_node("Gemm", ["h1", "w2", "b2"], ["g2"]),
        helper.make_node("Relu", ["g2"], ["h2"]),
        helper.make_node("Gemm", ["h2", "w3", "b3"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["fraud_probability"]),
    ]
    graph = helper.make_graph(
        nodes, "fraud_mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", FRAUD_FEATURES])],
        [helper.make_tensor_value_info("fraud_probability", TensorProto.FLOAT, ["batch", 1])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="infergrid")
    model.ir_version = 8
    onnx.checker.check_model(model)
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(version_dir / "model.onnx"))


def build_credit_score(version_dir: Path, seed: int = 0) -> None:
    """Train and save the credit model as ``model.savedmodel`` with a ``serving_default`` signature."""
    import tensorflow as tf

    tf.random.set_seed(seed)
    rng = np.random.default_rng(4321)
    x = rng.standard_normal((2048, CREDIT_FEATURES)).astype(np.float32)
    target = 1 / (1 + np.exp(-(1.2 * x[:, 0] - 1.5 * x[:, 1] + 0.7 * x[:, 2] - 0.4 * x[:, 3] ** 2)))
    y = target[:, None].astype(np.float32)

    init = np.random.default_rng(seed)
    w1 = tf.Variable(init.normal(0, 0.5, (CREDIT_FEATURES, 16)).astype(np.float32))
    b1 = tf.Variable(np.zeros(16, np.float32))
    w2 = tf.Variable(init.normal(0, 0.5, (16, 1)).astype(np.float32))
    b2 = tf.Variable(np.zeros(1, np.float32))
    variables = [w1, b1, w2, b2]

    def forward(batch: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(tf.nn.relu(batch @ w1 + b1) @ w2 + b2)

    optimizer = tf.keras.optimizers.SGD(learning_rate=0.5)
    for _ in range(200):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((forward(x) - y) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    module = tf.Module()
    module.variables_list = variables

    @tf.function(input_signature=[tf.TensorSpec([None, CREDIT_FEATURES], tf.float32, name="applicant")])
    def serve(applicant: tf.Tensor) -> dict:
        return {"credit_score": forward(applicant) * 850.0}

    module.serve = serve
    version_dir.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(version_dir / "model.savedmodel"), signatures={"serving_default": serve})


def build_resnet50(version_dir: Path, seed: int = 0) -> None:
    """Script a ResNet-50 with seeded random weights into ``model.pt``."""
    import torch

    sys.path.insert(0, str(HERE))
    from resnet import resnet50

    torch.manual_seed(seed)
    model = resnet50().eval()
    version_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model).save(str(version_dir / "model.pt"))


MODELS = {
    "fraud": (FRAUD_CONFIG, build_fraud, "model.onnx"),
    "credit_score": (CREDIT_CONFIG, build_credit_score, "model.savedmodel"),
    "resnet50": (RESNET_CONFIG, build_resnet50, "model.pt"),
}


def build_repository(out: Path, force: bool = False, only: tuple[str, ...] = ()) -> Path:
    """Write every example model (version 1) and its config.pbtxt under ``out``."""
    for name, (config, builder, filename) in MODELS.items():
        if only and name not in only:
            continue
        model_dir = out / name
        if force and model_dir.exists():
            shutil.rmtree(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "config.pbtxt").write_text(config)
        if not (model_dir / "1" / filename).exists():
            print(f"building {name} ...", flush=True)
            builder(model_dir / "1")
    for name, config in COMPOSITES.items():
        if only and name not in only:
            continue
        (out / name / "1").mkdir(parents=True, exist_ok=True)
        (out / name / "config.pbtxt").write_text(config)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(HERE / "model_repository"))
    parser.add_argument("--force", action="store_true", help="rebuild models that already exist")
    parser.add_argument("--only", nargs="*", default=(), help="build only these models")
    args = parser.parse_args()
    path = build_repository(Path(args.out), force=args.force, only=tuple(args.only))
    print(f"example repository ready: {path}")


if __name__ == "__main__":
    main()
