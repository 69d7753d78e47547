"""``resnet-transfer serve RUN_DIR``: its arguments and its command.

``add_serve_parser`` adds the subcommand to the command line's subparsers (``arguments``);
``command_serve`` calls ``serve`` with them. Values are checked by ``serve`` (a
``ConfigError``, one line and exit status 2 from the command line); argparse only parses
their types. Nothing here imports Keras or TensorFlow.

Example:
    >>> commands = parser.add_subparsers(dest="command")
    >>> add_serve_parser(commands)
    >>> arguments = parser.parse_args(["serve", "runs/quick", "--port", "0"])
    >>> command_serve(arguments)
"""

import argparse
import importlib.util

from resnet_transfer.errors import ConfigError

__all__ = ["add_serve_parser", "command_serve"]

_RUNTIMES = ("auto", "keras", "openvino", "int8")  # (predictors.SERVE_RUNTIMES, kept here free of its imports)
# What serving needs beyond the tool's own dependencies: module -> package.
_NEEDS = {"starlette": "starlette", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def add_serve_parser(commands) -> argparse.ArgumentParser:
    """Adds "serve" to ``commands`` (an argparse subparsers object) and returns its parser."""
    parser = commands.add_parser(
        "serve", help="serve a finished run over HTTP: POST /predict with dynamic batching, and a web page",
        allow_abbrev=False)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one and prints it "
                        "(default: 8000)")
    parser.add_argument("--runtime", default="auto", choices=_RUNTIMES,
                        help="keras: the run's model; openvino: the model converted at start-up and checked against "
                        "Keras; int8: the run's export/openvino-int8; auto: the fastest of those on one batch "
                        "(default: auto)")
    parser.add_argument("--max-batch", type=int, default=16, metavar="N",
                        help="the most images in one call of the model; 1 serves one image at a time (default: 16)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                        help="how long the first image of a batch waits for more (default: 5)")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, metavar="MB",
                        help="the largest request body, in megabytes (default: 10)")
    parser.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                        help="the largest image, width x height, refused before decoding (default: 40000000)")
    parser.add_argument("--top-k", type=int, default=None, metavar="N",
                        help="classes per image when a request gives no ?top_k= (default: 3, or every class of a run "
                        "with fewer)")
    return parser


def command_serve(arguments: argparse.Namespace) -> int:
    """Runs ``serve`` with the parsed arguments until Ctrl-C or SIGTERM; returns exit status 0.

    Raises:
        ConfigError: a package that serving needs is missing, or as ``serve``.
    """
    missing = [package for module, package in _NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"serve needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                          f"installed: pip install {' '.join(missing)}")
    from resnet_transfer.serving.server import serve

    serve(arguments.run_dir, host=arguments.host, port=arguments.port, runtime=arguments.runtime,
          max_batch=arguments.max_batch, max_wait_ms=arguments.max_wait_ms, max_upload_mb=arguments.max_upload_mb,
          max_pixels=arguments.max_pixels, top_k=arguments.top_k)
    return 0
