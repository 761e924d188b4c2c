"""The pinned requirements of deskgen (pyproject.toml, next to this script's working directory) and of the
extras named on the command line, one a line; ``deskgen[...]`` references to its own extras are expanded.

    python3 requirements.py classifier        # what the classifier image installs before its code
    python3 docker/requirements.py classifier torch    # from the repository root: every stage's packages

Standard library only (Python 3.11): it runs in the image before anything is installed.
"""

import re
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]


def requirements(extras: list[str]) -> list[str]:
    found = list(project["dependencies"])
    for extra in extras:
        for requirement in project["optional-dependencies"][extra]:
            own = re.fullmatch(rf"{project['name']}\[(.+)\]", requirement)
            found += requirements(own.group(1).split(",")) if own else [requirement]
    return list(dict.fromkeys(found))


print("\n".join(requirements(sys.argv[1:])))
