"""Test helpers: real kernels (``kernel``), JupyterLab in Chromium (``lab``), processes."""
