"""Doubles X; REQUESTS says how many requests the execute call that answered it received."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            count = np.full((x.shape[0], 1), len(requests), dtype=np.int32)
            outputs = [pb_utils.Tensor("Y", x * 2), pb_utils.Tensor("REQUESTS", count)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
