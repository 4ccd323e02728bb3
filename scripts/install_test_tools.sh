#!/usr/bin/env bash
# Debian packages some tests drive, installed only when missing: chromium + chromium-driver for the search page's
# browser test (tests/test_serve.py), tesseract-ocr for the OCR baseline's tests (tests/test_baselines.py).
# Never fails the caller: without apt-get, root or sudo, or on any install error it says so, and those tests skip
# with that reason. Nothing is ever downloaded from anywhere but Debian's packages.
set -uo pipefail
wanted=()
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || wanted+=(chromium chromium-driver)
command -v tesseract >/dev/null 2>&1 || wanted+=(tesseract-ocr)
if [ ${#wanted[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no apt-get here; tests needing ${wanted[*]} will skip" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "note: not root and no password-less sudo; tests needing ${wanted[*]} will skip" \
         "(run: sudo apt-get install ${wanted[*]})" >&2
    exit 0
  fi
fi
log="$(mktemp -t vc2l-apt.XXXXXX)"
echo "installing Debian's ${wanted[*]} for the tests (log: $log)" >&2
if $sudo apt-get update -q >"$log" 2>&1 &&
   DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${wanted[@]}" >>"$log" 2>&1; then
  exit 0
fi
echo "note: installing ${wanted[*]} failed (last lines below); the tests needing them will skip" >&2
tail -n 5 "$log" >&2
exit 0
