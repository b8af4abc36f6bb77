#!/bin/sh
# Test set-up for the libvirt provider's tests (tests/libvirt/), called by tests/setup.sh.
#
# Installs from Debian, only what is missing:
#   libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils  the daemons, virsh, QEMU
#   libvirt-dev pkg-config         to build the libvirt-python binding (the `libvirt` extra)
#   busybox-static qemu-guest-agent   for the agent guest's initramfs (tests/libvirt/guest.py)
# and fetches (`apt-get download`, into $LIBVIRT_TEST_CACHE, default /var/cache/backup-jobs-tests)
# the kernel of Debian's linux-image-amd64 for that guest. Nothing but Debian packages.
#
# The daemons are not started here: the tests start `virtlogd -d` and `libvirtd -d` themselves
# (no systemd in CI) and stop them afterwards.
#
# Idempotent: a second run does nothing. Where it cannot install (no apt-get, neither root nor
# password-less sudo) it says so and exits 0, and the libvirt tests skip naming this script.
set -eu

# gcc builds libvirt-python (an sdist) against libvirt-dev; e2fsprogs makes the agent guest's
# ext4 disk. Both are on most machines already; listed so a bare one gets them too.
PACKAGES="libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils libvirt-dev pkg-config
gcc e2fsprogs busybox-static qemu-guest-agent"
CACHE=${LIBVIRT_TEST_CACHE:-/var/cache/backup-jobs-tests}

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done
kernel_missing=1
if ls "$CACHE"/linux-image-*.deb >/dev/null 2>&1; then
    kernel_missing=0
fi
if [ -z "$missing" ] && [ "$kernel_missing" -eq 0 ]; then
    echo "tests/setup-libvirt.sh: libvirt, QEMU and the guest's packages are installed; nothing to do"
    exit 0
fi
. "$(dirname "$0")/setup-apt.sh"
apt_as_root tests/setup-libvirt.sh "${missing# }" "the libvirt tests" || exit 0

started=$(date +%s)
if [ -n "$missing" ]; then
    echo "tests/setup-libvirt.sh: installing$missing"
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # The packages' maintainer scripts try to start services; there is no init system here.
    $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null
fi
if [ "$kernel_missing" -eq 1 ]; then
    # linux-image-amd64 is a metapackage: download the versioned image it depends on.
    image=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1)
    echo "tests/setup-libvirt.sh: downloading $image (the agent guest's kernel) into $CACHE"
    $as_root mkdir -p "$CACHE"
    (cd "$CACHE" && $as_root apt-get download -qq "$image")
fi
echo "tests/setup-libvirt.sh: done in $(( $(date +%s) - started )) s"
