#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine needs besides Rust to build and test
# voxrelay. Safe to run more than once; does nothing when everything is present.
set -euo pipefail

need=()
# Debian packages the tests need, each added only when its command is missing.
# sox: the audio codec tests compare our G.711 μ-law against files sox converted.
command -v sox >/dev/null 2>&1 || need+=(sox)

if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
echo "setup: ok"
