#!/usr/bin/env bash
# DVC and lifelines (MLFLOW=1: and MLflow) as wheels for the GPU machine's Python 3.12 (see scripts/device_repro.sh),
# in .whl/, leaving out the packages its image already holds: carrying our own numpy,
# pandas or torch there would shadow the image's builds.
#
#     bash scripts/device_wheels.sh
#
# antlr4-python3-runtime (needed by DVC's hydra-core) is published only as source: it is
# built here into a pure-Python wheel first.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
EXCLUDE=$(git rev-parse --git-path info/exclude)  # .whl/ stays out of git
mkdir -p "$(dirname "$EXCLUDE")"
grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"
rm -rf "$DEST" && mkdir -p "$DEST"
ALL=$(mktemp -d)
python3 -m pip wheel -q --no-deps -w "$ALL" antlr4-python3-runtime==4.9.3
python3 -m pip download -q --only-binary=:all: --find-links "$ALL" -d "$ALL" \
  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any \
  dvc==3.67.1 lifelines==0.30.0 $([ "${MLFLOW:-0}" = 1 ] && echo mlflow==3.17.2)
# The device image's own packages (the device tool's KINDS.md, read 2026-11-17) that DVC or
# MLflow ask for: kept out.
ON_IMAGE=" aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi
 charset-normalizer click cloudpickle colorama contourpy cycler filelock fonttools frozenlist
 fsspec grpcio h11 httpcore httpx idna jinja2 joblib kiwisolver markdown markdown-it-py
 markupsafe matplotlib mdurl msgpack multidict networkx numpy packaging pandas pathspec
 pillow pluggy prometheus-client propcache protobuf psutil pyarrow pygments pyparsing
 python-dateutil pyyaml regex requests rich scikit-learn scipy setuptools shellingham six
 sortedcontainers tabulate threadpoolctl tqdm typer typing-extensions urllib3 werkzeug
 wrapt xxhash yarl zipp "
for whl in "$ALL"/*.whl; do
  name=$(basename "$whl" | sed -E 's/-[0-9].*//' | tr 'A-Z_' 'a-z-')
  case "$ON_IMAGE" in *" $name "*) ;; *) cp "$whl" "$DEST/" ;; esac
done
rm -rf "$ALL"
echo "$(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
