#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine needs besides Rust to build and test
# voxrelay. Safe to run more than once; does nothing when everything is present.
set -euo pipefail

need=()
# (Add Debian packages the tests need here, e.g. sox for audio checks.)

if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}"
fi
echo "setup: ok"
