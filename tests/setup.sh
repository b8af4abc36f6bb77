#!/bin/sh
# Test set-up: installs what the test suite needs from outside Python, from Debian's packages.
#
# Today that is one thing: headless Chromium (Debian's `chromium` package, /usr/bin/chromium),
# which the Flower browser test (tests/integration/test_flower_browser.py) drives through
# Playwright. Nothing is downloaded but Debian packages: Playwright is pointed at this
# Chromium, never at a browser build of its own.
#
# Idempotent and fast: when /usr/bin/chromium exists it does nothing. Otherwise it runs
# `apt-get update` and `apt-get install -y --no-install-recommends chromium`, as root or
# through `sudo -n`. Where it cannot (no apt-get, or neither root nor password-less sudo) it
# says so and exits 0: the browser test then skips, naming this script (and fails under CI).
# A failed install exits non-zero.
#
# First it runs tests/setup-libvirt.sh: libvirt, QEMU and the agent guest's packages for the
# libvirt provider's tests (same rules: only what is missing, Debian packages only).
set -eu

sh "$(dirname "$0")/setup-libvirt.sh"
. "$(dirname "$0")/setup-apt.sh"

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "tests/setup.sh: $CHROMIUM is installed; nothing to do"
    exit 0
fi
apt_as_root tests/setup.sh chromium "the browser test" || exit 0

echo "tests/setup.sh: installing Debian's chromium package (apt-get update; apt-get install" \
    "-y --no-install-recommends chromium) for the Flower browser test"
started=$(date +%s)
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium >/dev/null
"$CHROMIUM" --version
echo "tests/setup.sh: chromium installed in $(( $(date +%s) - started )) s"
