#!/usr/bin/env bash
# Build the cluster image with no network inside the build: wheels are fetched on the
# host first (pip's cache makes repeats cheap), then `docker build --network none`
# installs from them. Usage: deploy/docker/build.sh [IMAGE_TAG] [BASE_IMAGE]
#   IMAGE_TAG   default distributed-dqn:latest
#   BASE_IMAGE  default dqn-base:bookworm, made by `deploy/docker/engine.sh base`
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-distributed-dqn:latest}"
base="${2:-dqn-base:bookworm}"
python="${PYTHON:-.venv/bin/python}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"

t0=$SECONDS
# Same interpreter line as the image (CPython 3.11, manylinux x86_64): wheels of the
# torch this machine installs (the CPU build on these machines), the project's
# dependencies and the build backend.
mkdir -p deploy/wheels
deps="$("$python" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')"
stamp="$( (echo "$torch_spec $deps"; cat constraints.txt) | sha256sum | cut -c1-16)"
if [[ "$(cat deploy/wheels/.stamp 2>/dev/null)" != "$stamp" ]]; then
    find deploy/wheels -name '*.whl' -delete
    # shellcheck disable=SC2086
    "$python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
        -c constraints.txt -d deploy/wheels setuptools "$torch_spec" $deps 2> >(grep -v "is ignored" >&2)
    echo "$stamp" >deploy/wheels/.stamp
fi
echo "build.sh: $(ls deploy/wheels/*.whl | wc -l) wheels, $(du -sh deploy/wheels | cut -f1), $((SECONDS - t0)) s" >&2

docker build --network none -q -f deploy/Dockerfile \
    --build-arg BASE_IMAGE="$base" --build-arg TORCH_SPEC="$torch_spec" -t "$tag" . >/dev/null
echo "build.sh: built $tag on $base in $((SECONDS - t0)) s" >&2
