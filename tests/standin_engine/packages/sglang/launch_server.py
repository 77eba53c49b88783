"""Stand-in for `python3 -m sglang.launch_server` of the SGLang image."""

import os
import sys

os.execvp("python3", ["python3", "/opt/standin/server.py", "--engine", "sglang", *sys.argv[1:]])
