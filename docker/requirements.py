"""Print the requirements of pyproject.toml (dependencies + the extras named) for pip -r.

The image installs its dependencies from this list before it copies the code, so a
code change does not reinstall them:  python docker/requirements.py safety > req.txt
"""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
lines = list(project["dependencies"])
for extra in filter(None, ",".join(sys.argv[1:]).split(",")):
    lines += project["optional-dependencies"][extra]
print("\n".join(lines))
