#!/usr/bin/env bash
# Install a headless browser for the page's browser test (tests/serving/test_page.py): Debian's chromium
# and chromium-driver with apt (needs root or password-less sudo). selenium drives them; nothing else
# downloads a browser. Safe to run again.
#
# Never fails the caller: what could not be done is printed, and the browser test skips.
# Environment: YW_SKIP_APT=1 to not touch apt at all.
set -u
say() { echo "[setup_browser] $*"; }

have_browser() {
    command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }
}

if have_browser; then
    say "chromium + chromedriver: already installed ($(chromium --version 2>/dev/null | head -1))"
    exit 0
fi
if [ "${YW_SKIP_APT:-0}" = 1 ] || ! command -v apt-get >/dev/null; then
    say "chromium: NOT installed (no apt-get or YW_SKIP_APT=1); the browser test will be skipped"
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
        say "chromium: NOT installed (not root and no password-less sudo); install chromium chromium-driver yourself"
        exit 0
    fi
fi
log="${TMPDIR:-/tmp}/yoloworld_setup_browser.log"
say "apt-get install --no-install-recommends chromium chromium-driver (about 300 MB on disk)"
t0=$SECONDS
if $sudo apt-get update -q >"$log" 2>&1 && \
   DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver \
       >>"$log" 2>&1 && have_browser; then
    say "chromium: installed $(chromium --version 2>/dev/null | head -1) in $((SECONDS - t0)) s"
else
    say "chromium: NOT installed (apt-get failed, see $log); the browser test will be skipped"
fi
exit 0
