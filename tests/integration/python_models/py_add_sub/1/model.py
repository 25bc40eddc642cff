"""Triton's add_sub example, plus ARGS: what initialize(args) received and how many execute calls came
before this one (a test reads it back)."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        self.args = {key: value for key, value in args.items() if key != "model_config"}
        self.args["config_name"] = self.model_config["name"]
        output0 = pb_utils.get_output_config_by_name(self.model_config, "OUTPUT0")
        self.output0_dtype = pb_utils.triton_string_to_numpy(output0["data_type"])
        # finalize() leaves a mark beside the repository, so a test can see that unloading ran it.
        self.mark = Path(args["model_repository"]).parent.parent / f"finalized-{args['model_name']}"
        self.calls = 0
        pb_utils.Logger.log_info(f"{args['model_name']} initialised")

    def execute(self, requests):
        responses = []
        self.args["calls_before"] = self.calls
        self.calls += 1
        for request in requests:
            in0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            in1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out0 = pb_utils.Tensor("OUTPUT0", (in0 + in1).astype(self.output0_dtype))
            out1 = pb_utils.Tensor("OUTPUT1", (in0 - in1).astype(np.float32))
            args = pb_utils.Tensor("ARGS", np.array([json.dumps(self.args).encode()], dtype=object))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out0, out1, args]))
        return responses

    def finalize(self):
        self.mark.write_text("finalized")
