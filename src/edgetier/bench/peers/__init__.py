"""Stand-alone server scripts for `edgetier bench compare`, one per peer system.

Each script is run as ``PYTHON <script> --model PATH ...`` in its own process, possibly by
another interpreter (``--peer-python``), so it imports only numpy, onnxruntime and the
peer itself, never edgetier. It prints ``READY`` on stdout once it serves.
"""
