#!/usr/bin/env bash
# Optional system packages for the test suite, for CI (.ci/run) on a fresh machine. Never fails the run:
# whatever cannot be installed, the tests that need it are skipped with a message.
#  - chromium: tests/test_report.py renders the audit's HTML report in headless Chromium.
set -u
have_chromium() {
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || command -v google-chrome >/dev/null 2>&1 || command -v google-chrome-stable >/dev/null 2>&1
}
if have_chromium; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci_deps: no apt-get; the headless-browser test of the report will be skipped" >&2
  exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "ci_deps: not root and no password-less sudo; the headless-browser test will be skipped" >&2
    exit 0
  fi
fi
log="$(mktemp -t ci_deps.XXXXXX)"
echo "ci_deps: installing chromium with apt-get (log: $log) ..." >&2
if timeout 900 "${as_root[@]}" apt-get update -qq >"$log" 2>&1 \
  && timeout 900 "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >>"$log" 2>&1 \
  && have_chromium; then
  echo "ci_deps: chromium installed" >&2
else
  echo "ci_deps: could not install chromium (see $log); the headless-browser test will be skipped" >&2
fi
exit 0
