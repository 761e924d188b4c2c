#!/usr/bin/env bash
# Makes `deskgen.*` importable from the working tree through a plain path entry that Python, pyright and
# editors all follow: .venv/src/deskgen is a link to the repository root, and a .pth file puts .venv/src
# on sys.path. It replaces the import hook of setuptools' editable install (which maps deskgen.common onto
# common/ and so on), so `make lint` resolves every import. New modules are importable without a reinstall.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" dev-path
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site"/__editable__.deskgen-*.pth "$site"/__editable___deskgen_*_finder.py
mkdir -p .venv/src
ln -sfn ../.. .venv/src/deskgen
echo "$PWD/.venv/src" > "$site/deskgen-dev.pth"
.venv/bin/python -c 'import deskgen.common.topology, deskgen.services.generator' \
  || die "deskgen is not importable from $PWD/.venv/src"
