#!/usr/bin/env bash
# The wheel the device machine lacks: PyAV (`av`) for its python3 3.12 on x86-64 (manylinux).
# That machine has torch, torchvision, numpy, PyYAML, tqdm and matplotlib but no PyAV and no
# internet, so the wheel is downloaded here into .whl/ (ignored by git), carried with the tree
# (the device tool's `carry: [".whl"]`, 64 MiB at most; the wheel is about 35 MB) and installed
# there into /tmp/site by the prologue in benchmarks/gpu_check.md.
#
#   bash benchmarks/gpu_wheels.sh               # the av version of .venv (the one the tests ran)
#   AV_VERSION=19.0.2 bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# pyproject.toml allows av>=12.0; take the version the CPU tests ran with
AV_VERSION=${AV_VERSION:-$(.venv/bin/python -c 'import av; print(av.__version__)' 2>/dev/null || echo 18.1.0)}
mkdir -p .whl
rm -f .whl/av-*.whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "av==$AV_VERSION"
bytes=$(du -cb .whl/*.whl | tail -n 1 | cut -f 1)
ls -l .whl
if (( bytes > 64 * 1024 * 1024 )); then
    echo "error: .whl/ holds $bytes bytes; the device tool carries at most 64 MiB" >&2
    exit 1
fi
echo "ok: .whl/ holds $((bytes / 1024 / 1024)) MiB; carry it with the device run (benchmarks/gpu_check.md)"
