"""Detection of the process kind: a Jupyter kernel, or a plain script.

The module imports nothing heavy, so that the engine can check without importing
IPython or ipywidgets.
"""

from __future__ import annotations

import sys


def is_kernel() -> bool:
    """Return whether this code runs in an IPython kernel that a front end can reach.

    True in ipykernel's ``ZMQInteractiveShell`` (Jupyter, JupyterLab, VS Code,
    nbclient); False in a plain script and in terminal IPython.
    """
    # A kernel has imported both already; a plain script pays for no import here.
    if "IPython" not in sys.modules or "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return False
    from ipykernel.zmqshell import ZMQInteractiveShell

    return isinstance(shell, ZMQInteractiveShell) and shell.kernel is not None
