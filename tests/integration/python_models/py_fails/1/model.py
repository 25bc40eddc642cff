"""Y = X + 1; a request with a negative X gets an error response, and X = 13 fails the whole batch."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if (x == 13).any():
                raise pb_utils.TritonModelException("13 is unlucky: the whole batch fails")
            if (x < 0).any():
                error = pb_utils.TritonError(f"X must be >= 0, got {int(x.min())}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)]))
        return responses
