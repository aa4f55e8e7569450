"""One controller replica for fleet_scale.py, in a process of its own:

    python benchmarks/_fleet_controller.py '{"data_dir": "...", "port": 8080, ...}'

The argument is ControllerSettings as JSON (``edgetier controller`` has no flag for the
heartbeat interval the benchmark sets). SIGTERM stops it cleanly.
"""

from __future__ import annotations

import json
import logging
import sys

from edgetier.control import Controller, ControllerSettings

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    Controller(ControllerSettings.model_validate(json.loads(sys.argv[1]))).run()
