#!/usr/bin/env bash
# Make a Docker engine, Compose and an offline base image available on a machine that
# has none (CI here: root, no engine running, no registry for images).
#   deploy/docker/engine.sh            install packages if missing, start dockerd if none answers
#   deploy/docker/engine.sh base IMAGE build IMAGE from debootstrap bookworm + python3 if missing
# Idempotent: reuses a running engine and an existing base image (the per-run cache).
set -euo pipefail

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v docker-compose >/dev/null || need_pkgs+=(docker-compose)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
if ((${#need_pkgs[@]})); then
    echo "engine.sh: installing ${need_pkgs[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    echo "engine.sh: starting dockerd (log: /var/log/dockerd-dqn.log)" >&2
    # No bridge and no iptables: this sandbox allows loopback traffic only, so the
    # cluster runs with network_mode: host (see deploy/compose.host.yml).
    nohup dockerd --storage-driver=overlay2 --iptables=false --bridge=none \
        >/var/log/dockerd-dqn.log 2>&1 &
    echo $! >/run/dockerd-dqn.pid
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -20 /var/log/dockerd-dqn.log >&2; exit 1; }
fi

if [[ "${1:-}" == base ]]; then
    image="${2:?usage: engine.sh base IMAGE}"
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "engine.sh: base image $image present (cached)" >&2
        exit 0
    fi
    root="$(mktemp -d /var/tmp/dqn-rootfs.XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    echo "engine.sh: debootstrap bookworm into $root (about 2 minutes)" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" http://deb.debian.org/debian >/var/log/debootstrap-dqn.log 2>&1 \
        || { tail -20 /var/log/debootstrap-dqn.log >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - "$image" >/dev/null
    echo "engine.sh: imported $image" >&2
fi
