"""A TorchServe handler over raw image bytes (as sent in a multipart form field): size and mean pixel."""

import io

from PIL import Image


def handle(data, context):
    if data is None:
        return None
    answers = []
    for row in data:
        image = Image.open(io.BytesIO(row.get("data") or row.get("body"))).convert("L")
        pixels = list(image.getdata())
        answers.append({"size": list(image.size), "mean": sum(pixels) / len(pixels), "note": row.get("note")})
    return answers
