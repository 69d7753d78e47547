"""Serving a finished run over HTTP: ``resnet-transfer serve RUN_DIR``, or ``serve`` from Python.

- ``server``: ``serve`` (load the run, bind, run uvicorn, stop cleanly on Ctrl-C or SIGTERM);
- ``predictors``: the runtime behind it: Keras, OpenVINO (converted and checked at start-up),
  the run's INT8 export, or "auto", the fastest of them;
- ``batching``: the dynamic batcher that lets concurrent requests share one call of the model;
- ``app``: the Starlette app: routes, request checks, JSON errors;
- ``page``: the web page at ``/``;
- ``command``: the subcommand's arguments, for the command line.

Example:
    >>> from resnet_transfer.serving import serve
    >>> serve("runs/quick", port=8000)  # until Ctrl-C
"""

import importlib

# Names are imported on first use (PEP 562), as in the package's root: the command line imports
# ``serving.command`` to build its parser, which must not import Keras, TensorFlow or Starlette.
_LOCATIONS = {
    "IMAGE_FIELDS": "app",
    "MAX_IMAGES_PER_REQUEST": "app",
    "SERVE_RUNTIMES": "predictors",
    "DynamicBatcher": "batching",
    "Predictor": "predictors",
    "ServedModel": "app",
    "ServingLimits": "app",
    "add_serve_parser": "command",
    "command_serve": "command",
    "create_app": "app",
    "load_predictor": "predictors",
    "load_served_model": "server",
    "serve": "server",
}

__all__ = sorted(_LOCATIONS)


def __getattr__(name):
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'resnet_transfer.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"resnet_transfer.serving.{_LOCATIONS[name]}"), name)


def __dir__():
    return sorted(__all__)
