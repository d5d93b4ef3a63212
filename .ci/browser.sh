#!/usr/bin/env bash
# Debian's chromium for the browser test (Playwright's own browser download does not work here).
# Best effort: without it the browser test is skipped, everything else still runs.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "warning: could not install chromium; the browser test will be skipped"
fi
exit 0
