#!/usr/bin/env bash
# Runs the contract tests of src/resnet_transfer/_keras_compat.py against the newest Keras on PyPI
# (or the version given: scripts/keras_contract.sh 3.16.0), in a virtual environment of its own.
# A failure means that Keras release changed an internal a workaround relies on: update the
# workaround and _keras_compat.TESTED_KERAS together, then the pin in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KERAS_CONTRACT_VENV:-/tmp/resnet-transfer-keras-contract}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e ".[test]"
"$venv/bin/pip" install -q --upgrade "keras${1:+==$1}"
"$venv/bin/python" -c 'import keras; print("contract tests against Keras", keras.__version__)'
"$venv/bin/python" -m pytest tests/test_keras_compat.py -n 0 -q -p no:cacheprovider
