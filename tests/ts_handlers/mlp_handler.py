"""A TorchServe handler as users write them: BaseHandler with preprocess and postprocess over TorchScript."""

import json

import torch
from ts.torch_handler.base_handler import BaseHandler


class MlpHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for row in data:
            payload = row.get("data") or row.get("body")
            if isinstance(payload, (bytes, bytearray)):
                payload = json.loads(payload)
            rows.append(payload["features"])
        return torch.tensor(rows, dtype=torch.float32)

    def postprocess(self, data):
        return [{"score": float(value), "batch": int(data.shape[0])} for value in data[:, 0]]

    def explain_handle(self, data_preprocess, raw_data):
        """TorchServe's /explanations: the score's gradient by each feature, per row (a saliency map)."""
        rows = data_preprocess.clone().requires_grad_(True)
        with torch.enable_grad():
            self.model(rows).sum().backward()
        return [{"saliency": gradient.tolist(), "batch": int(rows.shape[0])} for gradient in rows.grad]
