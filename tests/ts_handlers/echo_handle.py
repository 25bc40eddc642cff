"""A TorchServe module handler: ``handle(data, context)``, failing the requests whose body is ``fail``."""


def handle(data, context):
    if data is None:  # TorchServe calls it once at load with no data
        return None
    answers = []
    for index, row in enumerate(data):
        body = row.get("data") or row.get("body")
        body = body.encode() if isinstance(body, str) else body
        if body == b"fail":
            context.set_response_status(422, "no fail allowed", idx=index)
            answers.append("refused")
            continue
        context.set_response_content_type(index, "text/plain")
        answers.append(f"{len(body)} bytes, tag {context.get_request_header(index, 'x-tag')}, batch {len(data)}")
    return answers
