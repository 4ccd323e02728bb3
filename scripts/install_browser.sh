#!/usr/bin/env bash
# Debian's chromium + chromium-driver for the search page's browser test (tests/test_serve.py), installed only
# when missing. Never fails the caller: without apt-get, root or sudo, or on any install error it says so, and the
# browser test skips with that reason. No browser is ever downloaded from anywhere but Debian's packages.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no apt-get here; the browser test will skip (install chromium and chromium-driver to run it)" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "note: not root and no password-less sudo; the browser test will skip" \
         "(run: sudo apt-get install chromium chromium-driver)" >&2
    exit 0
  fi
fi
log="$(mktemp -t vc2l-apt.XXXXXX)"
echo "installing Debian's chromium and chromium-driver for the browser test (log: $log)" >&2
if $sudo apt-get update -q >"$log" 2>&1 &&
   DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium chromium-driver \
     >>"$log" 2>&1; then
  exit 0
fi
echo "note: installing chromium failed (last lines below); the browser test will skip" >&2
tail -n 5 "$log" >&2
exit 0
