#!/usr/bin/env bash
# System packages the product uses when present: tesseract (OCR for scans, Chinese + English),
# and for the browser tests (tests/ui) Debian's chromium plus a CJK and an emoji font so that
# the Chinese screenshots show text rather than boxes. The compiled translations (.mo) are
# committed, so gettext is not needed at run time.
# Installed with apt-get when we are root; otherwise we say what is missing and go on
# (documents that need OCR then fail with a clear message).
set -u
missing=()
command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr)
if command -v tesseract >/dev/null 2>&1 && ! tesseract --list-langs 2>/dev/null | grep -q '^chi_sim$'; then
  missing+=(tesseract-ocr-chi-sim)
elif ! command -v tesseract >/dev/null 2>&1; then
  missing+=(tesseract-ocr-chi-sim)
fi
[ -x /usr/bin/chromium ] || missing+=(chromium)
if ! { command -v fc-list >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q .; }; then
  missing+=(fonts-wqy-microhei)
fi
if ! { command -v fc-list >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi emoji; }; then
  missing+=(fonts-noto-color-emoji)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  (apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null; }) \
    || echo "warning: could not install ${missing[*]}; OCR or the browser tests will be unavailable" >&2
else
  echo "note: OCR and the browser tests need ${missing[*]} (sudo apt-get install ${missing[*]}); continuing without them" >&2
fi
exit 0
