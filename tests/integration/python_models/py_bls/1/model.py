"""async execute: one BLS call to fraud and one to credit_score per request, all in parallel."""

import asyncio
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        # Which model answers the fraud half (a test points a copy of this model at a model it swaps).
        self.fraud_model = parameters.get("fraud_model", {}).get("string_value", "fraud")

    async def execute(self, requests):
        return list(await asyncio.gather(*(self.decide(request) for request in requests)))

    async def decide(self, request):
        features = pb_utils.get_input_tensor_by_name(request, "features")
        applicant = pb_utils.get_input_tensor_by_name(request, "applicant")
        fraud, credit = await asyncio.gather(
            pb_utils.InferenceRequest(model_name=self.fraud_model, requested_output_names=["fraud_probability"],
                                      inputs=[features]).async_exec(),
            pb_utils.InferenceRequest(model_name="credit_score", requested_output_names=["credit_score"],
                                      inputs=[applicant]).async_exec())
        for response in (fraud, credit):
            if response.has_error():
                return pb_utils.InferenceResponse(error=response.error())
        probability = pb_utils.get_output_tensor_by_name(fraud, "fraud_probability").as_numpy()
        score = pb_utils.get_output_tensor_by_name(credit, "credit_score").as_numpy()
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("fraud_probability", probability), pb_utils.Tensor("credit_score", score),
            pb_utils.Tensor("approved", (probability < 0.5) & (score > 0.0))])
