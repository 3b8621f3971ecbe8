"""The ComfyUI checkout the live adapters import (declared apart from them, so the command line can
offer `--comfyui DIR` without importing an adapter)."""

from implementations.comfyui_live.library import problem
from parity.suite.checkouts import Checkout

COMFYUI = Checkout("comfyui", "a ComfyUI checkout", problem)
