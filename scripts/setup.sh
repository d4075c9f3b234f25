#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine needs besides Rust to build and test
# voxrelay. Safe to run more than once; does nothing when everything is present.
set -euo pipefail

need=()
# Debian packages the tests need, each added only when its command is missing.
# sox: the audio codec tests compare our G.711 μ-law against files sox converted.
command -v sox >/dev/null 2>&1 || need+=(sox)
# haproxy: the multi-replica tests run three servers behind a real load balancer.
# (A machine without it skips those tests with a notice.)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
# chromium, chromium-driver: the console's tests drive a real headless browser
# through WebDriver. (A machine without them skips those tests with a notice.)
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || command -v sudo >/dev/null 2>&1; }; then
        $SUDO apt-get update -qq || true
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" \
            || echo "setup: could not install ${need[*]}; the tests that need them will skip" >&2
    else
        echo "setup: no apt-get here; install ${need[*]} yourself (their tests skip)" >&2
    fi
fi
echo "setup: ok"
