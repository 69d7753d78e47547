"""Does ``serve`` survive bad requests? ``--count`` malformed requests, cycling over every kind the service must
refuse, sent one after another to one server; each must get a 4xx answer with one JSON error, and ``/health``
must still answer 200 after them (and a good image still be predicted).

    python benchmarks/serve_malformed.py --run RUN_DIR --count 1000

Printed: per kind, the requests sent and the statuses they got; then /health and a good request after them.
"""

import argparse
import collections
import http.client
import io
import json

import numpy as np
from PIL import Image

from serve_load import Server, serve_command


def _png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _form(field: str, content: bytes, name: str = "a.png") -> tuple:
    boundary = "benchmark-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def kinds(size: int) -> dict:
    """Each malformed request: (method, path, body, headers)."""
    good = _png(np.zeros((size, size, 3)))
    wrong_field = _form("picture", good)
    return {
        "not an image": ("POST", "/predict", b"this is text, not an image", {"Content-Type": "image/png"}),
        "empty body": ("POST", "/predict", b"", {"Content-Type": "image/png"}),
        "truncated image": ("POST", "/predict", good[: len(good) // 2], {"Content-Type": "image/png"}),
        "too large (bytes)": ("POST", "/predict", b"\0" * (2 * 1024 * 1024), {"Content-Type": "image/png"}),
        "too large (pixels)": ("POST", "/predict", _png(np.zeros((2000, 1000), np.uint8)), {"Content-Type": "image/png"}),
        "wrong field": ("POST", "/predict", *wrong_field),
        "wrong content type": ("POST", "/predict", good, {"Content-Type": "text/plain"}),
        "bad top_k": ("POST", "/predict?top_k=zero", good, {"Content-Type": "image/png"}),
        "unknown route": ("GET", "/nothing-here", None, {}),
        "wrong method": ("DELETE", "/predict", None, {}),
        "malformed form": ("POST", "/predict", b"--x\r\nnot a form", {"Content-Type": "multipart/form-data; boundary=x"}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, metavar="RUN_DIR")
    parser.add_argument("--count", type=int, default=1000)
    parsed = parser.parse_args()
    from resnet_transfer.runs import Run

    size = Run(parsed.run).image_geometry[0]
    requests = kinds(size)
    statuses = {kind: collections.Counter() for kind in requests}
    bad_answers = []
    with Server(serve_command(), parsed.run, ("--runtime", "keras", "--max-upload-mb", "1", "--max-pixels",
                                              "1000000")) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        names = list(requests)
        for index in range(parsed.count):
            kind = names[index % len(names)]
            method, path, body, headers = requests[kind]
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                status, text = response.status, response.read()
            except (OSError, http.client.HTTPException) as error:  # (a server that closes after a 413 is allowed)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                statuses[kind][type(error).__name__] += 1
                continue
            statuses[kind][status] += 1
            try:
                answer = json.loads(text)
                if not (400 <= status < 500 and list(answer) == ["error"]):
                    bad_answers.append((kind, status, answer))
            except ValueError:
                bad_answers.append((kind, status, text[:80]))
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("GET", "/health")
        health = connection.getresponse()
        health_status, health_body = health.status, json.loads(health.read())
        connection.request("POST", "/predict", body=_png(np.zeros((size, size, 3))), headers={"Content-Type": "image/png"})
        good = connection.getresponse()
        good_status = good.status
        good.read()
    print("| kind | requests | statuses |")
    print("| --- | --- | --- |")
    for kind, counter in statuses.items():
        print(f"| {kind} | {sum(counter.values())} | {', '.join(f'{key}: {value}' for key, value in sorted(counter.items(), key=str))} |")
    print(f"answers that were not a 4xx with one JSON error: {len(bad_answers)} {bad_answers[:3]}")
    print(f"after them: /health {health_status} {health_body}; a good image {good_status}")


if __name__ == "__main__":
    main()
